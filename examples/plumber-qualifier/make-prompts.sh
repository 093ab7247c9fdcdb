#!/usr/bin/env bash
# Renders this example's prompts with espeak-ng (8 kHz, mono, 16-bit WAV). The rendered files are
# committed; run this to regenerate them after editing the text.
set -euo pipefail
cd "$(dirname "$0")/audio"
say() { espeak-ng -v en-us -s 165 --stdout "$2" | sox -t wav - -r 8000 -c 1 -b 16 -e signed-integer "$1"; }
say welcome.wav       "Thanks for calling. Press 1 if you are a licensed plumber, or press 9 to be removed from our list."
say license_check.wav "Great. Press 1 if you serve the Phoenix metro area, or press 2 if you do not."
say area_check.wav    "Press 1 to speak with our assistant now, or press 2 if you work outside the area."
say not_qualified.wav "Sorry, this program is for licensed plumbers only. Goodbye."
say wrong_area.wav    "Sorry, we only work with plumbers in the Phoenix metro area. Goodbye."

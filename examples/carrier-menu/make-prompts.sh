#!/usr/bin/env bash
# Renders this example's prompts with espeak-ng (8 kHz, mono, 16-bit WAV). The rendered files are
# committed; run this to regenerate them after editing the text.
set -euo pipefail
cd "$(dirname "$0")/audio"
say() { espeak-ng -v en-us -s 170 --stdout "$2" | sox -t wav - -r 8000 -c 1 -b 16 -e signed-integer "$1"; }
say main_menu.wav "Welcome to Acme Telecom. For sales press 1. Billing, 2. Support, 3. Mobile desk, 4. Partners, 5. Store hours, 6. Conference, 7. To dial an extension, 8. To stop our calls, 9. Operator, 0. Star repeats this menu, hash ends the call."
say invalid.wav "Sorry, that is not an option."
say hours.wav "Our stores are open Monday to Saturday, nine to six."
say enter_extension.wav "Enter the extension, then press hash."
say opted_out.wav "You will not be called again. Goodbye."
say busy.wav "Everyone is busy right now. Returning to the main menu."
say goodbye.wav "Thank you for calling Acme Telecom. Goodbye."
say billing_menu.wav "Billing. For your balance press 1. To make a payment press 2. Press star to go back."

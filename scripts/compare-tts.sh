#!/usr/bin/env bash
# Renders the Plumber Qualifier's five prompts with every candidate TTS voice installed by
# scripts/setup.sh and prints what can be measured without listening: native sample rate,
# speaking rate, render time, level, crest factor and how much energy lies above 1 kHz (formant
# synthesis is bright and buzzy; natural speech has most of its energy below 1 kHz).
# Usage: scripts/compare-tts.sh [OUT_DIR]
set -euo pipefail
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
prompts=(
  "Thanks for calling. Press 1 if you are a licensed plumber, or press 9 to be removed from our list."
  "Great. Press 1 if you serve the Phoenix metro area, or press 2 if you do not."
  "Press 1 to speak with our assistant now, or press 2 if you work outside the area."
  "Sorry, this program is for licensed plumbers only. Goodbye."
  "Sorry, we only work with plumbers in the Phoenix metro area. Goodbye."
)
render() { # engine voice text out.wav
  case "$1" in
    festival) printf '%s\n' "$3" | text2wave -eval "(voice_$2)" -o "$4" ;;
    flite) flite -voice "$2" -t "$3" -o "$4" ;;
    espeak-ng) espeak-ng -v "$2" -w "$4" -- "$3" ;;
  esac
}
printf '%-36s %6s %6s %7s %7s %6s %6s\n' voice rate_hz wpm ms/char rms_db crest hi/lo
for candidate in festival:cmu_us_slt_arctic_hts festival:kal_diphone flite:slt flite:rms flite:awb flite:kal16 espeak-ng:en-us; do
  engine="${candidate%%:*}" voice="${candidate#*:}"
  words=0 chars=0 secs=0 render_ms=0 i=0
  : > "$out/$engine-$voice.stats"
  for text in "${prompts[@]}"; do
    f="$out/$engine-$voice-$i.wav"
    start=$(date +%s%N)
    render "$engine" "$voice" "$text" "$f" 2>/dev/null
    render_ms=$(( render_ms + ($(date +%s%N) - start) / 1000000 ))
    words=$(( words + $(wc -w <<<"$text") )) chars=$(( chars + ${#text} ))
    secs=$(awk -v a="$secs" -v b="$(soxi -D "$f")" 'BEGIN{print a+b}')
    rate=$(soxi -r "$f")
    rms=$(sox "$f" -n stats 2>&1 | awk '/RMS lev dB/{print $4}')
    pk=$(sox "$f" -n stats 2>&1 | awk '/Pk lev dB/{print $4}')
    # Energy above / below 1 kHz, both measured at the telephone rate.
    lo=$(sox "$f" -r 8000 -n lowpass 1000 stats 2>&1 | awk '/RMS lev dB/{print $4}')
    hi=$(sox "$f" -r 8000 -n highpass 1000 stats 2>&1 | awk '/RMS lev dB/{print $4}')
    echo "$rms $pk $lo $hi" >> "$out/$engine-$voice.stats"
    i=$((i + 1))
  done
  read -r rms_db crest hilo < <(awk '{r+=$1; c+=$2-$1; h+=$4-$3; n++} END{printf "%.1f %.1f %.1f\n", r/n, c/n, h/n}' "$out/$engine-$voice.stats")
  wpm=$(awk -v w="$words" -v s="$secs" 'BEGIN{printf "%.0f", w*60/s}')
  mspc=$(awk -v c="$chars" -v s="$secs" 'BEGIN{printf "%.0f", s*1000/c}')
  printf '%-36s %6s %6s %7s %7s %6s %6s   (render %d ms for 5 prompts)\n' "$candidate" "$rate" "$wpm" "$mspc" "$rms_db" "$crest" "$hilo" "$render_ms"
done

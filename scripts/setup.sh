#!/usr/bin/env bash
# Installs everything wasm-ivr needs on a fresh Debian machine, idempotently:
# the wasm32-wasip2 Rust target (guests), SIPp (end-to-end tests), the TTS engines (Festival with
# the US English HTS voice, the default; Flite, whose cmu_us_rms is the male voice; espeak-ng, the
# light fallback) and sox (prompts), tcpdump and tshark (capturing the audio a caller receives),
# graphviz (wasm-ivr graph --format svg). Safe to run again.
set -euo pipefail

log() { printf '[setup] %s\n' "$*"; }

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  log "adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

# command -> Debian package that provides it
declare -A wanted=(
  [sipp]=sip-tester
  [espeak-ng]=espeak-ng
  [festival]=festival
  [flite]=flite
  [sox]=sox
  [tcpdump]=tcpdump
  [tshark]=tshark
  [dot]=graphviz
)
missing=()
for cmd in "${!wanted[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${wanted[$cmd]}")
done
# file -> Debian package that provides it (data, not commands)
declare -A wanted_files=(
  [/usr/share/festival/voices/us/cmu_us_slt_arctic_hts]=festvox-us-slt-hts
)
for file in "${!wanted_files[@]}"; do
  [ -e "$file" ] || missing+=("${wanted_files[$file]}")
done

if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  log "installing Debian packages: ${missing[*]}"
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # The archive sometimes refuses the first attempt ("cannot access archive"); a second one works.
  for attempt in 1 2 3; do
    if $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; then break; fi
    [ "$attempt" -eq 3 ] && { log "apt-get install failed three times"; exit 1; }
    log "apt-get install failed (attempt $attempt), retrying"
    sleep 2
  done
fi
log "done"

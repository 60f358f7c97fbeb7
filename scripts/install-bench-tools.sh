#!/usr/bin/env bash
# Installs what the benchmarks compare against but the platform itself never runs:
# `vipsthumbnail` (Debian `libvips-tools`), the reference for `cargo bench --bench images`, and
# `wrk` (Debian `wrk`), the raw HTTP rate `cargo bench --bench webhooks` sets deliveries against.
# Idempotent: it only installs what is missing, then prints the versions. Installing needs root
# and apt-get (Debian/Ubuntu); elsewhere it says what to install and exits 1.
#
# Benchmarks only: CI and the container image do not need it. The video benchmarks also need
# ffmpeg (scripts/install-ffmpeg.sh).
set -euo pipefail

VIPSTHUMBNAIL="${VIPSTHUMBNAIL:-vipsthumbnail}"
WRK="${WRK:-wrk}"

have() { command -v "$1" >/dev/null 2>&1; }

missing=()
have "$VIPSTHUMBNAIL" || missing+=(libvips-tools)
have "$WRK" || missing+=(wrk)

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$EUID" -eq 0 ] && have apt-get && [ "$VIPSTHUMBNAIL" = vipsthumbnail ] && [ "$WRK" = wrk ]; then
    echo "install-bench-tools: installing the Debian packages ${missing[*]}" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  else
    echo "install-bench-tools: missing ${missing[*]}, and this script can only install Debian" >&2
    echo "install-bench-tools: packages (as root, with apt-get). Install them, or point" >&2
    echo "install-bench-tools: VIPSTHUMBNAIL / WRK at the binaries." >&2
    exit 1
  fi
fi

"$VIPSTHUMBNAIL" --vips-version
"$WRK" --version 2>&1 | head -1 || true

#!/usr/bin/env bash
# Installs what the benchmarks compare against but the platform itself never runs:
# `vipsthumbnail` (Debian `libvips-tools`), the reference for `cargo bench --bench images`.
# Idempotent: it only installs what is missing, then prints the version. Installing needs root
# and apt-get (Debian/Ubuntu); elsewhere it says what to install and exits 1.
#
# Benchmarks only: CI and the container image do not need it. The video benchmarks also need
# ffmpeg (scripts/install-ffmpeg.sh).
set -euo pipefail

VIPSTHUMBNAIL="${VIPSTHUMBNAIL:-vipsthumbnail}"

have() { command -v "$1" >/dev/null 2>&1; }

if ! have "$VIPSTHUMBNAIL"; then
  if [ "$EUID" -eq 0 ] && have apt-get && [ "$VIPSTHUMBNAIL" = vipsthumbnail ]; then
    echo "install-bench-tools: installing the Debian package 'libvips-tools'" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libvips-tools
  else
    echo "install-bench-tools: $VIPSTHUMBNAIL cannot be run, and this script can only install" >&2
    echo "install-bench-tools: the Debian package 'libvips-tools' (as root, with apt-get)." >&2
    echo "install-bench-tools: Install libvips' command-line tools, or point VIPSTHUMBNAIL at" >&2
    echo "install-bench-tools: a vipsthumbnail binary." >&2
    exit 1
  fi
fi

"$VIPSTHUMBNAIL" --vips-version

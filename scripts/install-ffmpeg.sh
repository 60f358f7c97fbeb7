#!/usr/bin/env bash
# Installs what the workers' media module needs: ffmpeg and ffprobe (with libx264 and the
# drawtext filter) and the DejaVu font the simulator draws prompts with. Idempotent: it only
# installs what is missing, then prints the versions. Installing needs root and apt-get
# (Debian/Ubuntu); elsewhere it says what to install and exits 1.
#
# Honours the same variables as the workers: FRAMEGATE_FFMPEG, FRAMEGATE_FFPROBE and
# FRAMEGATE_SIMULATOR_FONT (empty: no font file, ffmpeg asks fontconfig).
set -euo pipefail

DEFAULT_FONT=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
FFMPEG="${FRAMEGATE_FFMPEG:-ffmpeg}"
FFPROBE="${FRAMEGATE_FFPROBE:-ffprobe}"
FONT="${FRAMEGATE_SIMULATOR_FONT-$DEFAULT_FONT}"
apt_updated=0

have() { command -v "$1" >/dev/null 2>&1; }

can_apt() { [ "$EUID" -eq 0 ] && have apt-get; }

apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    apt-get update
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

if ! have "$FFMPEG" || ! have "$FFPROBE"; then
  if can_apt && [ "$FFMPEG" = ffmpeg ] && [ "$FFPROBE" = ffprobe ]; then
    echo "install-ffmpeg: installing the Debian package 'ffmpeg'" >&2
    apt_install ffmpeg
  else
    echo "install-ffmpeg: $FFMPEG or $FFPROBE cannot be run, and this script can only install" >&2
    echo "install-ffmpeg: the Debian package 'ffmpeg' (as root, with apt-get). Install 'ffmpeg'" >&2
    echo "install-ffmpeg: (ffmpeg and ffprobe built with libx264 and libfreetype), or point" >&2
    echo "install-ffmpeg: FRAMEGATE_FFMPEG and FRAMEGATE_FFPROBE at such binaries." >&2
    exit 1
  fi
fi

if [ -n "$FONT" ] && [ ! -f "$FONT" ]; then
  if can_apt && [ "$FONT" = "$DEFAULT_FONT" ]; then
    echo "install-ffmpeg: installing the Debian package 'fonts-dejavu-core'" >&2
    apt_install fonts-dejavu-core
  else
    echo "install-ffmpeg: the simulator font $FONT is missing; install 'fonts-dejavu-core'" >&2
    echo "install-ffmpeg: or set FRAMEGATE_SIMULATOR_FONT to a TrueType font file." >&2
    exit 1
  fi
fi

# The simulator renders H.264 with libx264 and draws the prompt with drawtext (libfreetype);
# a build without either would only fail at the first render. The lists are captured first:
# `ffmpeg ... | grep -q` trips pipefail when grep exits early and ffmpeg gets SIGPIPE.
encoders="$("$FFMPEG" -hide_banner -encoders 2>/dev/null || true)"
filters="$("$FFMPEG" -hide_banner -filters 2>/dev/null || true)"
if ! grep -q libx264 <<<"$encoders"; then
  echo "install-ffmpeg: $FFMPEG has no libx264 encoder; install a build with it" >&2
  exit 1
fi
if ! grep -q drawtext <<<"$filters"; then
  echo "install-ffmpeg: $FFMPEG has no drawtext filter (libfreetype); install a build with it" >&2
  exit 1
fi

version="$("$FFMPEG" -hide_banner -version)"
echo "${version%%$'\n'*}"
version="$("$FFPROBE" -hide_banner -version)"
echo "${version%%$'\n'*}"
echo "font: ${FONT:-(fontconfig)}"

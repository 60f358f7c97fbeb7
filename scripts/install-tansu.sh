#!/usr/bin/env bash
# Installs tansu, an Apache-Kafka-protocol broker written in Rust, for the Kafka tests and for
# local runs: `cargo install tansu --locked --version 0.6.0 --features dynostore` into
# ${FRAMEGATE_TOOLS_DIR:-$HOME/.cache/framegate}/tansu, once. Building it takes ten minutes or
# more on two cores; an installed binary of the right version is reused. Prints its path.
set -euo pipefail

TOOLS_DIR="${FRAMEGATE_TOOLS_DIR:-$HOME/.cache/framegate}"
VERSION=0.6.0
ROOT="$TOOLS_DIR/tansu"
BIN="$ROOT/bin/tansu"

say() { echo "install-tansu: $*" >&2; }

if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q " $VERSION"; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$TOOLS_DIR"
say "building tansu $VERSION with cargo (once; ten minutes or more)"
# Its own target directory: nothing of it lands in the project's target/ or in ~/.cargo/bin.
cargo install tansu --locked --version "$VERSION" --features dynostore \
  --root "$ROOT" --target-dir "$TOOLS_DIR/tansu-build" >&2
# The build directory is large and only needed again for another version.
rm -rf "$TOOLS_DIR/tansu-build"
echo "$BIN"

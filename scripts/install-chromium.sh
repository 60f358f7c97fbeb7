#!/usr/bin/env bash
# Installs the headless browser the console's end-to-end test drives (tests/it/console.rs):
# Debian's `chromium` and its WebDriver, `chromium-driver`. Idempotent and quick when both
# are present: it only installs what is missing, then prints the versions. Installing needs
# root and apt-get (Debian/Ubuntu); elsewhere it says what to install and exits 1.
#
# Honours the variables the test reads: FRAMEGATE_TEST_CHROMIUM and
# FRAMEGATE_TEST_CHROMEDRIVER (paths to other builds; then nothing is installed).
set -euo pipefail

CHROMIUM="${FRAMEGATE_TEST_CHROMIUM:-chromium}"
DRIVER="${FRAMEGATE_TEST_CHROMEDRIVER:-chromedriver}"

have() { command -v "$1" >/dev/null 2>&1; }

can_apt() { [ "$EUID" -eq 0 ] && have apt-get; }

if ! have "$CHROMIUM" || ! have "$DRIVER"; then
  if can_apt && [ "$CHROMIUM" = chromium ] && [ "$DRIVER" = chromedriver ]; then
    echo "install-chromium: installing the Debian packages 'chromium' and 'chromium-driver'" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      chromium chromium-driver fonts-dejavu-core
  else
    echo "install-chromium: $CHROMIUM or $DRIVER cannot be run, and this script can only" >&2
    echo "install-chromium: install the Debian packages 'chromium' and 'chromium-driver'" >&2
    echo "install-chromium: (as root, with apt-get). Install them, or point" >&2
    echo "install-chromium: FRAMEGATE_TEST_CHROMIUM and FRAMEGATE_TEST_CHROMEDRIVER at a" >&2
    echo "install-chromium: Chromium and a matching ChromeDriver." >&2
    exit 1
  fi
fi

"$CHROMIUM" --version
"$DRIVER" --version

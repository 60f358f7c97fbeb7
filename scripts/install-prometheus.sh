#!/usr/bin/env bash
# Installs what the observability tests need: `promtool` (checks our /metrics exposition, the
# alert rules and the scrape config) and `prometheus` (a real server scraping `framegate dev`),
# both from the Debian package 'prometheus'. Idempotent: with both on PATH (or
# FRAMEGATE_TEST_PROMTOOL / FRAMEGATE_TEST_PROMETHEUS pointing at them) it only prints their
# versions. Installing needs root and apt-get (Debian/Ubuntu); elsewhere it says what to
# install and exits 1.
#
# The package's own service is not wanted here: the tests start their servers themselves on
# free ports. Where no init system runs (containers, CI), the package starts nothing; where
# one does, the service it enables is stopped and disabled again.
set -euo pipefail

PROMTOOL="${FRAMEGATE_TEST_PROMTOOL:-promtool}"
PROMETHEUS="${FRAMEGATE_TEST_PROMETHEUS:-prometheus}"

have() { command -v "$1" >/dev/null 2>&1; }

if ! have "$PROMTOOL" || ! have "$PROMETHEUS"; then
  if [ "$EUID" -eq 0 ] && have apt-get && [ "$PROMTOOL" = promtool ] && [ "$PROMETHEUS" = prometheus ]; then
    echo "install-prometheus: installing the Debian package 'prometheus'" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus
    if have systemctl && [ -d /run/systemd/system ]; then
      systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
  else
    echo "install-prometheus: $PROMTOOL or $PROMETHEUS cannot be run, and this script can only" >&2
    echo "install-prometheus: install the Debian package 'prometheus' (as root, with apt-get)." >&2
    echo "install-prometheus: Install Prometheus 2.x, or point FRAMEGATE_TEST_PROMTOOL and" >&2
    echo "install-prometheus: FRAMEGATE_TEST_PROMETHEUS at its promtool and prometheus." >&2
    exit 1
  fi
fi

version="$("$PROMTOOL" --version 2>&1)"
echo "${version%%$'\n'*}"
version="$("$PROMETHEUS" --version 2>&1)"
echo "${version%%$'\n'*}"

#!/usr/bin/env bash
# Makes the local services the test suite needs available, idempotently: anything already
# listening is left alone, anything missing is installed into a tools directory outside the
# repository (${FRAMEGATE_TOOLS_DIR:-$HOME/.cache/framegate}) and started in the background.
#
# - moto_server on 127.0.0.1:9000: an S3-compatible server for the S3 blob store tests
#   (override the port with FRAMEGATE_MOTO_PORT).
#
# Safe to run any number of times; prints what it did.
set -euo pipefail

TOOLS_DIR="${FRAMEGATE_TOOLS_DIR:-$HOME/.cache/framegate}"
MOTO_HOST=127.0.0.1
MOTO_PORT="${FRAMEGATE_MOTO_PORT:-9000}"

say() { echo "services: $*" >&2; }

# True when something accepts TCP connections on host:port.
listening() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# True when an HTTP server answers on the URL (any status code counts as an answer).
http_answers() {
  if command -v curl >/dev/null 2>&1; then
    curl -s -o /dev/null --max-time 2 "$1"
  else
    python3 - "$1" <<'PY'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass  # an HTTP error status is still an answer
PY
  fi
}

start_moto() {
  local url="http://$MOTO_HOST:$MOTO_PORT/"
  if listening "$MOTO_HOST" "$MOTO_PORT"; then
    say "S3 (moto) already listening on $MOTO_HOST:$MOTO_PORT; nothing to do"
    return 0
  fi

  local venv="$TOOLS_DIR/moto-venv"
  local log="$TOOLS_DIR/moto-$MOTO_PORT.log"
  mkdir -p "$TOOLS_DIR"

  if [ ! -x "$venv/bin/python" ]; then
    say "creating Python virtualenv at $venv"
    if ! python3 -m venv "$venv"; then
      # Debian's system python3 ships venv/ensurepip separately.
      rm -rf "$venv"
      if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        say "python3 -m venv failed; installing python3-venv with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
      else
        say "python3 -m venv failed (install the python3-venv package)"
        return 1
      fi
    fi
  fi

  if [ ! -x "$venv/bin/moto_server" ]; then
    say "installing moto[server] into $venv (from PyPI)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'moto[server]'
  fi

  say "starting moto_server on $MOTO_HOST:$MOTO_PORT (log: $log)"
  # Its own session (where setsid exists), so it outlives this script and the job that ran it.
  local detach=()
  command -v setsid >/dev/null 2>&1 && detach=(setsid)
  nohup "${detach[@]}" "$venv/bin/moto_server" -H "$MOTO_HOST" -p "$MOTO_PORT" \
    >>"$log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$TOOLS_DIR/moto-$MOTO_PORT.pid"

  for _ in $(seq 1 60); do
    if http_answers "$url"; then
      say "moto_server is up (pid $pid)"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      say "moto_server exited during start-up; last lines of $log:"
      tail -n 20 "$log" >&2 || true
      return 1
    fi
    sleep 0.5
  done
  say "moto_server did not answer on $url within 30 s; see $log"
  return 1
}

start_moto

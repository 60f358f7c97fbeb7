#!/usr/bin/env bash
# Makes the local services the test suite needs available, idempotently: anything already
# listening is left alone, anything missing is installed into a tools directory outside the
# repository (${FRAMEGATE_TOOLS_DIR:-$HOME/.cache/framegate}) and started in the background.
#
# - moto_server on 127.0.0.1:9000: an S3-compatible server for the S3 blob store tests
#   (override the port with FRAMEGATE_MOTO_PORT).
# - tansu on 127.0.0.1:9092: an Apache-Kafka-protocol broker (in-memory storage) for the relay
#   and consumer-group tests (scripts/install-tansu.sh builds it once; FRAMEGATE_KAFKA_PORT).
# - kafka-python in a venv: an independent Kafka client the tests read the topics with.
# - official client libraries (standardwebhooks, stripe, openai; jsonschema) in a venv: the
#   tests check our wire formats with them; selenium in the same venv drives the console's
#   browser test.
#
# Safe to run any number of times; prints what it did.
set -euo pipefail

TOOLS_DIR="${FRAMEGATE_TOOLS_DIR:-$HOME/.cache/framegate}"
MOTO_HOST=127.0.0.1
MOTO_PORT="${FRAMEGATE_MOTO_PORT:-9000}"
KAFKA_PORT="${FRAMEGATE_KAFKA_PORT:-9092}"

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

# A virtualenv at $1 (Debian's python3 may need python3-venv first).
make_venv() {
  local venv="$1"
  [ -x "$venv/bin/python" ] && return 0
  say "creating Python virtualenv at $venv"
  if ! python3 -m venv "$venv"; then
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
}

start_tansu() {
  if listening 127.0.0.1 "$KAFKA_PORT"; then
    say "Kafka (tansu) already listening on 127.0.0.1:$KAFKA_PORT; nothing to do"
    return 0
  fi
  local bin log="$TOOLS_DIR/tansu-$KAFKA_PORT.log"
  bin="$(dirname "$0")/install-tansu.sh"
  bin="$("$bin")"
  say "starting tansu on 127.0.0.1:$KAFKA_PORT, in-memory storage (log: $log)"
  local detach=()
  command -v setsid >/dev/null 2>&1 && detach=(setsid)
  nohup "${detach[@]}" "$bin" broker \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine memory://tansu/ >>"$log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$TOOLS_DIR/tansu-$KAFKA_PORT.pid"
  for _ in $(seq 1 60); do
    if listening 127.0.0.1 "$KAFKA_PORT"; then
      say "tansu is up (pid $pid)"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      say "tansu exited during start-up; last lines of $log:"
      tail -n 20 "$log" >&2 || true
      return 1
    fi
    sleep 0.5
  done
  say "tansu did not listen on 127.0.0.1:$KAFKA_PORT within 30 s; see $log"
  return 1
}

install_kafka_python() {
  local venv="$TOOLS_DIR/kafka-venv"
  make_venv "$venv"
  if ! "$venv/bin/python" -c 'import kafka' 2>/dev/null; then
    say "installing kafka-python into $venv (from PyPI)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'kafka-python>=2.0.2'
  fi
}

# The official client libraries of the wire formats we claim to speak, pinned: the tests
# check our output with them rather than with code of ours.
install_client_libraries() {
  local venv="$TOOLS_DIR/clients-venv"
  make_venv "$venv"
  if ! "$venv/bin/python" -c 'import standardwebhooks' 2>/dev/null; then
    say "installing standardwebhooks into $venv (from PyPI)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'standardwebhooks==1.0.0'
  fi
  # Stripe's webhook signatures (api/tests/it/billing_signature.rs).
  if ! "$venv/bin/python" -c 'import stripe, sys; sys.exit(stripe.VERSION != "16.1.0")' 2>/dev/null; then
    say "installing stripe into $venv (from PyPI)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'stripe==16.1.0'
  fi
  # The OpenAI-compatible Videos API (api/tests/it/openai_sdk.rs) is driven by the official
  # SDK, its responses checked against docs/specs/openai-videos.openapi.json with jsonschema.
  if ! "$venv/bin/python" -c 'import openai, sys; sys.exit(openai.__version__ != "3.63.0")' 2>/dev/null; then
    say "installing openai into $venv (from PyPI)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'openai==3.63.0'
  fi
  if ! "$venv/bin/python" -c 'import jsonschema, sys; from importlib.metadata import version; sys.exit(version("jsonschema") != "4.26.0")' 2>/dev/null; then
    say "installing jsonschema into $venv (from PyPI)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'jsonschema==4.26.0'
  fi
  # The browser end-to-end test of the web console (tests/it/console.rs) drives Debian's
  # chromium (scripts/install-chromium.sh) through its WebDriver with selenium.
  if ! "$venv/bin/python" -c 'import selenium, sys; sys.exit(selenium.__version__ != "4.51.0")' 2>/dev/null; then
    say "installing selenium into $venv (from PyPI)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'selenium==4.51.0'
  fi
}

start_moto
start_tansu
install_kafka_python
install_client_libraries

#!/usr/bin/env bash
# The one test command: makes sure the services the suite needs are up, then runs every test.
# Each test creates (and drops) its own database on the Postgres server at DATABASE_URL.
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

postgres_ready() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -d "$DATABASE_URL"
  else
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
  fi
}

if ! postgres_ready; then
  echo "test: Postgres is not accepting connections; trying to start the local cluster" >&2
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    for version in $(ls /etc/postgresql 2>/dev/null); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
  fi
  for _ in $(seq 1 30); do postgres_ready && break; sleep 1; done
  postgres_ready || { echo "test: no Postgres at $DATABASE_URL (set DATABASE_URL)" >&2; exit 1; }
fi

# ffmpeg/ffprobe for the media tests; the S3-compatible server (moto) for blob storage; the
# Kafka-protocol broker (tansu) and an independent Kafka client (kafka-python) for the relay.
./scripts/install-ffmpeg.sh
# promtool and prometheus for the observability tests (exposition, rules, a real scrape).
./scripts/install-prometheus.sh
# Debian's chromium and chromium-driver for the web console's browser test.
./scripts/install-chromium.sh
./scripts/services.sh
TOOLS_DIR="${FRAMEGATE_TOOLS_DIR:-$HOME/.cache/framegate}"
export FRAMEGATE_TEST_S3_ENDPOINT="${FRAMEGATE_TEST_S3_ENDPOINT:-http://127.0.0.1:9000}"
export FRAMEGATE_TEST_KAFKA_BROKERS="${FRAMEGATE_TEST_KAFKA_BROKERS:-127.0.0.1:${FRAMEGATE_KAFKA_PORT:-9092}}"
export FRAMEGATE_TEST_KAFKA_PYTHON="${FRAMEGATE_TEST_KAFKA_PYTHON:-$TOOLS_DIR/kafka-venv/bin/python}"
export FRAMEGATE_TEST_CLIENTS_PYTHON="${FRAMEGATE_TEST_CLIENTS_PYTHON:-$TOOLS_DIR/clients-venv/bin/python}"
# The broker-outage test starts (and stops) a broker of its own.
FRAMEGATE_TEST_TANSU="${FRAMEGATE_TEST_TANSU:-$(./scripts/install-tansu.sh)}"
export FRAMEGATE_TEST_TANSU

if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --lib --bins --tests --no-fail-fast "$@"
else
  cargo test --workspace --lib --bins --tests --no-fail-fast "$@"
fi

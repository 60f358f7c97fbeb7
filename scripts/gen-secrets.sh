#!/usr/bin/env bash
# Writes a fresh .env for docker-compose.yml: every secret the stack needs, random from
# /dev/urandom (36 bytes each, written as 48 URL-safe base64 characters, so they also fit in
# DATABASE_URL), mode 0600. Refuses to overwrite an existing file unless --force: the
# database password is set when its volume is first created and the JWT secret signs live
# sessions, so replacing them is a rotation (docs/operations.md), not a re-run.
#
#   scripts/gen-secrets.sh [--force] [--output PATH]     (default: .env beside docker-compose.yml)
set -euo pipefail

force=false
output="$(cd "$(dirname "$0")/.." && pwd)/.env"
while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=true ;;
    --output) shift; output="${1:?--output needs a path}" ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gen-secrets: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ -e "$output" ] && [ "$force" != true ]; then
  echo "gen-secrets: $output exists; not overwriting it (--force replaces every secret in it: see docs/operations.md on rotation)" >&2
  exit 1
fi

secret() {
  # 36 random bytes -> 48 characters of A-Z a-z 0-9 - _ (no padding, nothing to escape).
  head -c 36 /dev/urandom | base64 | tr -d '\n' | tr '+/' '-_'
}

umask 077
tmp="$(mktemp "$(dirname "$output")/.env.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
cat >"$tmp" <<EOF
# Secrets of the Framegate compose stack, written by scripts/gen-secrets.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ).
# Keep this file private (mode 0600) and out of version control (.gitignore lists it).
# Rotating a secret: docs/operations.md.

# The framegate role's Postgres password (postgres service and every DATABASE_URL).
POSTGRES_PASSWORD=$(secret)
# HS256 key of access tokens; also seals stored idempotent responses.
FRAMEGATE_JWT_SECRET=$(secret)
# HMAC key of filesystem blob download links.
FRAMEGATE_BLOB_SIGNING_KEY=$(secret)
# Personal data in events (docs/adr/0043-crypto-shredding.md): the master keys that wrap
# every user's data key (version:base64 of 32 bytes, current first; rotation adds one in
# front and runs "framegate keys rotate"), and the key of the email lookup hash (never
# rotated: it would orphan every email claim). Losing either loses the personal data.
FRAMEGATE_MASTER_KEYS=1:$(head -c 32 /dev/urandom | base64 | tr -d '\n')
FRAMEGATE_EMAIL_HASH_KEY=$(head -c 32 /dev/urandom | base64 | tr -d '\n')
# Grafana's admin password (the dashboards in deploy/grafana).
GRAFANA_ADMIN_PASSWORD=$(secret)

# Optional, not secret: the API's external base URL (links in emails and downloads).
# FRAMEGATE_PUBLIC_URL=https://framegate.example.com
EOF
chmod 600 "$tmp"
mv "$tmp" "$output"
trap - EXIT
echo "gen-secrets: wrote $output"

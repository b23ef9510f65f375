#!/usr/bin/env bash
# Print a DSN of a reachable PostgreSQL server for the tests, starting or installing one if
# needed. Order: $INDEXER_TEST_DSN; the local trust-auth server on 127.0.0.1:5432; a stopped
# local cluster (started); Debian's postgresql package (installed, started, password set).
# Diagnostics go to stderr; only the DSN goes to stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$here/.venv/bin/python}"
LOCAL_PASSWORD_DSN="postgresql://postgres:postgres@127.0.0.1:5432/postgres"

works() {
  [ -n "$1" ] || return 1
  "$PY" - "$1" <<'PYEOF' >/dev/null 2>&1
import sys, psycopg
with psycopg.connect(sys.argv[1], connect_timeout=3) as conn:
    conn.execute("SELECT 1")
PYEOF
}

first_working() {
  for dsn in "${INDEXER_TEST_DSN:-}" \
             "postgresql://postgres@127.0.0.1:5432/test" \
             "postgresql://postgres@127.0.0.1:5432/postgres" \
             "$LOCAL_PASSWORD_DSN"; do
    if works "$dsn"; then echo "$dsn"; return 0; fi
  done
  return 1
}

start_clusters() {
  command -v pg_ctlcluster >/dev/null 2>&1 || return 0
  for version in $(ls /etc/postgresql 2>/dev/null); do
    for cluster in $(ls "/etc/postgresql/$version" 2>/dev/null); do
      echo "ensure-postgres: starting cluster $version/$cluster" >&2
      pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start >&2 2>&1 || true
    done
  done
  for _ in $(seq 1 30); do first_working >/dev/null && return 0; sleep 1; done
}

if first_working; then exit 0; fi
start_clusters
if first_working; then exit 0; fi

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "ensure-postgres: no PostgreSQL reachable; set INDEXER_TEST_DSN or run as root to install one" >&2
    exit 1
  fi
  echo "ensure-postgres: installing PostgreSQL from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q postgresql >&2
  start_clusters
fi
# A fresh Debian cluster asks for a password on TCP: give the postgres role one.
if command -v runuser >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  runuser -u postgres -- psql -q -c "ALTER USER postgres PASSWORD 'postgres'" >&2 || true
fi
if first_working; then exit 0; fi
echo "ensure-postgres: could not reach or start PostgreSQL" >&2
exit 1

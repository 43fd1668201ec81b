#!/usr/bin/env bash
# Revocation propagation between two replicas on PostgreSQL: see bench/propagation.py.
# Usage: bench/propagation.sh   (PATGATE_BIN=… to skip the build; PATGATE_BENCH_TOKENS=300)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATGATE_BENCH_POSTGRES_URL="${PATGATE_BENCH_POSTGRES_URL:-${PATGATE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}}"
if [[ -z "${PATGATE_BIN:-}" ]]; then
  cargo build --release -p patgate --quiet
  export PATGATE_BIN="$PWD/target/release/patgate"
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && [[ -d /etc/postgresql ]]; then
  echo "== starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
exec timeout --kill-after=10 150 python3 bench/propagation.py

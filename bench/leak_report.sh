#!/usr/bin/env bash
# The leak-report endpoint under abuse, on PostgreSQL: see bench/leak_report.py.
# Usage: bench/leak_report.sh   (PATGATE_BIN=… to skip the build)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATGATE_BENCH_POSTGRES_URL="${PATGATE_BENCH_POSTGRES_URL:-${PATGATE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}}"
if [[ -z "${PATGATE_BIN:-}" ]]; then
  cargo build --release -p patgate --quiet
  export PATGATE_BIN="$PWD/target/release/patgate"
fi
exec timeout --kill-after=10 300 python3 bench/leak_report.py

#!/usr/bin/env bash
# Same-run A/B of two builds of patgate-server's `http_server` bench (the 1M-token world) on
# a VM whose speed drifts from minute to minute.
#
# Both servers are loaded at once, each pinned to core 0 (the idle one sleeps); wrk, on
# core 1, then alternates short runs between them: per cycle, for A then B, healthz and each
# forward-auth mode. Each forward-auth run is divided by the healthz run of the same server
# just before it, and the two servers' runs of a cycle are seconds apart, so the VM's drift
# hits both alike. The summary gives, per server and mode, the median of those ratios, and
# per mode the median over the cycles of B's requests/s over A's.
#
# Usage: bench/forward_auth_ab.sh BIN_A BIN_B
#   BIN_*: `cargo bench -p patgate-server --bench http_server --no-run` executables (build
#   each commit and copy the executable aside: both builds have the same file name).
#   CYCLES=12  DURATION=3s  CONNECTIONS=32  MODES="allowed mixed"  (allowed, mixed, one:
#   one allowed request repeated, headers: healthz sent forward auth's request headers)
#   PATGATE_BENCH_SCALE=1  THP_ATTEMPTS=12  START_TIMEOUT=600
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/http_server_bin.sh
if [[ $# -ne 2 || ! -x "$1" || ! -x "$2" ]]; then
  echo "usage: bench/forward_auth_ab.sh BIN_A BIN_B (two http_server bench executables)" >&2
  exit 2
fi
CYCLES="${CYCLES:-12}"
DURATION="${DURATION:-3s}"
CONNECTIONS="${CONNECTIONS:-32}"
MODES="${MODES:-allowed mixed}"
for mode in $MODES; do
  case "$mode" in
    allowed | mixed | one | headers) ;;
    *) echo "MODES: unknown mode $mode (allowed, mixed, one, headers)" >&2; exit 2 ;;
  esac
done
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

work="$(mktemp -d -t patgate-forward-auth-ab-XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME BIN: loads the world, retrying until glibc puts it on huge pages (see
# bench/forward_auth.sh; the last attempt's server is kept either way), and prints the address.
start() {
  local name="$1" bin="$2" dir="$work/$1" attempt pid huge=0 attempts="${THP_ATTEMPTS:-12}"
  for attempt in $(seq 1 "$attempts"); do
    rm -rf "$dir"
    mkdir -p "$dir/requests"
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 PATGATE_BENCH_LISTEN=127.0.0.1:0 PATGATE_BENCH_REQUESTS="$dir/requests" \
      TMPDIR="$dir" taskset -c 0 "$bin" >"$dir/server.out" 2>"$dir/server.log" &
    pid=$!
    wait_listening "$dir" "$pid" "${START_TIMEOUT:-600}" "server $name"
    huge="$(sed -n 's/.*; \([0-9.]*\) MiB on transparent huge pages.*/\1/p' "$dir/server.out")"
    if awk -v h="${huge:-0}" 'BEGIN { exit !(h > 0) }' || ((attempt == attempts)); then break; fi
    kill "$pid"
    wait "$pid" 2>/dev/null || true
  done
  pids+=("$pid")
  head -n 1 "$dir/requests/allowed.tsv" >"$dir/requests/one.tsv"
  echo "$name: $bin, $(sed -n 's/^listening on //p' "$dir/server.out"), ${huge:-0} MiB on huge pages" >&2
}

# The steal time of core 0 so far, in clock ticks (/proc/stat's eighth column).
steal_ticks() { awk '$1 == "cpu0" { print $9 }' /proc/stat; }
ticks_per_second="$(getconf CLK_TCK)"

# rate NAME MODE: "requests/s steal_percent" of one wrk run (the steal time of the servers'
# core: the share of the run the hypervisor ran something else there).
rate() {
  local dir="$work/$1" addr args out stolen started
  addr="$(sed -n 's/^listening on //p' "$dir/server.out")"
  case "$2" in
    healthz) args=("http://$addr/healthz") ;;
    headers) args=(-s bench/forward_auth.lua "http://$addr/healthz" -- "$dir/requests/allowed.tsv") ;;
    *) args=(-s bench/forward_auth.lua "http://$addr/api/v1/forward-auth" -- "$dir/requests/$2.tsv") ;;
  esac
  stolen="$(steal_ticks)"
  started="$(date +%s.%N)"
  out="$(timeout 120 taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "${args[@]}")" ||
    { echo "wrk failed: $out" >&2; exit 1; }
  awk -v t=$(($(steal_ticks) - stolen)) -v hz="$ticks_per_second" -v s="$started" -v e="$(date +%s.%N)" \
    '/^Requests\/sec:/ { printf "%s %.0f\n", $2, 100 * t / hz / (e - s) }' <<<"$out"
}

start A "$1"
start B "$2"
for name in A B; do rate "$name" healthz >/dev/null; rate "$name" allowed >/dev/null; done # warm-up
echo "commit: $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown); $CYCLES cycles of $DURATION runs," \
  "$CONNECTIONS connections; modes: $MODES"
results="$work/results"
printf '%-6s %-7s %-8s %12s %8s %6s\n' cycle server mode "requests/s" "/healthz" steal
for cycle in $(seq 1 "$CYCLES"); do
  for name in A B; do
    read -r healthz steal <<<"$(rate "$name" healthz)"
    echo "$cycle $name healthz $healthz 1" >>"$results"
    printf '%-6s %-7s %-8s %12.0f %8s %5s%%\n' "$cycle" "$name" healthz "$healthz" "" "$steal"
    for mode in $MODES; do
      read -r r steal <<<"$(rate "$name" "$mode")"
      ratio="$(awk -v r="$r" -v h="$healthz" 'BEGIN { printf "%.3f", r / h }')"
      echo "$cycle $name $mode $r $ratio" >>"$results"
      printf '%-6s %-7s %-8s %12.0f %8s %5s%%\n' "$cycle" "$name" "$mode" "$r" "$ratio" "$steal"
    done
  done
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# The paired B/A values' spread: geometric mean and the middle half (quartiles). On this VM
# single cycles range over a factor of two; a median without its spread says too little.
spread() { sort -g | awk '{ v[NR] = $1; l += log($1) } END {
  printf "geometric mean %.3f, middle half %.3f-%.3f", exp(l / NR), v[int((NR + 3) / 4)], v[int((3 * NR + 3) / 4)] }'; }
echo
echo "summary (medians over $CYCLES cycles):"
for mode in $MODES; do
  a="$(awk -v m="$mode" '$2 == "A" && $3 == m { print $5 }' "$results" | median)"
  b="$(awk -v m="$mode" '$2 == "B" && $3 == m { print $5 }' "$results" | median)"
  pairs="$(awk -v m="$mode" '$3 == m { r[$1, $2] = $4 } END { for (c = 1; (c, "A") in r; c++) print r[c, "B"] / r[c, "A"] }' "$results")"
  printf '%-8s /healthz: A %.3f  B %.3f   B/A requests/s %.3f (%s)\n' "$mode" "$a" "$b" "$(median <<<"$pairs")" \
    "$(spread <<<"$pairs")"
done
paired="$(awk '$3 == "healthz" { r[$1, $2] = $4 } END { for (c = 1; (c, "A") in r; c++) print r[c, "B"] / r[c, "A"] }' "$results" | median)"
printf '%-8s B/A requests/s %.3f (the two servers alike: near 1 unless B changed the shared path)\n' healthz "$paired"

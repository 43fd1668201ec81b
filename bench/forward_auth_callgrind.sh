#!/usr/bin/env bash
# Instructions and cache misses per request of forward auth against healthz, counted under
# callgrind: figures this shared VM's noise cannot move (wall time here moves by ±20–30 %
# between runs seconds apart; the same binary and requests give the same counts).
#
# The 1M-token world of patgate-server's `http_server` bench runs under
# `valgrind --tool=callgrind` with a cache model of this machine's core (32 KiB 8-way L1i and
# L1d, 1 MiB 16-way last level: the L2 of the AMD EPYC these VMs run on), instrumentation off.
# For each mode, counting is switched on only while wrk (one thread, 4 connections) sends
# requests, then the counts are dumped and divided by the requests wrk completed:
#   healthz   GET /healthz, as plain as bench/forward_auth.sh's baseline
#   headers   GET /healthz with forward auth's own request headers (token, X-Forwarded-*)
#   allowed   forward auth, the 4,096 allowed requests of bench/forward_auth.sh
#   one       forward auth, one allowed request repeated (everything it reads in cache)
#   mixed     forward auth, the mixed requests (about a quarter allowed)
# It prints per request: instructions (Ir), L1i misses (I1mr), L1d read and write misses
# (D1mr, D1mw), last-level read and write misses (DLmr, DLmw), and the same with the HMAC's
# SHA-256 taken out: valgrind does not run SHA-NI, so the digest runs sha2's software
# rounds under callgrind (about 7,000 instructions, against a few hundred natively).
# Then each forward-auth mode minus `headers`: what judging a request adds to serving one.
#
# Only what runs inside a connection's task is counted (`--toggle-collect` on hyper-util's
# connection future, COLLECT below): reading, routing, judging and answering a request, the
# usage note and the fold it sometimes triggers, but not the runtime's scheduler and I/O
# driver (the same for every mode) nor the work the server does per unit of time (the
# usage flush to the store, timers), which would otherwise be divided by however many
# requests a run happened to complete. COLLECT=all counts everything.
#
# Usage: bench/forward_auth_callgrind.sh
#   MODES="healthz headers allowed one"  DURATION=8s  CONNECTIONS=4
#   PATGATE_BENCH_SCALE=1 (0.05 loads in seconds instead of minutes; fewer data misses)
#   HTTP_SERVER_BIN=…  (skip the build)  START_TIMEOUT=1800  BUILD_TIMEOUT=1800
#   KEEP=DIR  (keep the callgrind files there, for callgrind_annotate)
#   COLLECT='*UpgradeableConnection*'  (a function pattern for --toggle-collect, or all)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/http_server_bin.sh
MODES="${MODES:-healthz headers allowed one}"
DURATION="${DURATION:-8s}"
CONNECTIONS="${CONNECTIONS:-4}"
SCALE="${PATGATE_BENCH_SCALE:-1}"
COLLECT="${COLLECT:-*UpgradeableConnection*}"
collect=()
[[ "$COLLECT" == all ]] || collect=("--toggle-collect=$COLLECT")
START_TIMEOUT="${START_TIMEOUT:-1800}"
BUILD_TIMEOUT="${BUILD_TIMEOUT:-1800}"
for mode in $MODES; do
  case "$mode" in
    healthz | headers | allowed | one | mixed) ;;
    *) echo "MODES: unknown mode $mode (healthz, headers, allowed, one, mixed)" >&2; exit 2 ;;
  esac
done
for tool in valgrind callgrind_control callgrind_annotate wrk; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install valgrind wrk" >&2; exit 1; }
done

work="$(mktemp -d -t patgate-forward-auth-callgrind-XXXXXX)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [[ -n "${KEEP:-}" ]]; then
    mkdir -p "$KEEP"
    cp "$work"/callgrind.* "$KEEP"/ 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

HTTP_SERVER_BIN="$(http_server_bin "$work" "$BUILD_TIMEOUT")" || exit 1

echo "== loading the world under valgrind (scale $SCALE; minutes at scale 1)" >&2
mkdir -p "$work/requests"
# TMPDIR: the bench's SQLite store, and callgrind_control's view of the running tool, under $work.
PATGATE_BENCH_SCALE="$SCALE" PATGATE_BENCH_LISTEN=127.0.0.1:0 PATGATE_BENCH_REQUESTS="$work/requests" \
  TMPDIR="$work" taskset -c 0 valgrind --tool=callgrind --instr-atstart=no --cache-sim=yes "${collect[@]}" \
  --I1=32768,8,64 --D1=32768,8,64 --LL=1048576,16,64 --callgrind-out-file="$work/callgrind.out.%p" \
  "$HTTP_SERVER_BIN" >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
wait_listening "$work" "$server_pid" "$START_TIMEOUT" "the server"
addr="$(sed -n 's/^listening on //p' "$work/server.out")"
allowed_file="$work/requests/allowed.tsv"
mixed_file="$work/requests/mixed.tsv"
head -n 1 "$allowed_file" >"$work/one.tsv"
control() { TMPDIR="$work" callgrind_control "$@" "$server_pid" >/dev/null 2>&1; }

# The SHA-256 compression functions' share of a dump, in the order of `events`.
sha_share() {
  callgrind_annotate --auto=no --threshold=100 --show=Ir,I1mr,D1mr,D1mw,DLmr,DLmw "$1" 2>/dev/null |
    sed 's/([ 0-9.]*%)//g' |
    awk '/sha2::sha256::(compress|soft)/ {
      for (i = 1; i <= 6; i++) { v = $i; gsub(",", "", v); if (v == ".") v = 0; s[i] += v }
    } END { printf "%d %d %d %d %d %d\n", s[1], s[2], s[3], s[4], s[5], s[6] }'
}

declare -A per_request without_sha
echo "patgate forward auth under callgrind: $HTTP_SERVER_BIN, scale $SCALE, wrk 1 thread, $CONNECTIONS connections, $DURATION per mode, counting in $COLLECT"
echo "commit: $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$([[ -n "$(git status --porcelain 2>/dev/null)" ]] && echo ' (with uncommitted changes)')"
sed -n 's/^\(world\|rss\): /  \1: /p' "$work/server.out"
printf '%-9s %8s | %9s %7s %7s %7s %6s %6s | %9s %7s\n' mode requests Ir I1mr D1mr D1mw DLmr DLmw "Ir-SHA" "I1mr-SHA"
for mode in $MODES; do
  case "$mode" in
    healthz) script=(); path=/healthz; requests="" ;;
    headers) script=(-s bench/forward_auth.lua); path=/healthz; requests="$allowed_file" ;;
    allowed) script=(-s bench/forward_auth.lua); path=/api/v1/forward-auth; requests="$allowed_file" ;;
    one) script=(-s bench/forward_auth.lua); path=/api/v1/forward-auth; requests="$work/one.tsv" ;;
    mixed) script=(-s bench/forward_auth.lua); path=/api/v1/forward-auth; requests="$mixed_file" ;;
  esac
  control -z
  control -i on
  out="$(PATGATE_REQUESTS="$requests" taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "${script[@]}" "http://$addr$path")"
  control -i off
  control -d "$mode"
  total="$(awk '/requests in/ {print $1}' <<<"$out")"
  [[ "$total" =~ ^[0-9]+$ && "$total" -gt 0 ]] || { echo "$mode: wrk completed no request" >&2; echo "$out" >&2; exit 1; }
  # Each dump is a new numbered file: the newest is this mode's.
  dump="$(ls -t "$work"/callgrind.out.* | head -n1)"
  # events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
  read -r ir i1 d1r d1w dlr dlw < <(awk '/^events:/ { for (i = 2; i <= NF; i++) col[$i] = i - 1 }
    /^totals:/ { print $(col["Ir"] + 1), $(col["I1mr"] + 1), $(col["D1mr"] + 1), $(col["D1mw"] + 1), $(col["DLmr"] + 1), $(col["DLmw"] + 1) }' "$dump")
  if [[ -z "$ir" || "$ir" -lt "$total" ]]; then
    echo "$mode: almost nothing counted (COLLECT=$COLLECT matches no function that serves a request?)" >&2
    exit 1
  fi
  read -r s_ir s_i1 _ < <(sha_share "$dump")
  per_request[$mode]="$(awk -v n="$total" -v a="$ir" -v b="$i1" -v c="$d1r" -v d="$d1w" -v e="$dlr" -v f="$dlw" \
    'BEGIN { printf "%.0f %.0f %.1f %.1f %.1f %.1f", a / n, b / n, c / n, d / n, e / n, f / n }')"
  without_sha[$mode]="$(awk -v n="$total" -v a="$ir" -v b="$i1" -v s="$s_ir" -v t="$s_i1" \
    'BEGIN { printf "%.0f %.0f", (a - s) / n, (b - t) / n }')"
  read -r a b c d e f <<<"${per_request[$mode]}"
  read -r g h <<<"${without_sha[$mode]}"
  printf '%-9s %8d | %9s %7s %7s %7s %6s %6s | %9s %7s\n' "$mode" "$total" "$a" "$b" "$c" "$d" "$e" "$f" "$g" "$h"
done
if [[ -n "${per_request[headers]:-}" ]]; then
  echo
  echo "what judging adds per request (forward-auth mode minus healthz with the same headers):"
  for mode in allowed one mixed; do
    [[ -n "${per_request[$mode]:-}" ]] || continue
    read -r a b c d e f <<<"${per_request[$mode]}"
    read -r a0 b0 c0 d0 e0 f0 <<<"${per_request[headers]}"
    read -r g h <<<"${without_sha[$mode]}"
    read -r g0 h0 <<<"${without_sha[headers]}"
    printf '%-9s %8s | %+9d %+7d %+7.1f %+7.1f %+6.1f %+6.1f | %+9d %+7d\n' "$mode" "" \
      $((a - a0)) $((b - b0)) "$(awk -v x="$c" -v y="$c0" 'BEGIN { print x - y }')" \
      "$(awk -v x="$d" -v y="$d0" 'BEGIN { print x - y }')" "$(awk -v x="$e" -v y="$e0" 'BEGIN { print x - y }')" \
      "$(awk -v x="$f" -v y="$f0" 'BEGIN { print x - y }')" $((g - g0)) $((h - h0))
  done
fi

#!/usr/bin/env bash
# HTTP benchmark of GET /api/v1/forward-auth on loopback against a static 200 baseline
# (/healthz) served by the same process in the same run.
#
# The server is pinned to core 0 (`taskset -c 0`, so tokio runs one worker) and wrk to
# core 1 (`taskset -c 1`, one thread). For each of
#   (a) /healthz                                       static baseline
#   (b) forward-auth, allowed requests                 200
#   (c) forward-auth, denied (demo) or mixed (1m)      401/403, or both with 200
# it reports requests/s, p99, the server's CPU use (100 % = the pinned core saturated;
# less means the client or something else bounded the run) and the steal time of the
# server's core (the share of the run during which the hypervisor ran something else on
# it: on this VM 0–25 %, the main source of its noise), then the ratio (b)/(a)
# (target >= 0.80) and the server's RSS. The runs go round-robin, ROUNDS times (default 7),
# and a closing healthz run follows the last round (in the 1m world, then three diagnoses:
# a healthz run with (b)'s request headers, to tell the request's size from the judging;
# forward auth with one allowed request repeated, to tell the index's cache misses from the
# rest; and (b)'s requests answered by the bench's /bench/forward-auth-undecided, which
# reads them as forward auth does and answers 200 without deciding, the ceiling; then, per
# request, what deciding adds and what the target leaves for it). This 2-core VM is noisy
# (±20–30 % between runs seconds apart), so each round's ratio divides its forward-auth
# rate by the mean of the healthz runs just before and just after it, and the verdict is
# the median of those bracketed ratios (seven short rounds rather than three long ones: a
# median of seven is moved less by one disturbed run); the medians of the rates are
# reported too.
#
# Two worlds (WORLD=…):
# - demo (default): `patgate serve --demo` (4 tokens); (b) and (c) repeat one request
#   with alice's token (an allowed one, a denied one).
# - 1m: the synthetic directory of the decision benchmark (1,000,000 tokens, 100,000
#   projects, 10,000 groups up to 8 deep, 100,000 users, 1,000,000 memberships), served by
#   patgate-server's `http_server` bench (crates/patgate-server/benches/http_server.rs) with
#   GLIBC_TUNABLES=glibc.malloc.hugetlb=1 as `patgate serve` runs in production. wrk replays
#   4,096 distinct requests (bench/forward_auth.lua): (b) only allowed ones, (c) the mix as
#   generated (about a quarter allowed; denials of every kind). PATGATE_BENCH_SCALE=0.05
#   shrinks the world (quick check).
#
# Usage: bench/forward_auth.sh
#   WORLD=demo|1m  DURATION=5s  CONNECTIONS=32  ROUNDS=7  SERVER_CPU=0  CLIENT_CPU=1
#   PATGATE_BIN=…  (demo) or HTTP_SERVER_BIN=…  (1m): skip the build
#   BUILD_TIMEOUT=1800  START_TIMEOUT=600  (seconds)
#   THP_ATTEMPTS=12  (1m: restarts until glibc puts the index on huge pages; see below)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/http_server_bin.sh
WORLD="${WORLD:-demo}"
DURATION="${DURATION:-5s}"
CONNECTIONS="${CONNECTIONS:-32}"
ROUNDS="${ROUNDS:-7}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
BUILD_TIMEOUT="${BUILD_TIMEOUT:-1800}"
START_TIMEOUT="${START_TIMEOUT:-600}"
case "$WORLD" in
  demo | 1m) ;;
  *) echo "WORLD must be demo or 1m, not $WORLD" >&2; exit 2 ;;
esac

if ! command -v wrk >/dev/null; then
  if [[ $(id -u) -eq 0 ]]; then
    echo "== installing wrk" >&2
    (timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq wrk) >/dev/null
  else
    echo "wrk is missing: apt-get install wrk (as root)" >&2
    exit 1
  fi
fi

# wrk's -d value in seconds (10s, 2m, 1h; a bare number is seconds).
duration_seconds() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
    if (u == "m") n *= 60; else if (u == "h") n *= 3600;
    printf "%d", n + 0.999 }'
}
wrk_timeout=$(($(duration_seconds "$DURATION") + 30))

work="$(mktemp -d -t patgate-forward-auth-XXXXXX)"
server_pid=""
# SIGTERM, then SIGKILL after 10 s.
stop_server() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for_server SED_EXPRESSION FILE: the address the server printed, within START_TIMEOUT.
wait_for_server() {
  local expression="$1" file="$2" found="" deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    found="$(sed -n "$expression" "$file")"
    [[ -n "$found" ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "the server exited:" >&2
      cat "$work"/server.* >&2
      exit 1
    fi
    sleep 0.2
  done
  if [[ -z "$found" ]]; then
    echo "the server did not start within ${START_TIMEOUT}s" >&2
    cat "$work"/server.* >&2
    exit 1
  fi
  echo "$found"
}

if [[ "$WORLD" == demo ]]; then
  if [[ -z "${PATGATE_BIN:-}" ]]; then
    timeout "$BUILD_TIMEOUT" cargo build --release -p patgate --quiet
    PATGATE_BIN="$PWD/target/release/patgate"
  fi
  server_bin="$PATGATE_BIN"
  PATGATE_LOG=warn taskset -c "$SERVER_CPU" "$PATGATE_BIN" serve --listen 127.0.0.1:0 \
    --database-url "sqlite://$work/patgate.db" --secret-key-file "$work/patgate.key" --demo \
    --bootstrap-token-file "$work/admin.token" 2>"$work/server.log" &
  server_pid=$!
  addr="$(wait_for_server 's|^patgate: serving on http://||p' "$work/server.log")"
  alice="$(grep -A1 '^  alice:' "$work/server.log" | tail -n1 | tr -d ' ')"
  [[ -n "$alice" ]] || { echo "no demo token for alice" >&2; cat "$work/server.log" >&2; exit 1; }
  allowed_uri='/api/v4/projects/acme%2Fplatform%2Fapi/registry/repositories'
  denied_uri='/api/v4/projects/acme%2Fplatform%2Fapi/issues'
else
  HTTP_SERVER_BIN="$(http_server_bin "$work" "$BUILD_TIMEOUT")" || exit 1
  server_bin="$HTTP_SERVER_BIN"
  mkdir -p "$work/requests"
  # glibc 2.36 (Debian 12) reads /sys/kernel/mm/transparent_hugepage/enabled into a buffer it
  # does not NUL-terminate before strcmp, so glibc.malloc.hugetlb=1 takes effect only in some
  # processes (stack garbage; about half here). Restart until malloc's memory is on huge pages
  # (the configuration meant), at most THP_ATTEMPTS times; THP_ATTEMPTS=1 takes what comes.
  thp_attempts="${THP_ATTEMPTS:-12}"
  for attempt in $(seq 1 "$thp_attempts"); do
    echo "== loading the world (about 5 s at full scale), attempt $attempt" >&2
    # TMPDIR: the bench's SQLite store goes under $work, removed with it.
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 PATGATE_BENCH_LISTEN=127.0.0.1:0 PATGATE_BENCH_REQUESTS="$work/requests" \
      TMPDIR="$work" taskset -c "$SERVER_CPU" "$HTTP_SERVER_BIN" >"$work/server.out" 2>"$work/server.log" &
    server_pid=$!
    addr="$(wait_for_server 's|^listening on ||p' "$work/server.out")"
    huge_mib="$(sed -n 's/^rss: .* with the world loaded .*; \([0-9.]*\) MiB on transparent huge pages.*/\1/p' "$work/server.out")"
    if awk -v h="${huge_mib:-0}" 'BEGIN { exit !(h > 0) }' || ((attempt == thp_attempts)); then
      break
    fi
    stop_server
  done
  if ! awk -v h="${huge_mib:-0}" 'BEGIN { exit !(h > 0) }'; then
    echo "warning: the index is not on huge pages (glibc.malloc.hugetlb=1 did not take effect)" >&2
  fi
  # requests: CLASS FILE COUNT ALLOWED
  request_line() { awk -v class="$1" '$1 == "requests:" && $2 == class' "$work/server.out"; }
  allowed_file="$(request_line allowed | awk '{print $3}')"
  mixed_file="$(request_line mixed | awk '{print $3}')"
  mixed_denied_share="$(request_line mixed | awk '{ printf "%.4f", 1 - $5 / $4 }')"
  [[ -s "$allowed_file" && -s "$mixed_file" ]] || { echo "no request files" >&2; cat "$work/server.out" >&2; exit 1; }
fi
[[ "$addr" == 127.* ]] || { echo "the server is not on loopback: $addr" >&2; exit 1; }

# wrk's latency figure in ms.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
    printf "%.3f", n }'
}

# The server's CPU time so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$server_pid/stat"; }
# The steal time of the server's core so far, in clock ticks (/proc/stat's eighth column).
steal_ticks() { awk -v cpu="cpu$SERVER_CPU" '$1 == cpu { print $9 }' /proc/stat; }
ticks_per_second="$(getconf CLK_TCK)"

# run LABEL EXPECT PATH [wrk args…]: prints "rps p99_ms server_cpu_percent steal_percent".
# EXPECT: 2xx (every response), non2xx (none 2xx), or a share of non-2xx responses (0.7413,
# within ±0.02: the mixed file is replayed in order, so the share is the file's).
# REQUESTS (environment) is the request file for bench/forward_auth.lua.
run() {
  local label="$1" expect="$2" path="$3"
  shift 3
  local out before after stolen_before stolen_after started ended
  before="$(cpu_ticks)"
  stolen_before="$(steal_ticks)"
  started="$(date +%s.%N)"
  out="$(PATGATE_REQUESTS="${REQUESTS:-}" timeout "$wrk_timeout" taskset -c "$CLIENT_CPU" \
    wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "http://$addr$path")" ||
    { echo "$label: wrk failed" >&2; echo "$out" >&2; exit 1; }
  ended="$(date +%s.%N)"
  after="$(cpu_ticks)"
  stolen_after="$(steal_ticks)"
  local rps p99 total non2xx cpu steal
  rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
  p99="$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
  total="$(awk '/requests in/ {print $1}' <<<"$out")"
  non2xx="$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")"
  non2xx="${non2xx:-0}"
  cpu="$(awk -v t=$((after - before)) -v hz="$ticks_per_second" -v s="$started" -v e="$ended" \
    'BEGIN { printf "%.0f", 100 * t / hz / (e - s) }')"
  if grep -q 'Socket errors' <<<"$out"; then
    echo "$label: $(grep 'Socket errors' <<<"$out")" >&2
  fi
  local bad=0
  case "$expect" in
    2xx) [[ "$non2xx" == 0 ]] || bad=1 ;;
    non2xx) [[ "$non2xx" == "$total" ]] || bad=1 ;;
    *) awk -v n="$non2xx" -v t="$total" -v e="$expect" 'BEGIN { d = n / t - e; exit (d > 0.02 || d < -0.02) }' || bad=1 ;;
  esac
  if ((bad)); then
    echo "$label: unexpected statuses ($non2xx of $total not 2xx, expected $expect)" >&2
    echo "$out" >&2
    exit 1
  fi
  steal="$(awk -v t=$((stolen_after - stolen_before)) -v hz="$ticks_per_second" -v s="$started" -v e="$ended" \
    'BEGIN { printf "%.0f", 100 * t / hz / (e - s) }')"
  echo "$rps $p99 $cpu $steal"
}

median() { tr ' ' '\n' <<<"$*" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

commit="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then
  commit="$commit (with uncommitted changes)"
fi
echo "patgate forward-auth benchmark: server $server_bin on CPU $SERVER_CPU, wrk (1 thread) on CPU $CLIENT_CPU," \
  "$CONNECTIONS connections, $DURATION per run, $ROUNDS rounds, loopback $addr"
echo "commit: $commit"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
# System-wide: malloc's huge pages (GLIBC_TUNABLES above) need `madvise` or `always`.
thp_mode() { sed -n 's/.*\[\(.*\)\].*/\1/p' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo unknown; }
echo "transparent huge pages at start: $(thp_mode)"
if [[ "$WORLD" == demo ]]; then
  echo "world: the --demo organisation (4 tokens); WORLD=1m loads the 1M-token synthetic directory"
  fwd=(-H "X-Forwarded-Method: GET")
  names=("" "(b) forward-auth, allowed (200)" "(c) forward-auth, denied (403)")
else
  sed -n 's/^\(world\|build\|rss\|routes\|mix\|requests\): /  \1: /p' "$work/server.out"
  names=("" "(b) forward-auth, allowed requests (200)"
    "(c) forward-auth, mixed ($(awk -v d="$mixed_denied_share" 'BEGIN { printf "%.0f", 100 * (1 - d) }') % allowed)")
fi
timeout 60 taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d2s "http://$addr/healthz" >/dev/null # warm-up
if [[ "$WORLD" == 1m ]]; then
  PATGATE_REQUESTS="$mixed_file" timeout 60 taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d2s \
    -s bench/forward_auth.lua "http://$addr/api/v1/forward-auth" >/dev/null
fi
declare -A rps p99 cpu
a_runs=() b_runs=() c_runs=()
disturbed=()
stolen=()
printf '%-6s %-44s %12s %10s %8s %6s\n' "round" "path" "requests/s" "p99 (ms)" "srv CPU" "steal"
for round in $(seq 1 "$ROUNDS"); do
  for label in a b c; do
    case "$WORLD:$label" in
      *:a) result="$(run healthz 2xx /healthz)"; name="(a) GET /healthz (static 200 baseline)" ;;
      demo:b) result="$(run allowed 2xx /api/v1/forward-auth -H "PRIVATE-TOKEN: $alice" "${fwd[@]}" -H "X-Forwarded-Uri: $allowed_uri")"
         name="${names[1]}" ;;
      demo:c) result="$(run denied non2xx /api/v1/forward-auth -H "PRIVATE-TOKEN: $alice" "${fwd[@]}" -H "X-Forwarded-Uri: $denied_uri")"
         name="${names[2]}" ;;
      1m:b) result="$(REQUESTS="$allowed_file" run allowed 2xx /api/v1/forward-auth -s bench/forward_auth.lua)"
         name="${names[1]}" ;;
      1m:c) result="$(REQUESTS="$mixed_file" run mixed "$mixed_denied_share" /api/v1/forward-auth -s bench/forward_auth.lua)"
         name="${names[2]}" ;;
    esac
    read -r r p c st <<<"$result"
    rps[$label]="${rps[$label]:-} $r"; p99[$label]="${p99[$label]:-} $p"; cpu[$label]="${cpu[$label]:-} $c"
    printf '%-6s %-44s %12.0f %10.3f %7s%% %5s%%\n' "$round" "$name" "$r" "$p" "$c" "$st"
    ((c >= 90)) || disturbed+=("round $round $label: server CPU $c %")
    ((st < 5)) || stolen+=("round $round $label: $st %")
    case "$label" in a) a_runs+=("$r") ;; b) b_runs+=("$r") ;; c) c_runs+=("$r") ;; esac
  done
done
# A closing baseline, so that every round's forward-auth runs sit between two healthz runs.
read -r r p c st <<<"$(run healthz 2xx /healthz)"
printf '%-6s %-44s %12.0f %10.3f %7s%% %5s%%\n' "end" "(a) GET /healthz (closing baseline)" "$r" "$p" "$c" "$st"
a_runs+=("$r")
# Diagnosis, not part of the verdict: healthz sent forward auth's own requests (the same
# token and X-Forwarded-* headers, 1m world), so the request's size is taken out of the gap.
if [[ "$WORLD" == 1m ]]; then
  read -r same_headers_rps p c st <<<"$(REQUESTS="$allowed_file" run healthz-headers 2xx /healthz -s bench/forward_auth.lua)"
  printf '%-6s %-44s %12.0f %10.3f %7s%% %5s%%\n' "end" "(a') GET /healthz with (b)'s request headers" "$same_headers_rps" "$p" "$c" "$st"
  # And forward auth with one allowed request repeated: everything it reads stays in cache,
  # so this is the ratio without the 1M world's cache misses.
  head -n 1 "$allowed_file" >"$work/one.tsv"
  read -r hot_rps p c st <<<"$(REQUESTS="$work/one.tsv" run allowed-hot 2xx /api/v1/forward-auth -s bench/forward_auth.lua)"
  printf '%-6s %-44s %12.0f %10.3f %7s%% %5s%%\n' "end" "(b') forward-auth, one request repeated" "$hot_rps" "$p" "$c" "$st"
  # And (b)'s requests to the bench's own route that reads them as forward auth does and
  # answers as it answers an allowed one, without deciding: forward auth's ceiling.
  read -r undecided_rps p c st <<<"$(REQUESTS="$allowed_file" run undecided 2xx /bench/forward-auth-undecided -s bench/forward_auth.lua)"
  printf '%-6s %-44s %12.0f %10.3f %7s%% %5s%%\n' "end" "(n) (b)'s requests answered without a decision" "$undecided_rps" "$p" "$c" "$st"
fi
# Round i's ratio: its forward-auth rate over the mean of the healthz runs before and after
# it, which cancels a drift of the machine's speed within the round (this VM's neighbours
# move it by ±20 % over minutes).
bracketed() { # bracketed LABEL-RUNS... → per-round ratios
  local i ratios=()
  for i in $(seq 0 $((ROUNDS - 1))); do
    ratios+=("$(awk -v x="$1" -v a="${a_runs[$i]}" -v z="${a_runs[$((i + 1))]}" 'BEGIN { printf "%.3f", x / ((a + z) / 2) }')")
    shift
  done
  echo "${ratios[*]}"
}
ratios_b="$(bracketed "${b_runs[@]}")"
ratios_c="$(bracketed "${c_runs[@]}")"
rss="$(awk '/^VmRSS:/ {print $2, $3}' "/proc/$server_pid/status")"
hwm="$(awk '/^VmHWM:/ {print $2, $3}' "/proc/$server_pid/status")"
huge="$(awk '/^AnonHugePages:/ {print $2, $3}' "/proc/$server_pid/smaps_rollup" 2>/dev/null || echo "?")"

echo
echo "medians over $ROUNDS rounds:"
printf '%-44s %12s %10s %8s\n' "path" "requests/s" "p99 (ms)" "srv CPU"
printf '%-44s %12.0f %10.3f %7s%%\n' "(a) GET /healthz (static 200 baseline)" "$(median ${rps[a]})" "$(median ${p99[a]})" "$(median ${cpu[a]})"
printf '%-44s %12.0f %10.3f %7s%%\n' "${names[1]}" "$(median ${rps[b]})" "$(median ${p99[b]})" "$(median ${cpu[b]})"
printf '%-44s %12.0f %10.3f %7s%%\n' "${names[2]}" "$(median ${rps[c]})" "$(median ${p99[c]})" "$(median ${cpu[c]})"
ratio="$(median $ratios_b)"
verdict="$(awk -v r="$ratio" 'BEGIN { print (r >= 0.80) ? "PASS" : "FAIL" }')"
echo "ratio (b)/(a), median of the bracketed rounds: $ratio (target >= 0.80: $verdict); per round: $ratios_b"
echo "ratio (c)/(a), median of the bracketed rounds: $(median $ratios_c); per round: $ratios_c"
if [[ "$WORLD" == 1m ]]; then
  echo "healthz with (b)'s request headers against the closing healthz: $(awk -v x="$same_headers_rps" -v a="${a_runs[$ROUNDS]}" 'BEGIN { printf "%.3f", x / a }')" \
    "(the share of the gap that is the request's size)"
  echo "forward auth with one request repeated (in cache) against the closing healthz: $(awk -v x="$hot_rps" -v a="${a_runs[$ROUNDS]}" 'BEGIN { printf "%.3f", x / a }')" \
    "(the ratio without the index's cache misses)"
  echo "forward auth without its decision against the closing healthz: $(awk -v x="$undecided_rps" -v a="${a_runs[$ROUNDS]}" 'BEGIN { printf "%.3f", x / a }')" \
    "(the ceiling: what the request and the answer cost before anything is decided)"
  # Per request, in µs of the server's core (it is saturated in every run): what deciding
  # adds to (n), against what the target leaves for it.
  awk -v a="${a_runs[$ROUNDS]}" -v n="$undecided_rps" -v h="$hot_rps" -v b="$(median ${rps[b]})" 'BEGIN {
    printf "per request: healthz %.2f µs, undecided %.2f µs; deciding adds %.2f µs (%.2f µs of it in cache);", 1e6 / a, 1e6 / n, 1e6 / b - 1e6 / n, 1e6 / h - 1e6 / n
    printf " the target leaves %.2f µs for it\n", 1e6 / (0.8 * a) - 1e6 / n }'
fi
echo "ratio (b)/(a) of the medians, for comparison with earlier runs: $(awk -v b="$(median ${rps[b]})" -v a="$(median ${rps[a]})" 'BEGIN { printf "%.3f", b / a }')"
if [[ "$WORLD" == 1m ]]; then
  echo "server RSS with the world loaded (before serving): $(sed -n 's/^rss: \([0-9]*\) kB with the world loaded.*/\1 kB/p' "$work/server.out")" \
    "($huge_mib MiB on huge pages; server started $attempt time(s))"
  echo "world build: $(sed -n 's/^build: \([0-9]*\) ms = .*/\1 ms/p' "$work/server.out")"
fi
echo "server RSS after the runs: $rss (peak $hwm; on transparent huge pages: $huge)"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg); transparent huge pages at end: $(thp_mode)"
if ((${#disturbed[@]})); then
  echo "warning: runs where the server had under 90 % of its core (something else ran on CPU $SERVER_CPU," \
    "or the client bounded it): ${disturbed[*]}; rerun for a clean figure"
fi
if ((${#stolen[@]})); then
  echo "warning: rounds' runs with 5 % or more steal time on CPU $SERVER_CPU (the hypervisor ran something" \
    "else there): ${stolen[*]}"
fi

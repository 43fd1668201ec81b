# Sourced by the forward-auth bench scripts: building and starting the `http_server` bench of
# patgate-server (the 1M-token world behind patgate_server::router).
#
# http_server_bin WORK TIMEOUT: prints $HTTP_SERVER_BIN if set, else builds the bench
# (`cargo bench -p patgate-server --bench http_server --no-run`, within TIMEOUT seconds, its
# output in WORK/build.log) and prints the executable's path; exits on failure.
http_server_bin() {
  local work="$1" timeout_seconds="$2" bin="${HTTP_SERVER_BIN:-}"
  if [[ -z "$bin" ]]; then
    echo "== building the http_server bench (cargo bench -p patgate-server --bench http_server --no-run)" >&2
    bin="$(timeout "$timeout_seconds" cargo bench -p patgate-server --bench http_server --no-run \
      --message-format=json 2>"$work/build.log" |
      grep '"reason":"compiler-artifact"' | grep '"name":"http_server"' |
      sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)" || { cat "$work/build.log" >&2; exit 1; }
  fi
  [[ -x "$bin" ]] || { echo "no http_server bench executable (${bin:-none})" >&2; cat "$work/build.log" 2>/dev/null >&2; exit 1; }
  echo "$bin"
}

# wait_listening DIR PID TIMEOUT WHAT: waits until the server PID (its output in DIR/server.out,
# its log in DIR/server.log) prints "listening on", within TIMEOUT seconds; on failure prints
# "WHAT did not start:" with both files and exits.
wait_listening() {
  local dir="$1" pid="$2" deadline=$((SECONDS + $3)) what="$4"
  until grep -q '^listening on' "$dir/server.out" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS > deadline)); then
      echo "$what did not start:" >&2
      cat "$dir/server.out" "$dir/server.log" >&2
      exit 1
    fi
    sleep 0.2
  done
}

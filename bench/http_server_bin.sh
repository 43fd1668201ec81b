# Sourced by the forward-auth bench scripts: the `http_server` bench executable of
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

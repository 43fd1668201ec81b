-- wrk script for bench/forward_auth.sh: replays GET /api/v1/forward-auth requests from a
-- file written by patgate-server's http_server bench, one per line:
--   token<TAB>method<TAB>path
-- Each request presents the token as PRIVATE-TOKEN and the GitLab request behind the proxy as
-- X-Forwarded-Method and X-Forwarded-Uri. Requests are formatted once, in init, and taken in
-- turn (cycling) by every connection of the thread.
--
-- Usage: wrk -t1 -c32 -d10s -s bench/forward_auth.lua http://127.0.0.1:PORT/api/v1/forward-auth -- FILE

local requests = {}
local count = 0
local next_request = 1

function init(args)
  local path = args[1] or os.getenv("PATGATE_REQUESTS")
  assert(path, "forward_auth.lua: pass the request file after --")
  local file = assert(io.open(path, "r"))
  for line in file:lines() do
    local token, method, uri = line:match("^([^\t]*)\t([^\t]+)\t([^\t]+)$")
    if token then
      count = count + 1
      requests[count] = wrk.format("GET", wrk.path, {
        ["Host"] = wrk.host,
        ["PRIVATE-TOKEN"] = token,
        ["X-Forwarded-Method"] = method,
        ["X-Forwarded-Uri"] = uri,
      })
    end
  end
  file:close()
  assert(count > 0, "forward_auth.lua: no requests in " .. path)
end

function request()
  local formatted = requests[next_request]
  next_request = next_request % count + 1
  return formatted
end

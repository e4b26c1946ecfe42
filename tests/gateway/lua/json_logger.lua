-- The peer the reporter is measured against (bench/plugin_overhead.py): what a user would otherwise run, a
-- Lua logger the way APISIX's tcp-logger works (apisix/plugins/tcp-logger.lua + utils/log-util.lua at 3.18):
-- the log phase reads the variables into a table per request and queues it; a timer JSON-encodes the batch
-- (cjson) and writes it over a keep-alive cosocket. The same fields as an AuthEvent.
local cjson = require("cjson.safe")

local ngx = ngx
local tcp = ngx.socket.tcp
local concat = table.concat

local _M = {}

local queue, n, scheduled = {}, 0, false
local BATCH, FLUSH = 200, 0.05

local function send(premature, conf)
  scheduled = false
  while n > 0 do
    local batch = queue
    local count = n
    queue, n = {}, 0
    local lines = {}
    for i = 1, count do
      lines[i] = cjson.encode(batch[i])
    end
    local sock = tcp()
    sock:settimeout(1000)
    local ok = sock:connect("127.0.0.1", conf.port)
    if ok then
      ok = sock:send(concat(lines, "\n") .. "\n")
      if ok then
        sock:setkeepalive(60000, 4)
      else
        sock:close()
      end
    end
    if premature then
      return
    end
  end
end

function _M.log(conf)
  local var = ngx.var
  local start = ngx.req.start_time()
  local a = ngx.ctx.authwire
  n = n + 1
  queue[n] = {
    request_id = var.request_id, start_time = start, latency = ngx.now() - start,
    client = { ip = var.realip_remote_addr or var.remote_addr, port = var.realip_remote_port or var.remote_port },
    server = { ip = var.server_addr, port = var.server_port },
    connection = var.connection, connection_requests = var.connection_requests,
    http = { method = var.request_method, host = var.host, path = var.uri, status = ngx.status,
             user_agent = var.http_user_agent, request_bytes = var.request_length,
             response_bytes = var.bytes_sent },
    auth = a and { plugin = a.plugin, success = a.success, consumer = a.consumer,
                   credential_id = a.credential_id } or nil,
  }
  if not scheduled then
    scheduled = true
    ngx.timer.at(n >= BATCH and 0 or FLUSH, send, conf)
  end
end

return _M

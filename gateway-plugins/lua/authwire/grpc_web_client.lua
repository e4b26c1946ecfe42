-- gRPC-Web (HTTP/1.1, application/grpc-web+proto) client for authwire.v1.Ingest/Report over ngx.socket.tcp.
--
-- Why HTTP/1.1 by hand: OpenResty has no HTTP/2 or gRPC client (APISIX dropped grpc-client-nginx-module),
-- and lua-resty-http, which APISIX and Kong bundle, is not packaged by Debian. One request shape and the
-- response framings aiohttp produces (Content-Length or chunked) are all we need, so the few lines below
-- keep a single code path that runs on stock nginx+ngx_lua, APISIX and Kong alike.
--
-- Cosockets are not allowed in the log phase: call report() from a timer (authwire.reporter, APISIX's
-- batch processor and Kong's queue all do).
local protobuf = require("authwire.protobuf")

local tcp = ngx.socket.tcp
local tonumber, concat, byte = tonumber, table.concat, string.byte
local char, floor = string.char, math.floor
local unescape_uri = ngx.unescape_uri

local _M = {}

_M.PATH = "/authwire.v1.Ingest/Report"

local parsed = {}

--- "127.0.0.1:9181" | "[::1]:9181" | "localhost:9181" | "unix:/run/authwire/grpc-web.sock"
function _M.parse_address(addr)
  local p = parsed[addr]
  if p then
    return p
  end
  if type(addr) ~= "string" then
    return nil, "sidecar address must be a string"
  end
  if addr:sub(1, 5) == "unix:" then
    p = { host = addr, port = nil, path = addr:sub(6), authority = "localhost" }
  else
    local host, port = addr:match("^%[([%x:%.]+)%]:(%d+)$")
    if not host then
      host, port = addr:match("^([^:%[%]]+):(%d+)$")
    end
    port = tonumber(port)
    if not host or not port or port < 1 or port > 65535 then
      return nil, "bad sidecar address " .. addr .. " (want host:port, [v6]:port or unix:/path)"
    end
    p = { host = host, port = port, authority = addr }
  end
  parsed[addr] = p
  return p
end

local function be32(n)
  return char(floor(n / 16777216) % 256, floor(n / 65536) % 256, floor(n / 256) % 256, n % 256)
end

local function read_body(sock, headers)
  local te = headers["transfer-encoding"]
  if te and te:lower():find("chunked", 1, true) then
    local parts = {}
    while true do
      local line, err = sock:receive("*l")
      if not line then
        return nil, "reading chunk size: " .. err
      end
      local size = tonumber(line:match("^%s*(%x+)"), 16)
      if not size then
        return nil, "bad chunk size line: " .. line:sub(1, 40)
      end
      if size == 0 then
        -- trailer section ends with an empty line
        repeat
          line, err = sock:receive("*l")
          if not line then
            return nil, "reading chunked trailer: " .. err
          end
        until line == ""
        return concat(parts)
      end
      local data
      data, err = sock:receive(size)
      if not data then
        return nil, "reading chunk: " .. err
      end
      parts[#parts + 1] = data
      local crlf
      crlf, err = sock:receive("*l")
      if not crlf then
        return nil, "reading chunk end: " .. err
      end
    end
  end
  local cl = tonumber(headers["content-length"])
  if cl then
    if cl == 0 then
      return ""
    end
    return sock:receive(cl)
  end
  headers.connection = "close" -- body delimited by close: the connection cannot be reused
  return sock:receive("*a")
end

local function parse_trailers(text, into)
  for line in text:gmatch("[^\r\n]+") do
    local k, v = line:match("^%s*([^:]+):%s*(.-)%s*$")
    if k then
      into[k:lower()] = v
    end
  end
end

-- One request/response on a connected socket. Returns response (table), or nil, err, retryable.
-- The request goes out in one write, as a table of pieces: the cosocket copies them into its buffer, where a
-- concat would first build (and hash) one more Lua string the size of the batch.
local function exchange(sock, authority, auth_header, prefix, msg)
  local ok, err = sock:send({
    "POST ", _M.PATH, " HTTP/1.1\r\nHost: ", authority, "\r\n",
    "Content-Type: application/grpc-web+proto\r\nAccept: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\n",
    auth_header, "Content-Length: ", tostring(#msg + 5), "\r\n\r\n\0", prefix, msg,
  })
  if not ok then
    return nil, "send: " .. err, true
  end
  local status_line
  status_line, err = sock:receive("*l")
  if not status_line then
    return nil, "read status: " .. err, true
  end
  local status = tonumber(status_line:match("^HTTP/1%.%d (%d%d%d)"))
  if not status then
    return nil, "not an HTTP response: " .. status_line:sub(1, 60)
  end
  local headers = {}
  while true do
    local line
    line, err = sock:receive("*l")
    if not line then
      return nil, "read headers: " .. err
    end
    if line == "" then
      break
    end
    local k, v = line:match("^([^:]+):%s*(.-)%s*$")
    if k then
      headers[k:lower()] = v
    end
  end
  local payload
  payload, err = read_body(sock, headers)
  if not payload then
    return nil, "read body: " .. tostring(err)
  end
  return { status = status, headers = headers, body = payload }
end

--- Send one ReportRequest built from encoded AuthEvents (a list, or a protobuf.frame_events() string) and
-- optionally the drops this report claimed (a ReporterDrops table). Never raises.
-- @param conf {sidecar, connect_timeout, send_timeout, read_timeout (ms), keepalive_timeout (ms),
--              keepalive_pool, token (optional: sent as `authorization: Bearer <token>`)}
-- @return ReportResponse table ({accepted, rejections}) or nil and an error message
function _M.report(conf, events, drops)
  local addr, err = _M.parse_address(conf.sidecar)
  if not addr then
    return nil, err
  end
  local msg
  msg, err = protobuf.encode_report_request_safe(events, drops)
  if not msg then
    return nil, "cannot encode the ReportRequest: " .. tostring(err)
  end
  local prefix = be32(#msg)
  local auth_header = ""
  if type(conf.token) == "string" and conf.token ~= "" then
    auth_header = "Authorization: Bearer " .. conf.token .. "\r\n"
  end

  local res
  -- A pooled keep-alive connection may have been closed by the sidecar while idle; that shows up as a send
  -- or read failure on a reused socket and is worth exactly one retry on a fresh connection.
  for _ = 1, 2 do
    local sock = tcp()
    sock:settimeouts(conf.connect_timeout or 1000, conf.send_timeout or 2000, conf.read_timeout or 5000)
    local ok, cerr
    local pool = "authwire:" .. conf.sidecar
    if not addr.port then
      -- nginx logs a [crit] line for every connect() to a missing unix socket; while the sidecar is down
      -- that would be one line per retry, so look for the socket file first (a cheap local open()).
      local f, oerr = io.open(addr.path, "rb")
      if f then
        f:close()
      elseif oerr and oerr:find("No such file", 1, true) then
        return nil, "connect " .. conf.sidecar .. ": no such socket (is authwire serve running?)"
      end
    end
    if addr.port then
      ok, cerr = sock:connect(addr.host, addr.port, { pool = pool, pool_size = conf.keepalive_pool or 4 })
    else
      ok, cerr = sock:connect(addr.host, { pool = pool, pool_size = conf.keepalive_pool or 4 })
    end
    if not ok then
      return nil, "connect " .. conf.sidecar .. ": " .. cerr
    end
    local reused = sock:getreusedtimes() > 0
    local retryable
    res, err, retryable = exchange(sock, addr.authority, auth_header, prefix, msg)
    if res then
      local conn = res.headers.connection
      if conn and conn:lower() == "close" then
        sock:close()
      else
        sock:setkeepalive(conf.keepalive_timeout or 60000, conf.keepalive_pool or 4)
      end
      break
    end
    sock:close()
    if not (reused and retryable) then
      return nil, err
    end
  end

  if res.status ~= 200 then
    return nil, "HTTP " .. res.status .. " from " .. conf.sidecar .. ": " .. res.body:sub(1, 200)
  end
  -- gRPC-Web body: frames of {flag byte, 4-byte big-endian length, payload}; flag 0x80 = trailers
  local trailers = {}
  for k, v in pairs(res.headers) do
    if k:sub(1, 5) == "grpc-" then
      trailers[k] = v -- trailers-only responses carry status in the headers
    end
  end
  local data
  local b, pos = res.body, 1
  while pos + 4 <= #b do
    local flag = byte(b, pos)
    local b1, b2, b3, b4 = byte(b, pos + 1, pos + 4)
    local len = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
    local frame = b:sub(pos + 5, pos + 4 + len)
    if #frame ~= len then
      return nil, "truncated gRPC-Web frame"
    end
    if flag >= 128 then
      parse_trailers(frame, trailers)
    elseif not data then
      data = frame
    end
    pos = pos + 5 + len
  end
  local gstatus = tonumber(trailers["grpc-status"])
  if gstatus ~= 0 then
    return nil, "grpc-status " .. tostring(trailers["grpc-status"]) .. ": "
      .. unescape_uri(trailers["grpc-message"] or "")
  end
  local resp
  resp, err = protobuf.decode_report_response(data or "")
  if not resp then
    return nil, "bad ReportResponse: " .. err
  end
  return resp
end

--- Send one batch together with the drops not yet told to the sidecar (`unreported`, an authwire.drops):
--- the report claims them all before it is sent and gives them back only if it fails, so batches in flight
--- at the same time never carry the same drops. `events`: a list of encoded AuthEvents or a frame_events()
--- string. Returns the response, or nil, err. Never raises.
function _M.report_batch(conf, events, unreported)
  local claim = unreported:claim()
  if not claim and (events == "" or (type(events) == "table" and #events == 0)) then
    return { accepted = 0, rejections = {} }
  end
  local ok, resp, err = pcall(_M.report, conf, events, claim)
  if not ok then
    resp, err = nil, resp
  end
  if not resp then
    unreported:give_back(claim)
  end
  return resp, err
end

return _M

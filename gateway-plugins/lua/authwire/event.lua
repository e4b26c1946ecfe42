-- Builds AuthEvent tables (field names of authwire.v1.AuthEvent) from nginx variables plus what the
-- gateway adapter knows about authentication. Gateway-neutral: APISIX passes ctx.var, Kong and plain
-- nginx pass ngx.var (same variable names).
--
-- Secrets never go in here: callers pass a credential *id* (username, key id, credential entity id), never
-- a password, API key, token or signature; `credential_id()` applies the optional keyed pseudonym.
local digest = require("authwire.digest")
local protobuf = require("authwire.protobuf")
local reasons = require("authwire.reasons")

local tonumber, type, floor, byte = tonumber, type, math.floor, string.byte

local ngx = ngx
local ok_new, new_table = pcall(require, "table.new")
if not ok_new then
  new_table = function() return {} end
end

local _M = {}

_M.MESSAGE_MAX = 256 -- bytes of the gateway's failure message kept (the sidecar's validation bound)

-- the sidecar's per-field bounds (sidecar/authwire/validate.py, characters): cut bytes, which is never more
local function cut(v, max)
  if type(v) ~= "string" then
    return nil
  end
  return #v > max and v:sub(1, max) or v
end

local function num(v)
  return v and tonumber(v) or nil
end

-- "[::1]" -> "::1"; unix-socket peers ("unix:") have no IP. No patterns: this runs per request and
-- LuaJIT does not compile string.gsub/match.
local function ip_of(v)
  if type(v) ~= "string" or v == "" or v:sub(1, 5) == "unix:" then
    return nil
  end
  if byte(v, 1) == 91 and byte(v, -1) == 93 then -- [ ... ]
    return v:sub(2, -2)
  end
  return v
end

-- The fields of the packed variable, in order. None can contain "|" except the last (uri); the other
-- client-chosen strings (Host, User-Agent) are read on their own.
_M.PACKED_FIELDS = { "realip_remote_addr", "realip_remote_port", "remote_addr", "remote_port", "server_addr",
                     "server_port", "connection", "connection_requests", "request_id", "request_method",
                     "status", "request_length", "bytes_sent", "uri" }
local PACKED_N = #_M.PACKED_FIELDS

--- The nginx `map` that packs every variable the event needs but the Host and User-Agent into one, so
-- the log phase reads three variables instead of sixteen (each ngx.var read is a C call; on Debian's LuaJIT they
-- dominate the reporter's cost). Put it in http {} and pass conf.packed_var = "authwire_vars".
-- request_id_var: the variable in the request id's place and the map's key (Kong: "kong_request_id", which
-- Kong makes anyway, so that nginx does not generate a $request_id, ≈ 0.8 µs of OpenSSL RAND_bytes, that
-- nothing else reads)
function _M.packed_map(name, request_id_var)
  local id = request_id_var or "request_id"
  local parts = {}
  for i, f in ipairs(_M.PACKED_FIELDS) do
    parts[i] = "$" .. (f == "request_id" and id or f)
  end
  return "map $" .. id .. " $" .. (name or "authwire_vars") .. " { volatile; default \""
    .. table.concat(parts, "|") .. "\"; }"
end

local unpacked = {} -- reused: filled and read within one from_captured() call, which never yields

-- the packed fields that are numbers: parsed in place, without a substring each
local NUMERIC = {}
for i, f in ipairs(_M.PACKED_FIELDS) do
  NUMERIC[i] = f:find("port", 1, true) ~= nil or f == "connection" or f == "connection_requests" or f == "status"
    or f == "request_length" or f == "bytes_sent"
end

local function digits(s, i, j)
  if j < i then
    return nil
  end
  local n = 0
  for k = i, j do
    local b = byte(s, k)
    if b < 48 or b > 57 then
      return tonumber(s:sub(i, j)) -- not plain digits: whatever tonumber makes of it (nil when nothing)
    end
    n = n * 10 + b - 48
  end
  return n
end

local from_i, to_j = {}, {} -- field k of the packed value: bytes from_i[k]..to_j[k]; reused (never yields)

local function split_packed(packed)
  local pos = 1
  for k = 1, PACKED_N - 1 do
    local bar = packed:find("|", pos, true)
    if not bar then
      return false
    end
    from_i[k], to_j[k] = pos, bar - 1
    pos = bar + 1
  end
  from_i[PACKED_N], to_j[PACKED_N] = pos, #packed
  return true
end

local function unpack_vars(packed, host)
  if not split_packed(packed) then
    return nil
  end
  local t = unpacked
  for i = 1, PACKED_N - 1 do
    local a, b = from_i[i], to_j[i]
    if NUMERIC[i] then
      t[_M.PACKED_FIELDS[i]] = digits(packed, a, b)
    else
      t[_M.PACKED_FIELDS[i]] = b >= a and packed:sub(a, b) or nil
    end
  end
  t.uri = packed:sub(from_i[PACKED_N])
  t.host = host
  return t
end

local CAPTURED = { "realip_remote_addr", "realip_remote_port", "remote_addr", "remote_port", "server_addr",
                   "server_port", "connection", "connection_requests", "request_id", "request_method", "host",
                   "status", "request_length", "bytes_sent", "uri" }

--- The log-phase half: copy the variable values an event needs, nothing more. Building the tables and
-- encoding happen later, in a timer, for a whole batch: there LuaJIT compiles the loop, while code run
-- once per request mostly stays in the interpreter (measured: ~20 µs per request in the log phase vs a
-- few µs per event in the batch loop).
-- @param var ngx.var or APISIX ctx.var
-- @param opts {include_user_agent (default true), packed_var (name of the packed_map() variable),
--              start_time (default ngx.req.start_time()), now (default ngx.now())}
function _M.capture_var(var, opts)
  local c
  local packed = opts.packed_var and var[opts.packed_var]
  local ua = opts.include_user_agent ~= false and var.http_user_agent or nil
  local start, now = opts.start_time or ngx.req.start_time(), opts.now or ngx.now()
  if packed then
    -- one constructor with every key the adapters add (nil values still size the table): adding keys
    -- one by one would resize it three times per request
    c = { packed = packed, host = var.host, http_user_agent = ua, start_time = start, now = now,
          auth = nil, node = nil, route_id = nil, service_id = nil }
  else
    c = new_table(0, #CAPTURED + 8)
    for i = 1, #CAPTURED do
      local name = CAPTURED[i]
      c[name] = var[name]
    end
    c.http_user_agent, c.start_time, c.now = ua, start, now
  end
  return c
end

-- The common part of the event from the variables (a capture table or unpack_vars()'s), the User-Agent and
-- the two clock readings.
local function fill(ev, var, ua, start_time, now, opts)
  -- realip_remote_addr/port hold the TCP peer when the real-ip module rewrote remote_addr (nginx >= 1.9.7)
  local peer_ip = ip_of(var.realip_remote_addr) or ip_of(var.remote_addr)
  local peer_port = num(var.realip_remote_port) or num(var.remote_port)
  local forwarded
  local remote = ip_of(var.remote_addr)
  if remote and remote ~= peer_ip then
    forwarded = remote
  end
  if not ev then
    ev = { start_time = {}, latency = {}, gateway = {}, client = {}, server = {}, http = {} }
  end
  -- nginx's clock has millisecond resolution (ngx.req.start_time(), ngx.now()): round to whole ms and convert
  -- with integer math (exact in a double below 2^53), so the sidecar sees a whole-ms time and applies its
  -- 1 ms slack for millisecond clocks. (start - s) * 1e9 would give .382999897 s, not .383.
  local start_ms, now_ms = floor(start_time * 1000 + 0.5), floor(now * 1000 + 0.5)
  local s = floor(start_ms / 1000)
  local st = ev.start_time
  st.seconds, st.nanos = s, (start_ms - s * 1000) * 1000000
  local d = now_ms - start_ms
  if d < 0 then
    d = 0
  end
  s = floor(d / 1000)
  local lat = ev.latency
  lat.seconds, lat.nanos = s, (d - s * 1000) * 1000000
  local gw = ev.gateway
  gw.kind, gw.node, gw.version = opts.gateway or "other", opts.node, opts.version
  local cl = ev.client
  cl.ip, cl.port = peer_ip, peer_port
  local sv = ev.server
  sv.ip, sv.port = ip_of(var.server_addr), num(var.server_port)
  local h = ev.http
  h.method, h.host, h.path = cut(var.request_method, 16), cut(var.host, 255), cut(var.uri, 2048)
  h.status, h.user_agent = num(var.status), cut(ua, 512)
  h.request_bytes, h.response_bytes = num(var.request_length), num(var.bytes_sent)
  ev.request_id = cut(var.request_id, 128)
  ev.forwarded_for = forwarded
  ev.gateway_connection_id = num(var.connection)
  ev.connection_requests = num(var.connection_requests)
  ev.route_id, ev.service_id, ev.auth = nil, nil, nil
  return ev
end

--- The timer half: the common part of the event from captured values.
-- @param c a capture_var() result
-- @param opts {gateway = "apisix"|"kong"|"other", node, version}
-- @param ev optional: an event table from an earlier call to fill again instead of allocating one (for a
--        batch loop that encodes each event before building the next; route_id, service_id and auth are
--        reset to nil)
function _M.from_captured(c, opts, ev)
  local var = c
  if c.packed then
    var = unpack_vars(c.packed, c.host) or {}
  end
  return fill(ev, var, c.http_user_agent, c.start_time, c.now, opts)
end

--- from_captured() for a caller that kept the scalars itself (no capture table): the packed variable's
--- value, $host, $http_user_agent (or nil), ngx.req.start_time(), ngx.now().
function _M.from_packed(packed, host, ua, start_time, now, opts, ev)
  return fill(ev, unpack_vars(packed, host) or {}, ua, start_time, now, opts)
end

-- The packed variable's event written straight into encode_events()' buffer: the same bytes as
-- from_packed() + the table encoder (tests/gateway checks both against each other), without the event
-- table, the per-field substrings and the encoder's table walk (1.5 -> ~0.8 µs per event in the bench).
local ffi = require("ffi")
pcall(ffi.cdef, "int memcmp(const void *s1, const void *s2, size_t n);")
local C = ffi.C
local u8p = ffi.typeof("const uint8_t *")
local wire = protobuf.wire
local W = { string = wire.string, range = wire.range, int = wire.int, auth = wire.auth, put_bytes = wire.put_bytes,
            len_begin = wire.len_begin, len_end = wire.len_end }
local function K(field, kind)
  return wire.key(field, kind)
end
local KEY = {
  request_id = K(1, "string"), start_time = K(2, "message"), latency = K(3, "message"), gateway = K(4, "message"),
  client = K(5, "message"), server = K(6, "message"), forwarded_for = K(7, "string"),
  gateway_connection_id = K(8, "varint"), connection_requests = K(9, "varint"), http = K(10, "message"),
  route_id = K(11, "string"), service_id = K(12, "string"), auth = K(13, "message"),
  s1 = K(1, "string"), s2 = K(2, "string"), s3 = K(3, "string"), s5 = K(5, "string"),
  v1 = K(1, "varint"), v2 = K(2, "varint"), v4 = K(4, "varint"), v6 = K(6, "varint"), v7 = K(7, "varint"),
}
local GATEWAY_KINDS = wire.enums["Gateway.kind"]

-- ip_of() on field k: its first and last byte, or nil
local function ip_range(s, k)
  local i, j = from_i[k], to_j[k]
  if j < i or (byte(s, i) == 117 and s:sub(i, i + 4) == "unix:") then -- "u"
    return nil
  end
  if byte(s, i) == 91 and byte(s, j) == 93 then -- [ ... ]
    return i + 1, j - 1
  end
  return i, j
end

local function num_at(s, k)
  return digits(s, from_i[k], to_j[k])
end

local function put_time(key, seconds, nanos)
  W.put_bytes(key)
  local at = W.len_begin()
  W.int(KEY.v1, seconds, "int64", "")
  W.int(KEY.v2, nanos, "int32", "")
  W.len_end(at)
end

local function put_endpoint(key, s, i, j, port, path)
  W.put_bytes(key)
  local at = W.len_begin()
  if i then
    W.range(KEY.s1, s, i, j)
  end
  W.int(KEY.v2, port, "uint32", path)
  W.len_end(at)
end

--- For a build function of protobuf.encode_events(): write the event of a packed capture (the values
--- from_packed() takes, plus what adapters set: route_id, service_id, the auth table, and optionally a
--- request id and status that replace the packed ones). Returns true, or an event table (the caller's
--- encode_events encodes it) when the packed value is malformed.
function _M.write_packed(packed, host, ua, start_time, now, opts, route_id, service_id, auth, request_id, status)
  if not split_packed(packed) then
    local ev = _M.from_packed(packed, host, ua, start_time, now, opts)
    ev.route_id, ev.service_id, ev.auth = route_id, service_id, auth
    ev.request_id = request_id and cut(request_id, 128) or ev.request_id
    ev.http.status = status or ev.http.status
    return ev
  end
  local s = packed
  if request_id then
    W.string(KEY.request_id, cut(request_id, 128))
  else
    local i, j = from_i[9], to_j[9]
    W.range(KEY.request_id, s, i, j - i >= 128 and i + 127 or j)
  end
  -- times as fill() computes them
  local start_ms, now_ms = floor(start_time * 1000 + 0.5), floor(now * 1000 + 0.5)
  local sec = floor(start_ms / 1000)
  put_time(KEY.start_time, sec, (start_ms - sec * 1000) * 1000000)
  local d = now_ms - start_ms
  if d < 0 then
    d = 0
  end
  sec = floor(d / 1000)
  put_time(KEY.latency, sec, (d - sec * 1000) * 1000000)
  W.put_bytes(KEY.gateway)
  local at = W.len_begin()
  local kind = opts.gateway or "other"
  local kn = GATEWAY_KINDS[kind]
  if not kn then
    error("gateway.kind: unknown enum value " .. tostring(kind), 0)
  end
  W.int(KEY.v1, kn, "enum", "gateway.kind")
  W.string(KEY.s2, opts.node)
  W.string(KEY.s3, opts.version)
  W.len_end(at)
  -- the TCP peer: realip_remote_addr/port (1, 2) when set, else remote_addr/port (3, 4); remote_addr is the
  -- forwarded client when it differs
  local pi, pj = ip_range(s, 1)
  local ri, rj = ip_range(s, 3)
  if not pi then
    pi, pj = ri, rj
  end
  local peer_port = num_at(s, 2) or num_at(s, 4)
  put_endpoint(KEY.client, s, pi, pj, peer_port, "client.port")
  local si, sj = ip_range(s, 5)
  put_endpoint(KEY.server, s, si, sj, num_at(s, 6), "server.port")
  if ri and not (rj - ri == pj - pi and C.memcmp(ffi.cast(u8p, s) + (ri - 1), ffi.cast(u8p, s) + (pi - 1),
                                                 rj - ri + 1) == 0) then
    W.range(KEY.forwarded_for, s, ri, rj)
  end
  W.int(KEY.gateway_connection_id, num_at(s, 7), "uint64", "gateway_connection_id")
  W.int(KEY.connection_requests, num_at(s, 8), "uint32", "connection_requests")
  W.put_bytes(KEY.http)
  at = W.len_begin()
  local i, j = from_i[10], to_j[10]
  W.range(KEY.s1, s, i, j - i >= 16 and i + 15 or j)
  W.string(KEY.s2, cut(host, 255))
  i, j = from_i[14], to_j[14]
  W.range(KEY.s3, s, i, j - i >= 2048 and i + 2047 or j)
  W.int(KEY.v4, status or num_at(s, 11), "uint32", "http.status")
  W.string(KEY.s5, cut(ua, 512))
  W.int(KEY.v6, num_at(s, 12), "uint64", "http.request_bytes")
  W.int(KEY.v7, num_at(s, 13), "uint64", "http.response_bytes")
  W.len_end(at)
  W.string(KEY.route_id, route_id)
  W.string(KEY.service_id, service_id)
  W.auth(KEY.auth, auth)
  return true
end

--- Field k (1-based, in PACKED_FIELDS order) of a packed value as a number, or nil.
function _M.packed_number(packed, k)
  if not split_packed(packed) then
    return nil
  end
  return num_at(packed, k)
end

--- Both halves at once (for callers that build the event where they capture it).
-- @param opts the union of capture_var() and from_captured() options
function _M.from_var(var, opts)
  return _M.from_captured(_M.capture_var(var, opts), opts)
end

--- The credential id as reported: itself, or HMAC-SHA256(key, id) hex when pseudonymizing.
function _M.credential_id(id, conf)
  if type(id) ~= "string" or id == "" then
    return nil
  end
  if conf and conf.pseudonymize_credentials then
    local key = conf.credential_hash_key
    if type(key) ~= "string" or key == "" then
      return nil -- refuse to send a clear id when the user asked for pseudonyms but gave no key
    end
    return "hmac-sha256:" .. digest.hmac_sha256_hex(key, id)
  end
  return id
end

-- Credential shapes a failure message must not carry out of the gateway: a message comes from an error
-- body, and a plugin that answers with an external service's body (forward-auth, openid-connect) or echoes
-- input can put a token in it. A JWT (three base64url parts, the first "eyJ"), an Authorization value
-- (scheme + 8+ token characters), name=value with a secret's name.
local SECRET_SHAPES = { "eyJ[%w_%-]+%.[%w_%-]+", "[Bb][Ee][Aa][Rr][Ee][Rr]%s+[%w%-%._~%+/=]+",
                        "[Bb][Aa][Ss][Ii][Cc]%s+[%w%+/=][%w%+/=][%w%+/=][%w%+/=][%w%+/=][%w%+/=][%w%+/=][%w%+/=]",
                        "[Ss]ignature%s*=", "[Pp]assword%s*[=:]", "[Ss]ecret%s*[=:]", "[Tt]oken%s*[=:]",
                        "[Aa]pi[_%-]?[Kk]ey%s*[=:]" }

--- The gateway's failure message as it may be sent: at most MESSAGE_MAX bytes, and nil when it looks like
--- it carries a credential (the reason code is still reported).
function _M.safe_message(message)
  if type(message) ~= "string" then
    return nil
  end
  if #message > _M.MESSAGE_MAX then
    message = message:sub(1, _M.MESSAGE_MAX)
  end
  for i = 1, #SECRET_SHAPES do
    if message:find(SECRET_SHAPES[i]) then
      return nil
    end
  end
  return message
end

--- The auth part.
-- @param a {plugin, consumer, credential_id, success (bool), attempted (bool), status, message,
--           gateway, jwt (claims table)}
-- @param out optional: a table from an earlier call to fill again (every field is set) instead of a new one
function _M.auth(a, out)
  local o = out or {}
  local plugin = a.plugin
  if not a.attempted then
    o.method, o.outcome, o.plugin = plugin and reasons.method_of(plugin) or "none", "not_attempted", plugin
    o.consumer, o.credential_id, o.reason, o.message, o.jwt = nil, nil, nil, nil, nil
    return o
  end
  if a.success then
    o.method, o.outcome, o.plugin = reasons.method_of(plugin), "success", plugin
    o.consumer, o.credential_id, o.reason, o.message, o.jwt = a.consumer, a.credential_id, nil, nil, a.jwt
    return o
  end
  local reason, plugin_hint = reasons.classify(a.gateway, a.status, a.message)
  plugin = plugin or plugin_hint
  o.method, o.outcome, o.plugin = reasons.method_of(plugin), "failure", plugin
  o.consumer, o.credential_id, o.reason = a.consumer, a.credential_id, reason
  o.message, o.jwt = _M.safe_message(a.message), a.jwt
  return o
end

--- The message of a JSON error body ({"message": "..."}), or the body's first line when it is not JSON.
function _M.message_of_body(body)
  if type(body) ~= "string" or body == "" then
    return nil
  end
  local cjson = require("cjson.safe")
  local t = cjson.decode(body)
  if type(t) == "table" then
    if type(t.message) == "string" then
      return t.message
    end
    -- Kong's jwt plugin answers with its error table, e.g. {"exp": "token expired"}
    for k, v in pairs(t) do
      if type(k) == "string" and type(v) == "string" and k ~= "request_id" then
        return k .. ": " .. v
      end
    end
  end
  -- a truncated JSON body: pull the message string out by pattern
  local m = body:match('"message"%s*:%s*"(.-[^\\])"')
  if m then
    return m
  end
  return nil
end

_M.BODY_CAPTURE_MAX = 1024 -- bytes of an error body kept to find the failure message

--- Body filter: `have` (the prefix kept so far, or nil) extended by this chunk of the response body
--- (ngx.arg[1]), up to BODY_CAPTURE_MAX bytes.
function _M.body_prefix(have)
  local chunk = ngx.arg[1]
  have = have or ""
  if chunk and chunk ~= "" and #have < _M.BODY_CAPTURE_MAX then
    return have .. chunk:sub(1, _M.BODY_CAPTURE_MAX - #have)
  end
  return have
end

return _M

-- Protobuf wire encoding of authwire.v1 messages (AuthEvent, ReportRequest) and decoding of ReportResponse.
--
-- Why our own encoder: lua-protobuf ("pb") ships inside APISIX and Kong but not in Debian or plain
-- OpenResty, and loading .proto files at run time would add a second code path. Our messages are few and
-- fixed, so a field table per message keeps one path that runs everywhere; tests/gateway decodes its
-- bytes with Python protobuf (the contract test) so any drift from protos/authwire/v1 fails CI.
--
-- Encoding follows proto3: scalar fields equal to their default (0, "", false) are omitted; a nested message
-- is emitted when its table is present (even if empty). Strings must be UTF-8 (Python protobuf rejects
-- anything else for proto3 `string`), so invalid bytes are replaced with U+FFFD instead of poisoning a batch.
--
-- 64-bit fields accept Lua numbers (exact up to 2^53), LuaJIT int64_t/uint64_t cdata and decimal strings.

local ffi = require("ffi")
local bit = require("bit")

local band, bor, rshift = bit.band, bit.bor, bit.rshift
local char, byte, concat = string.char, string.byte, table.concat
local floor, type, tonumber, tostring = math.floor, type, tonumber, tostring
local pairs, ipairs = pairs, ipairs
local error = error

local uint64_t = ffi.typeof("uint64_t")
local int64_t = ffi.typeof("int64_t")

local _M = {}

-- wire types
local VARINT, LEN = 0, 2

local TWO53 = 9007199254740992

local function varint_small(n)
  -- n: non-negative integer-valued Lua number < 2^53
  if n < 128 then
    return char(n)
  end
  local out, i = {}, 0
  while n >= 128 do
    i = i + 1
    out[i] = char(n % 128 + 128)
    n = floor(n / 128)
  end
  out[i + 1] = char(n)
  return concat(out)
end

local function varint_u64(x)
  -- x: uint64_t cdata
  local out, i = {}, 0
  local c128 = 128ULL
  while x >= c128 do
    i = i + 1
    out[i] = char(tonumber(x % c128) + 128)
    x = x / c128
  end
  out[i + 1] = char(tonumber(x))
  return concat(out)
end

local function parse_decimal(s, signed, name)
  -- decimal string -> uint64_t (two's complement for negative signed values)
  local neg = false
  local digits = s
  if signed and s:sub(1, 1) == "-" then
    neg = true
    digits = s:sub(2)
  end
  if digits == "" or digits:find("[^0-9]") then
    error(name .. ": not a decimal integer: " .. s, 0)
  end
  local v = 0ULL
  for k = 1, #digits do
    v = v * 10ULL + (byte(digits, k) - 48)
  end
  if neg then
    v = ffi.cast(uint64_t, -ffi.cast(int64_t, v))
  end
  return v
end

-- Returns the varint bytes of an integer value, or nil when it is the proto3 default (zero).
local function encode_integer(v, signed, name)
  local t = type(v)
  if t == "number" then
    if v ~= floor(v) then
      error(name .. ": not an integer: " .. tostring(v), 0)
    end
    if v == 0 then
      return nil
    end
    if v > 0 then
      if v < TWO53 then
        return varint_small(v)
      end
      return varint_u64(ffi.cast(uint64_t, v))
    end
    if not signed then
      error(name .. ": negative value for an unsigned field: " .. tostring(v), 0)
    end
    -- negative int32/int64: 10-byte two's complement varint, as protoc does
    return varint_u64(ffi.cast(uint64_t, ffi.cast(int64_t, v)))
  elseif t == "cdata" then
    local u
    if ffi.istype(int64_t, v) then
      if not signed and v < 0 then
        error(name .. ": negative value for an unsigned field", 0)
      end
      u = ffi.cast(uint64_t, v)
    else
      u = ffi.cast(uint64_t, v)
    end
    if u == 0ULL then
      return nil
    end
    return varint_u64(u)
  elseif t == "string" then
    local u = parse_decimal(v, signed, name)
    if u == 0ULL then
      return nil
    end
    return varint_u64(u)
  elseif t == "boolean" then
    return v and "\1" or nil
  end
  error(name .. ": expected an integer, got " .. t, 0)
end

local REPLACEMENT = "\239\191\189" -- U+FFFD

-- Replace every byte that is not part of a well-formed UTF-8 sequence with U+FFFD.
local function to_utf8(s)
  -- fast path (compiled by LuaJIT, unlike a pattern find): pure ASCII needs no work
  local ascii = true
  for k = 1, #s do
    if byte(s, k) >= 128 then
      ascii = false
      break
    end
  end
  if ascii then
    return s
  end
  local out, n = {}, 0
  local i, len = 1, #s
  while i <= len do
    local c = byte(s, i)
    local need, min
    if c < 0x80 then
      need = 0
    elseif c >= 0xC2 and c <= 0xDF then
      need, min = 1, 0x80
    elseif c >= 0xE0 and c <= 0xEF then
      need, min = 2, 0x800
    elseif c >= 0xF0 and c <= 0xF4 then
      need, min = 3, 0x10000
    else
      need = -1
    end
    local ok = need >= 0 and i + need <= len
    if ok and need > 0 then
      local cp = band(c, rshift(0x7F, need + 1))
      for k = 1, need do
        local cc = byte(s, i + k)
        if band(cc, 0xC0) ~= 0x80 then
          ok = false
          break
        end
        cp = bor(cp * 64, band(cc, 0x3F))
      end
      if ok and (cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF)) then
        ok = false
      end
    end
    n = n + 1
    if ok then
      out[n] = s:sub(i, i + need)
      i = i + need + 1
    else
      out[n] = REPLACEMENT
      i = i + 1
    end
  end
  return concat(out)
end
_M.to_utf8 = to_utf8

local function key(field, wire)
  return varint_small(field * 8 + wire)
end

local function len_field(field, payload)
  return key(field, LEN) .. varint_small(#payload) .. payload
end

-- Message descriptions: list of {field number, name, kind[, submessage]} in field-number order.
-- kinds: string, uint32, uint64, int32, int64, enum, message
local S = {}

S.Timestamp = { { 1, "seconds", "int64" }, { 2, "nanos", "int32" } }
S.Duration = { { 1, "seconds", "int64" }, { 2, "nanos", "int32" } }
S.Endpoint = { { 1, "ip", "string" }, { 2, "port", "uint32" } }
S.Gateway = { { 1, "kind", "enum" }, { 2, "node", "string" }, { 3, "version", "string" } }
S.HttpRequest = {
  { 1, "method", "string" }, { 2, "host", "string" }, { 3, "path", "string" }, { 4, "status", "uint32" },
  { 5, "user_agent", "string" }, { 6, "request_bytes", "uint64" }, { 7, "response_bytes", "uint64" },
}
S.JwtClaims = {
  { 1, "iss", "string" }, { 2, "sub", "string" }, { 3, "aud", "string" }, { 4, "kid", "string" },
  { 5, "exp", "int64" }, { 6, "iat", "int64" }, { 7, "jti_hash", "string" }, { 8, "alg", "string" },
}
S.Auth = {
  { 1, "method", "enum" }, { 2, "outcome", "enum" }, { 3, "plugin", "string" }, { 4, "consumer", "string" },
  { 5, "credential_id", "string" }, { 6, "reason", "enum" }, { 7, "message", "string" },
  { 8, "jwt", "message", "JwtClaims" },
}
S.AuthEvent = {
  { 1, "request_id", "string" }, { 2, "start_time", "message", "Timestamp" },
  { 3, "latency", "message", "Duration" }, { 4, "gateway", "message", "Gateway" },
  { 5, "client", "message", "Endpoint" }, { 6, "server", "message", "Endpoint" },
  { 7, "forwarded_for", "string" }, { 8, "gateway_connection_id", "uint64" },
  { 9, "connection_requests", "uint32" }, { 10, "http", "message", "HttpRequest" },
  { 11, "route_id", "string" }, { 12, "service_id", "string" }, { 13, "auth", "message", "Auth" },
}
S.ReporterDrops = { { 1, "queue_full", "uint64" }, { 2, "send_failed", "uint64" }, { 3, "encode_failed", "uint64" } }
_M.schemas = S

-- Enum names accepted in place of numbers (the proto's names without their prefix, lower case).
local ENUMS = {
  ["Gateway.kind"] = { unspecified = 0, apisix = 1, kong = 2, envoy = 3, other = 4 },
  ["Auth.method"] = {
    unspecified = 0, none = 1, jwt = 2, basic = 3, hmac = 4, key_auth = 5, oauth2 = 6, other = 7,
  },
  ["Auth.outcome"] = { unspecified = 0, not_attempted = 1, success = 2, failure = 3 },
  ["Auth.reason"] = {
    unspecified = 0, missing_credentials = 1, invalid_credentials = 2, expired = 3, bad_signature = 4,
    unknown_key = 5, clock_skew = 6, forbidden = 7, other = 8,
  },
}
_M.enums = ENUMS

local U32_MAX = 4294967295
local I32_MIN, I32_MAX = -2147483648, 2147483647

-- Precomputed per field: its key bytes and, for enums, the name table (no work per event).
for msg_name, specs in pairs(S) do
  for _, spec in ipairs(specs) do
    local kind = spec[3]
    spec.key = key(spec[1], (kind == "string" or kind == "message") and LEN or VARINT)
    spec.enum = kind == "enum" and ENUMS[msg_name .. "." .. spec[2]] or nil
    spec.signed = kind == "int32" or kind == "int64" or kind == "enum"
  end
end

-- Events are written into one growing FFI byte buffer and copied out once: no intermediate Lua strings
-- per field (string interning dominated the cost of a table-of-strings encoder). Encoding never yields,
-- so one buffer per worker is safe.
pcall(ffi.cdef, "void *memmove(void *dest, const void *src, size_t n);")
local C = ffi.C
local buf_cap = 4096
local buf = ffi.new("uint8_t[?]", buf_cap)
local pos = 0

local function reserve(n)
  if pos + n > buf_cap then
    local cap = buf_cap * 2
    while pos + n > cap do
      cap = cap * 2
    end
    local bigger = ffi.new("uint8_t[?]", cap)
    ffi.copy(bigger, buf, pos)
    buf, buf_cap = bigger, cap
  end
end

-- Unrolled for the common sizes: a small loop with a varying trip count inside the batch loop makes
-- LuaJIT abort traces ("leaving loop in root trace") until it blacklists them and interprets the encoder.
local function put_varint(n)
  reserve(10)
  if n < 128 then
    buf[pos] = n
    pos = pos + 1
  elseif n < 16384 then
    buf[pos], buf[pos + 1] = n % 128 + 128, floor(n / 128)
    pos = pos + 2
  elseif n < 2097152 then
    local m = floor(n / 128)
    buf[pos], buf[pos + 1], buf[pos + 2] = n % 128 + 128, m % 128 + 128, floor(m / 128)
    pos = pos + 3
  else
    while n >= 128 do
      buf[pos] = n % 128 + 128
      pos = pos + 1
      n = floor(n / 128)
    end
    buf[pos] = n
    pos = pos + 1
  end
end

local function put_bytes(str)
  local l = #str
  reserve(l)
  ffi.copy(buf + pos, str, l)
  pos = pos + l
end

local function len_begin()
  reserve(1)
  local at = pos
  pos = pos + 1
  return at
end

-- a nested message's length goes in the byte reserved before it; moved right when it is 128+ bytes
local function len_end(at)
  local len = pos - at - 1
  if len < 128 then
    buf[at] = len
    return
  end
  -- the varint written in place, no Lua string (this runs for every event of a batch: events are 128+)
  local extra = len < 16384 and 1 or len < 2097152 and 2 or len < 268435456 and 3 or 4
  reserve(extra)
  C.memmove(buf + at + 1 + extra, buf + at + 1, len)
  if extra == 1 then -- nearly always: events are 128..16383 bytes (no loop: see put_varint)
    buf[at], buf[at + 1] = len % 128 + 128, floor(len / 128)
  else
    local n = len
    for k = 0, extra - 1 do
      buf[at + k] = n % 128 + 128
      n = floor(n / 128)
    end
    buf[at + extra] = n
  end
  pos = pos + extra
end

local function field_error(path, message)
  error(path .. ": " .. message, 0)
end

-- integers off the fast path: range checks, negative values, 64-bit cdata and decimal strings
local function slow_integer(v, kind, path)
  if type(v) == "number" then
    if kind == "uint32" and (v < 0 or v > U32_MAX) then
      field_error(path, "out of range for uint32: " .. tostring(v))
    elseif kind == "int32" and (v < I32_MIN or v > I32_MAX) then
      field_error(path, "out of range for int32: " .. tostring(v))
    end
  end
  return encode_integer(v, kind == "int32" or kind == "int64" or kind == "enum", path)
end

-- One straight-line encoder per message *and path* (AuthEvent.client and .server get their own), generated
-- from the field tables above: no per-field table walking, constant error paths, and no recursion (LuaJIT
-- aborts traces on recursion, which left a spec-walking encoder interpreted).
local HELPERS = { put_bytes = put_bytes, put_varint = put_varint, to_utf8 = to_utf8, len_begin = len_begin,
                  len_end = len_end, field_error = field_error, slow_integer = slow_integer, floor = floor,
                  type = type, tostring = tostring }
local FAST_MAX = { uint32 = U32_MAX, int32 = I32_MAX, uint64 = TWO53 - 1, int64 = TWO53 - 1,
                   enum = I32_MAX }

local function generate(msg_name, path)
  local consts = {}
  local src = { "local H, K = ...",
                "local put_bytes, put_varint, to_utf8, len_begin, len_end = H.put_bytes, H.put_varint, "
                  .. "H.to_utf8, H.len_begin, H.len_end",
                "local field_error, slow_integer, floor, type, tostring = H.field_error, H.slow_integer, "
                  .. "H.floor, H.type, H.tostring",
                "return function(t)", "local v" }
  local function const(value)
    consts[#consts + 1] = value
    return "K[" .. #consts .. "]"
  end
  local function add(line)
    src[#src + 1] = line
  end
  for _, spec in ipairs(S[msg_name]) do
    local name, kind = spec[2], spec[3]
    local fpath = path and (path .. "." .. name) or name
    local P = string.format("%q", fpath)
    local KEY = const(spec.key)
    add(string.format("v = t[%q]", name))
    add('if v ~= nil and type(v) ~= "userdata" then')
    if kind == "string" then
      add('  if type(v) ~= "string" then')
      add('    if type(v) == "number" then v = tostring(v) else')
      add('      field_error(' .. P .. ', "expected a string, got " .. type(v)) end')
      add("  end")
      add('  if v ~= "" then v = to_utf8(v); put_bytes(' .. KEY .. "); put_varint(#v); put_bytes(v) end")
    elseif kind == "message" then
      add('  if type(v) ~= "table" then field_error(' .. P .. ', "expected a table, got " .. type(v)) end')
      add("  put_bytes(" .. KEY .. "); local at = len_begin(); " .. const(generate(spec[4], fpath))
        .. "(v); len_end(at)")
    else
      if kind == "enum" then
        local enum = const(spec.enum)
        add('  if type(v) == "string" then')
        add("    local n = " .. enum .. "[v]")
        add('    if not n then field_error(' .. P .. ', "unknown enum value " .. v) end')
        add("    v = n")
        add("  end")
      end
      add('  if type(v) == "number" and v > 0 and v <= ' .. string.format("%.17g", FAST_MAX[kind])
        .. " and v == floor(v) then")
      add("    put_bytes(" .. KEY .. "); put_varint(v)")
      add("  else")
      add("    local b = slow_integer(v, " .. string.format("%q", kind) .. ", " .. P .. ")")
      add("    if b then put_bytes(" .. KEY .. "); put_bytes(b) end")
      add("  end")
    end
    add("end")
  end
  add("end")
  local chunk = assert(loadstring(table.concat(src, "\n"), "=authwire.protobuf:" .. (path or msg_name)))
  return chunk(HELPERS, consts)
end

local ENCODERS = {}
for msg_name in pairs(S) do
  ENCODERS[msg_name] = generate(msg_name, nil)
end
local AUTH_AT_EVENT = generate("Auth", "auth") -- AuthEvent.auth (its errors name "auth.<field>")

local function encode_message(msg_name, t)
  pos = 0
  ENCODERS[msg_name](t)
  return ffi.string(buf, pos)
end

-- ReportRequest.events is field 1: each event is written into the one buffer behind its key and length,
-- so a batch is one string (no per-event string, no second copy to frame it)
local EVENTS_KEY = key(1, LEN)

-- the batch loop's state, in upvalues so that the one pcall around it can resume after a bad item
local at_item, item_start, items_done = 0, 0, 0

local function put_items(items, build, from, offset)
  local encode = ENCODERS.AuthEvent
  local indexed = type(items) == "number"
  for i = from, indexed and items or #items do
    at_item, item_start = i, pos
    put_bytes(EVENTS_KEY)
    local at = len_begin()
    local ev, err
    if indexed then
      ev, err = build(offset + i)
    else
      ev, err = build(items[i])
    end
    if type(ev) == "table" then
      encode(ev)
    elseif type(ev) == "string" then -- already encoded
      put_bytes(ev)
    elseif ev ~= true then -- true: build wrote the event itself (protobuf.wire)
      error(err or "no event", 0)
    end
    len_end(at)
    items_done = items_done + 1
  end
end

-- What a build function of encode_events() needs to write an AuthEvent's fields itself, straight into the
-- batch buffer (event.write_packed: no event table, no substring per field). Only valid inside build.
local u8p = ffi.typeof("const uint8_t *")

local function is_ascii(s, i, j)
  for k = i, j do
    if byte(s, k) >= 128 then
      return false
    end
  end
  return true
end

local wire = { put_bytes = put_bytes, put_varint = put_varint, len_begin = len_begin, len_end = len_end,
               slow_integer = slow_integer, enums = ENUMS }

--- key(field number, "string"|"message"|"varint") -> the field's key bytes
function wire.key(field, kind)
  return key(field, (kind == "string" or kind == "message") and LEN or VARINT)
end

--- A string field from bytes i..j of s (nothing when j < i), made valid UTF-8 like every string field.
function wire.range(k, s, i, j)
  if j < i then
    return
  end
  local len = j - i + 1
  if is_ascii(s, i, j) then
    put_bytes(k)
    put_varint(len)
    reserve(len)
    ffi.copy(buf + pos, ffi.cast(u8p, s) + (i - 1), len)
    pos = pos + len
  else
    local v = to_utf8(s:sub(i, j))
    put_bytes(k)
    put_varint(#v)
    put_bytes(v)
  end
end

--- A string field (nothing for nil or ""), made valid UTF-8.
function wire.string(k, v)
  if v ~= nil and v ~= "" then
    if type(v) == "number" then
      v = tostring(v)
    elseif type(v) ~= "string" then
      error("expected a string, got " .. type(v), 0)
    end
    v = to_utf8(v)
    put_bytes(k)
    put_varint(#v)
    put_bytes(v)
  end
end

--- An integer field of `kind` (uint32, uint64, int32, int64, enum): nothing for nil or 0; out-of-range
--- values raise naming `path`, as the table encoder does.
function wire.int(k, v, kind, path)
  if v == nil then
    return
  end
  if type(v) == "number" and v > 0 and v <= FAST_MAX[kind] and v == floor(v) then
    put_bytes(k)
    put_varint(v)
  else
    local b = slow_integer(v, kind, path)
    if b then
      put_bytes(k)
      put_bytes(b)
    end
  end
end

--- AuthEvent.auth from an event.auth() table.
function wire.auth(k, a)
  if a ~= nil then
    if type(a) ~= "table" then
      error("auth: expected a table, got " .. type(a), 0)
    end
    put_bytes(k)
    local at = len_begin()
    AUTH_AT_EVENT(a)
    len_end(at)
  end
end

_M.wire = wire

--- The events part of a ReportRequest (what frame_events returns) built straight from the items:
--- build(item) -> an AuthEvent table, or its encoded bytes (a string), or nil, err; a table must not be
--- encoded by build itself (one buffer). An item that fails to build or encode is reported to
--- on_error(err) and left out.
--- items may also be a count n: then build(offset + i) is called for i = 1..n (a caller keeping its
--- entries in columns builds from those, without a table per entry).
--- @return the bytes, and how many events they hold
function _M.encode_events(items, build, on_error, offset)
  pos, items_done = 0, 0
  local from, n = 1, type(items) == "number" and items or #items
  offset = offset or 0
  -- one pcall per batch, not per event: returning into a pcall frame is NYI for LuaJIT traces, so a pcall
  -- per event left the batch loop interpreted. After an error the loop resumes behind the bad item.
  while from <= n do
    local ok, err = pcall(put_items, items, build, from, offset)
    if ok then
      break
    end
    pos = item_start -- drop the bad item's partial bytes
    on_error(err)
    from = at_item + 1
  end
  return ffi.string(buf, pos), items_done
end

--- Encode one AuthEvent table (field names as in auth_event.proto). Errors name the bad field.
-- @return bytes, or nil and an error message
function _M.encode_auth_event(ev)
  local ok, res = pcall(encode_message, "AuthEvent", ev)
  if not ok then
    return nil, res
  end
  return res
end

--- Encode any described message (for tests and tools).
function _M.encode(msg_name, t)
  if not S[msg_name] then
    return nil, "unknown message " .. tostring(msg_name)
  end
  local ok, res = pcall(encode_message, msg_name, t)
  if not ok then
    return nil, res
  end
  return res
end

--- The events part of a ReportRequest (field 1, repeated) from already-encoded AuthEvent byte strings:
--- built once per batch and kept, so a retry re-sends these bytes instead of encoding the batch again.
function _M.frame_events(encoded_events)
  local out = {}
  for i = 1, #encoded_events do
    out[i] = len_field(1, encoded_events[i])
  end
  return concat(out)
end

--- ReportRequest from already-encoded AuthEvent byte strings (a list, or a frame_events() string) and,
-- optionally, the drops this report claimed (field 2, a ReporterDrops table). Raises on a bad drops table:
-- callers in timers use encode_report_request_safe.
function _M.encode_report_request(events, drops)
  local framed = type(events) == "string" and events or _M.frame_events(events)
  if drops then
    return framed .. len_field(2, encode_message("ReporterDrops", drops))
  end
  return framed
end

--- encode_report_request that never raises: bytes, or nil and the error.
function _M.encode_report_request_safe(events, drops)
  local ok, res = pcall(_M.encode_report_request, events, drops)
  if not ok then
    return nil, res
  end
  return res
end

-- Minimal decoder for the sidecar's reply: ReportResponse {accepted = 1; repeated Rejection rejections = 2}
-- with Rejection {index = 1; field = 2; reason = 3}. Unknown fields are skipped, as protobuf requires.
local function read_varint(s, pos)
  local result, shift = 0, 0
  while true do
    local b = byte(s, pos)
    if not b then
      return nil, "truncated varint"
    end
    pos = pos + 1
    if shift < 53 then
      result = result + (b % 128) * 2 ^ shift
    end
    if b < 128 then
      return result, pos
    end
    shift = shift + 7
    if shift > 63 then
      return nil, "varint too long"
    end
  end
end

local function each_field(s, fn)
  local pos, len = 1, #s
  while pos <= len do
    local k, p = read_varint(s, pos)
    if not k then
      return nil, p
    end
    local field, wire = floor(k / 8), k % 8
    pos = p
    if wire == VARINT then
      local v
      v, pos = read_varint(s, pos)
      if not v then
        return nil, pos
      end
      fn(field, v)
    elseif wire == LEN then
      local l
      l, pos = read_varint(s, pos)
      if not l then
        return nil, pos
      end
      if pos + l - 1 > len then
        return nil, "truncated field " .. field
      end
      fn(field, s:sub(pos, pos + l - 1))
      pos = pos + l
    elseif wire == 1 then
      pos = pos + 8
    elseif wire == 5 then
      pos = pos + 4
    else
      return nil, "unsupported wire type " .. wire
    end
  end
  return true
end

function _M.decode_report_response(s)
  local resp = { accepted = 0, rejections = {} }
  local ok, err = each_field(s, function(field, v)
    if field == 1 and type(v) == "number" then
      resp.accepted = v
    elseif field == 2 and type(v) == "string" then
      local rej = { index = 0, field = "", reason = "" }
      each_field(v, function(f2, v2)
        if f2 == 1 and type(v2) == "number" then
          rej.index = v2
        elseif f2 == 2 and type(v2) == "string" then
          rej.field = v2
        elseif f2 == 3 and type(v2) == "string" then
          rej.reason = v2
        end
      end)
      resp.rejections[#resp.rejections + 1] = rej
    end
  end)
  if not ok then
    return nil, err
  end
  return resp
end

--- Encode each item with encode(item) -> bytes | nil, err; a failing item is reported to on_error(err)
--- and left out, so one bad event never costs its batch.
function _M.encode_each(items, encode, on_error)
  local out, n = {}, 0
  for i = 1, #items do
    local ok, bytes, err = pcall(encode, items[i])
    if ok and bytes then
      n = n + 1
      out[n] = bytes
    else
      on_error(ok and err or bytes)
    end
  end
  return out
end

return _M

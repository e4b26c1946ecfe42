-- Encodes the contract cases with authwire.protobuf and prints one JSON line per case:
--   {"name": ..., "hex": ...} or {"name": ..., "error": ...}
-- tests/gateway/test_lua_protobuf_contract.py decodes them with Python protobuf.
-- With an argument (hex of a ReportResponse) it prints that response decoded instead.
local cjson = require("cjson")
local pb = require("authwire.protobuf")
local jwt_claims = require("authwire.jwt_claims")

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function unhex(h)
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

if arg[1] then
  local resp, err = pb.decode_report_response(unhex(arg[1]))
  print(cjson.encode(resp or { error = err }))
  return
end

local cases = {
  { "full", {
    request_id = "req-ü-1",
    start_time = { seconds = 1700000000, nanos = 123456789 },
    latency = { seconds = 2, nanos = 500000000 },
    gateway = { kind = "apisix", node = "gw-東京-1", version = "3.18.0" },
    client = { ip = "2001:db8::1", port = 65535 },
    server = { ip = "127.0.0.1", port = 9080 },
    forwarded_for = "198.51.100.7",
    gateway_connection_id = "18446744073709551615",
    connection_requests = 4294967295,
    http = {
      method = "POST", host = "api.example", path = "/ünï/😀", status = 401, user_agent = "curl/8 ☃",
      request_bytes = 9007199254740993ULL, response_bytes = 2 ^ 40,
    },
    route_id = "r1", service_id = "s1",
    auth = {
      method = "jwt", outcome = "failure", plugin = "jwt-auth", consumer = "ålice", credential_id = "kid-1",
      reason = "expired", message = "failed to verify jwt",
      jwt = { iss = "issuer", sub = "sub", aud = "aud", kid = "k", exp = -1, iat = 0x7fffffffffffffffLL,
              jti_hash = "ab", alg = "RS256" },
    },
  } },
  { "empty", {} },
  -- nested messages of 128+ bytes (2-byte length prefix) and an event larger than the 4 KiB first buffer
  { "long_nested", {
    request_id = "long",
    http = { path = "/" .. string.rep("p", 3000), user_agent = string.rep("ü", 200), status = 200 },
    auth = { message = string.rep("m", 300), jwt = { iss = string.rep("i", 2000), exp = 1 } },
  } },
  { "defaults_and_empty_messages", {
    request_id = "", forwarded_for = "", gateway_connection_id = 0, connection_requests = 0,
    client = {}, auth = { method = 0, outcome = "unspecified", jwt = {} },
  } },
  { "numeric_enums_and_int64_min", {
    gateway = { kind = 2 }, auth = { method = 5, outcome = 2, reason = 8,
                                     jwt = { exp = "-9223372036854775808", iat = 1 } },
  } },
  { "invalid_utf8_replaced", { http = { path = "/a\255\254b", user_agent = "\192\175x\237\160\128" } } },
  { "null_is_absent", { request_id = "x", route_id = cjson.null, auth = cjson.null } },
  { "err_negative_port", { client = { ip = "127.0.0.1", port = -1 } } },
  { "uint32_beyond_port_range_is_encoded", { server = { port = 70000 } } },
  { "err_unknown_enum", { auth = { method = "nope" } } },
  { "err_not_integer", { http = { status = 1.5 } } },
  { "err_bad_decimal", { gateway_connection_id = "12x" } },
  { "err_type", { http = "GET" } },
}

for _, c in ipairs(cases) do
  local bytes, err = pb.encode_auth_event(c[2])
  if bytes then
    print(cjson.encode({ name = c[1], hex = hex(bytes) }))
  else
    print(cjson.encode({ name = c[1], error = err }))
  end
end

-- a ReportRequest of two events
local a = assert(pb.encode_auth_event({ request_id = "a" }))
local b = assert(pb.encode_auth_event({ request_id = "b", auth = { outcome = "success" } }))
print(cjson.encode({ name = "report_request", hex = hex(pb.encode_report_request({ a, b })) }))
-- encode_each: a bad event is reported by name and left out; its neighbours are kept, in order
local each_errors = {}
local each = pb.encode_each({ { request_id = "x" }, { auth = { method = "nope" } }, { request_id = "y" } },
  pb.encode_auth_event, function(err) each_errors[#each_errors + 1] = err end)
print(cjson.encode({ name = "encode_each", hex = hex(pb.encode_report_request(each)), errors = each_errors }))
-- encode_events: the same, straight into one buffer; an event that fails half-way (after its request id
-- was written) is rolled back; a 300-byte path needs a two-byte length
local events_errors = {}
local long = string.rep("p", 300)
local events, n_events = pb.encode_events({ { request_id = "x" }, { request_id = "half", auth = { method = "nope" } },
                                            { request_id = "y", http = { path = long } }, false },
  function(item) if item then return item end return nil, "no such event" end,
  function(err) events_errors[#events_errors + 1] = err end)
print(cjson.encode({ name = "encode_events", hex = hex(pb.encode_report_request(events, { queue_full = 1 })),
                     n = n_events, errors = events_errors }))
-- encode_events with indexed items (build(offset + i)) and items already encoded (strings, Kong's
-- queue.max_bytes entries), mixed with tables; the bad one in the middle is skipped and the rest resumes
local pre = assert(pb.encode_auth_event({ request_id = "pre", http = { path = long } }))
local by_index = { [11] = { request_id = "t" }, [12] = pre, [13] = { auth = { outcome = "nope" } },
                   [14] = { request_id = "u" } }
local mixed_errors = {}
local mixed, n_mixed = pb.encode_events(4, function(i) return by_index[i] end,
  function(err) mixed_errors[#mixed_errors + 1] = err end, 10)
print(cjson.encode({ name = "encode_events_mixed", hex = hex(mixed), n = n_mixed, errors = mixed_errors }))
print(cjson.encode({ name = "report_request_drops",
                     hex = hex(pb.encode_report_request({ a }, { queue_full = 3, send_failed = 0,
                                                                 encode_failed = "18446744073709551615" })) }))

-- JWT claims subset (the token never leaves; jti only hashed): header {"alg":"HS256","kid":"k1"},
-- payload {"iss":"idp","sub":"alice","aud":["api","x"],"exp":2000000000,"iat":1700000000,"jti":"j-1"}
local token = "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIn0."
  .. "eyJpc3MiOiJpZHAiLCJzdWIiOiJhbGljZSIsImF1ZCI6WyJhcGkiLCJ4Il0sImV4cCI6MjAwMDAwMDAwMCwiaWF0IjoxNzAwMDAwMDAwLCJqdGkiOiJqLTEifQ"
  .. ".c2ln"
local claims = jwt_claims.from_token("Bearer " .. token)
print(cjson.encode({ name = "jwt_claims", hex = hex(assert(pb.encode("JwtClaims", claims))) }))

-- Runs the cases tests/gateway/test_lua_properties.py generates (one JSON document on stdin) through the
-- shared reporter's pure functions and prints the results as one JSON document.
local cjson = require("cjson")
local event = require("authwire.event")
local drops = require("authwire.drops")
local jwt_claims = require("authwire.jwt_claims")

local input = cjson.decode(io.read("*a"))
local out = { times = {}, drops = {}, messages = {}, time_reasons = {}, bodies = {}, packed = {} }

for i, t in ipairs(input.times) do
  -- what nginx hands the plugin: ngx.req.start_time() / ngx.now(), a double of whole milliseconds
  local ev = event.from_captured({ start_time = t[1] / 1000, now = t[2] / 1000 }, { gateway = "other" })
  out.times[i] = { ev.start_time.seconds, ev.start_time.nanos, ev.latency.seconds, ev.latency.nanos }
end

-- a sequence of operations on one pool: add, claim (a report sent), fail (its claim given back), accept
for i, ops in ipairs(input.drops) do
  local pool = drops.new()
  local claims, told, min = {}, { queue_full = 0, send_failed = 0, encode_failed = 0 }, 0
  for _, op in ipairs(ops) do
    if op[1] == "add" then
      pool:add(op[2], op[3])
    elseif op[1] == "claim" then
      claims[#claims + 1] = pool:claim() or false
    elseif #claims > 0 then
      local c = table.remove(claims, op[2] % #claims + 1)
      if c and op[1] == "fail" then
        pool:give_back(c)
      elseif c then
        for k, v in pairs(c) do told[k] = told[k] + v end
      end
    end
    for _, k in ipairs(drops.KINDS) do
      if pool[k] < min then min = pool[k] end
    end
  end
  for _, c in ipairs(claims) do -- still in flight at the end: they fail
    if c then pool:give_back(c) end
  end
  out.drops[i] = { told = told, untold = pool:untold(), min = min }
end

for i, m in ipairs(input.messages) do
  out.messages[i] = event.safe_message(m) or cjson.null
end

for i, t in ipairs(input.time_reasons) do
  out.time_reasons[i] = jwt_claims.time_reason({ exp = t[1] ~= cjson.null and t[1] or nil,
                                                 nbf = t[2] ~= cjson.null and t[2] or nil }, t[3], t[4])
    or cjson.null
end

-- an error body as the body filter keeps it (a bounded prefix of what the upstream or plugin sent), then
-- the message the event would carry
for i, body in ipairs(input.bodies or {}) do
  local prefix = body:sub(1, event.BODY_CAPTURE_MAX)
  local ok, message = pcall(event.message_of_body, prefix)
  out.bodies[i] = ok and (event.safe_message(message) or cjson.null) or { error = message }
end

-- a packed capture written straight into the batch buffer (event.write_packed) and the same capture as an
-- event table (event.from_packed + the adapters' overrides) through the table encoder: bytes or the error
local protobuf = require("authwire.protobuf")
local function unhex(h)
  return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end))
end
local function hex(b)
  return (b:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end
local function opt(v)
  if v == cjson.null then
    return nil
  end
  return v
end
for i, c in ipairs(input.packed or {}) do
  local packed, host, ua = unhex(c.packed), unhex(c.host), opt(c.ua) and unhex(c.ua)
  local opts = { gateway = c.gateway, node = opt(c.node), version = "1.0" }
  local auth = opt(c.auth)
  local request_id, status = opt(c.request_id), opt(c.status)
  local results = {}
  for k, build in ipairs({
    function()
      return event.write_packed(packed, host, ua, c.start / 1000, c.now / 1000, opts, opt(c.route_id),
                                opt(c.service_id), auth, request_id, status)
    end,
    function()
      local ev = event.from_packed(packed, host, ua, c.start / 1000, c.now / 1000, opts)
      ev.route_id, ev.service_id, ev.auth = opt(c.route_id), opt(c.service_id), auth
      ev.request_id = request_id or ev.request_id
      ev.http.status = status or ev.http.status
      return ev
    end,
  }) do
    local err
    local bytes, n = protobuf.encode_events(1, build, function(e) err = e end)
    results[k] = n == 1 and hex(bytes) or { error = err }
  end
  out.packed[i] = results
end

print(cjson.encode(out))

-- authwire for Kong 3.x (read against 3.9.3 and 3.4.2): reports every request's authentication outcome
-- (method, success or failure and why, consumer, non-secret credential id) with its TCP 4-tuple to the
-- authwire sidecar over gRPC-Web. Batching and retries are Kong's own queue (kong.tools.queue), one queue per
-- plugin instance; see delivery.lua for how its parameters and drops are handled.
--
-- Kong does not guard log handlers (kong/init.lua:461 calls each plugin's log() unprotected): an error here
-- would skip every later plugin's log phase (prometheus, http-log, opentelemetry ...) and Kong's own after-log
-- work. So log() and body_filter() never raise: a failure is a counter and a rate-limited warning.
-- Only ids leave the gateway: never an Authorization header, API key, password, token or signature.
-- The gateway-neutral parts live in gateway-plugins/lua/authwire/ (must be on lua_package_path).
local client = require("authwire.grpc_web_client")
local ledger_mod = require("authwire.ledger")
local event = require("authwire.event")
local protobuf = require("authwire.protobuf")
local delivery_mod = require("kong.plugins.authwire.delivery")
local outcome = require("kong.plugins.authwire.outcome")

local kong = kong
local ngx = ngx
local pcall, tostring, type = pcall, tostring, type

local AuthwireHandler = {
  PRIORITY = 15, -- log phase, just above opentelemetry (14) and the other loggers
  VERSION = "0.2.0",
}

-- per-worker delivery bookkeeping (AuthwireHandler.stats())
local ledger = ledger_mod.new("dropped_queue_full", function(...) kong.log.warn(...) end)

local function body_filter(conf)
  local ctx = kong.ctx.plugin
  if ctx.aw_done or kong.client.get_credential() or kong.response.get_status() < 400 then
    ctx.aw_done = true
    return
  end
  ctx.body = event.body_prefix(ctx.body)
end

function AuthwireHandler:body_filter(conf)
  local ok, err = pcall(body_filter, conf)
  if not ok then
    ledger:warn_limited("authwire: body_filter: ", err)
  end
end

-- Log phase: capture what the event needs (the auth part is decided here, with the PDK). The event
-- tables are built and encoded in the queue's timer, a batch at a time, where LuaJIT compiles the loop.
local function capture(conf)
  local var = ngx.var
  local c = event.capture_var(var, conf)
  c.node = conf.node or kong.node.get_hostname()
  -- the PDK's view where it has one: TCP peer vs the forwarded (trusted real-ip) client
  c.peer_ip, c.peer_port = kong.client.get_ip(), kong.client.get_port()
  c.forwarded_ip = kong.client.get_forwarded_ip()
  c.server_port_pdk = kong.request.get_port()
  c.kong_request_id = var.kong_request_id
  c.method = kong.request.get_method()
  c.status_pdk = kong.response.get_status()
  local route, service = kong.router.get_route(), kong.router.get_service()
  c.route_id = route and route.id and tostring(route.id) or nil
  c.service_id = service and service.id and tostring(service.id) or nil
  c.auth = outcome.decide(conf, c.status_pdk, kong.ctx.plugin.body)
  return c
end

local scratch = { opts = { gateway = "kong" } } -- refilled per event: each is encoded before the next

local function to_bytes(c)
  local opts = scratch.opts
  opts.node, opts.version = c.node, kong.version
  local ev = event.from_captured(c, opts, scratch.ev)
  scratch.ev = ev
  ev.client.ip, ev.client.port = c.peer_ip, c.peer_port
  ev.forwarded_for = c.forwarded_ip ~= c.peer_ip and c.forwarded_ip or nil
  ev.server.port = c.server_port_pdk
  ev.request_id = c.kong_request_id or ev.request_id
  ev.http.method, ev.http.status = c.method, c.status_pdk
  ev.route_id, ev.service_id, ev.auth = c.route_id, c.service_id, c.auth
  return protobuf.encode_auth_event(ev)
end

local function entry_bytes(e)
  if type(e) == "string" then
    return e -- encoded in the log phase (queue.max_bytes set)
  end
  return to_bytes(e)
end

local function encode_failed(err)
  ledger:encode_failed(err)
end

-- the events part of one ReportRequest, framed once: retries send these bytes again
local function encode_batch(entries)
  return protobuf.frame_events(protobuf.encode_each(entries, entry_bytes, encode_failed))
end

local delivery = delivery_mod.new("authwire", ledger, encode_batch, to_bytes, client.report_batch)

local function log(conf)
  local ok, entry = pcall(capture, conf)
  if not ok then
    ledger:count("encode_errors", 1)
    ledger:warn_limited("authwire: cannot capture the request: ", entry)
    return
  end
  delivery:enqueue(conf, entry)
end

function AuthwireHandler:log(conf)
  local ok, err = pcall(log, conf)
  if not ok then
    ledger:queue_full("authwire: cannot queue the event: ", err)
  end
end

--- This worker's counters.
function AuthwireHandler.stats()
  local s = ledger:stats()
  s.queues = delivery:pending()
  return s
end

return AuthwireHandler

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

-- Per body chunk: only failures keep a prefix (the message), so the status decides first; ngx.status is what
-- kong.response.get_status() returns (pdk/response.lua), without its phase check.
local function body_filter(conf)
  if ngx.status < 400 or ngx.ctx.authenticated_credential then
    return
  end
  local ctx = kong.ctx.plugin
  ctx.body = event.body_prefix(ctx.body)
end

function AuthwireHandler:body_filter(conf)
  local ok, err = pcall(body_filter, conf)
  if not ok then
    ledger:warn_limited("authwire: body_filter: ", err)
  end
end

-- Log phase: capture what the event needs (the auth part is decided here). The event tables are built and
-- encoded in the queue's timer, a batch at a time, where LuaJIT compiles the loop.
-- The PDK getters this needs read ngx.var and ngx.ctx behind a phase check that reads ngx.ctx.KONG_PHASE
-- (pdk/private/phases.lua check_phase): seven of them cost ≈ 4 µs per request here, so the values come
-- from where those getters read them (Kong 3.9.3 and 3.4.2): kong.client.get_ip / get_port /
-- get_forwarded_ip = $realip_remote_addr or $remote_addr, $realip_remote_port or $remote_port, $remote_addr
-- (pdk/client.lua:52-121; from_captured reads the same variables, from the packed one);
-- kong.request.get_port = $server_port; kong.request.get_method = the request's method ($request_method
-- for a main request); kong.response.get_status = ngx.status; kong.router.get_route / get_service =
-- ngx.ctx.route / ngx.ctx.service (pdk/router.lua:36-60).
local function capture(conf)
  local var, ctx = ngx.var, ngx.ctx
  local c = event.capture_var(var, conf)
  c.node = conf.node or kong.node.get_hostname() -- cached by the PDK after the first call
  c.kong_request_id = var.kong_request_id
  local status = ngx.status
  c.status = status
  local route, service = ctx.route, ctx.service
  c.route_id = route and route.id and tostring(route.id) or nil
  c.service_id = service and service.id and tostring(service.id) or nil
  c.auth = outcome.decide(conf, status, ctx)
  return c
end

local scratch = { opts = { gateway = "kong" } } -- refilled per event: each is encoded before the next

-- the event table of a captured entry (encoded by the caller: one buffer for the batch)
local function build(c)
  local opts = scratch.opts
  opts.node, opts.version = c.node, kong.version
  local ev = event.from_captured(c, opts, scratch.ev)
  scratch.ev = ev
  ev.request_id = c.kong_request_id or ev.request_id
  ev.http.status = c.status
  ev.route_id, ev.service_id, ev.auth = c.route_id, c.service_id, c.auth
  return ev
end

local function to_bytes(c)
  return protobuf.encode_auth_event(build(c))
end

local function entry_event(e)
  if type(e) == "string" then
    return e -- encoded in the log phase (queue.max_bytes set)
  end
  if e.packed then -- written straight into the batch's buffer
    local opts = scratch.opts
    opts.node, opts.version = e.node, kong.version
    return event.write_packed(e.packed, e.host, e.http_user_agent, e.start_time, e.now, opts, e.route_id,
                              e.service_id, e.auth, e.kong_request_id, e.status)
  end
  return build(e)
end

local function encode_failed(err)
  ledger:encode_failed(err)
end

-- the events part of one ReportRequest, straight into one buffer and framed once: retries send these bytes
-- again. Returns the bytes and how many events they hold.
local function encode_batch(entries)
  return protobuf.encode_events(entries, entry_event, encode_failed)
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

-- authwire for Kong 3.x: reports every request's authentication outcome (method, success or failure and
-- why, consumer, non-secret credential id) with its TCP 4-tuple to the authwire sidecar over gRPC-Web.
-- Batching and retries use kong.tools.queue (the handler runs in its timer).
--
-- Kong records no "which auth plugin" field: it is inferred from the credential's shape on success and
-- from the failure message / the credential the request carried on failure.
-- Only ids leave the gateway: never an Authorization header, API key, password, token or signature.
-- The gateway-neutral parts live in gateway-plugins/lua/authwire/ (must be on lua_package_path).
local Queue = require("kong.tools.queue")
local client = require("authwire.grpc_web_client")
local credentials = require("authwire.credentials")
local ledger_mod = require("authwire.ledger")
local event = require("authwire.event")
local jwt_claims = require("authwire.jwt_claims")
local protobuf = require("authwire.protobuf")
local reasons = require("authwire.reasons")

local kong = kong
local ngx = ngx
local type, tostring = type, tostring

local AuthwireHandler = {
  PRIORITY = 15, -- log phase, just above opentelemetry (14) and the other loggers
  VERSION = "0.1.0",
}

-- per-worker delivery bookkeeping (AuthwireHandler.stats())
local ledger = ledger_mod.new("dropped_queue_full", function(...) kong.log.warn(...) end)
local failing_since = {}     -- first entry of a failing batch -> time of its first attempt
local encode_batch -- defined with the event builders below

local QUEUE_DEFAULTS = { max_batch_size = 1, max_coalescing_delay = 1, max_entries = 10000,
                         max_retry_time = 60, initial_retry_delay = 0.01, max_retry_delay = 60 }

local function queue_param(queue_conf, name)
  local v = queue_conf[name]
  if v == nil or v == ngx.null then
    return QUEUE_DEFAULTS[name]
  end
  return v
end

-- The queue handler: one ReportRequest per batch. Runs in kong.tools.queue's timer.
local function send(conf, entries)
  local key = entries[1]
  local started = failing_since[key] or ngx.now()
  local encoded = encode_batch(entries)
  local resp, err = client.report_batch(conf, encoded, ledger.unreported)
  if resp then
    failing_since[key] = nil
    ledger:delivered(#entries, resp)
    return true
  end
  ledger:send_failed()
  -- kong.tools.queue gives a batch up once now() - (time of its first attempt) > max_retry_time, checked
  -- right after this returns (ngx.now() is the same cached value there): count that drop here.
  if ngx.now() - started > queue_param(conf.queue or {}, "max_retry_time") then
    failing_since[key] = nil
    ledger:given_up(#entries)
  else
    failing_since[key] = started
  end
  return false, err
end

function AuthwireHandler:body_filter(conf)
  if kong.client.get_consumer() or kong.response.get_status() < 400 then
    return
  end
  local ctx = kong.ctx.plugin
  ctx.body = event.body_prefix(ctx.body)
end

-- Which auth plugin made this credential, and its non-secret id.
local function plugin_of_credential(c, conf)
  if c.algorithm and c.key then
    return "jwt", c.key           -- the key_claim value (iss by default); `secret` never read
  elseif c.username and c.secret then
    return "hmac-auth", c.username
  elseif c.username then
    return "basic-auth", c.username  -- the stored password is never read
  elseif c.client_id then
    return "oauth2", c.client_id
  elseif c.key then
    return "key-auth", c.id         -- the key is the secret: report the credential's entity id
  end
  return nil, c.id
end

local SCHEMES = { basic = "basic-auth", bearer = "jwt", hmac = "hmac-auth", signature = "hmac-auth",
                  key = "key-auth" }

local function plugin_of_scheme(header)
  local scheme = type(header) == "string" and header:match("^%s*([%a%-]+)")
  return scheme and SCHEMES[scheme:lower()] or nil
end

-- For failures: the scheme of the request's Authorization header, an API key header, or the challenge
-- (WWW-Authenticate) the auth plugin answered with.
local function plugin_of_request(authorization, key_header_present)
  local plugin = plugin_of_scheme(authorization)
  if plugin then
    return plugin
  end
  if key_header_present then
    return "key-auth"
  end
  return plugin_of_scheme(kong.response.get_header("WWW-Authenticate"))
end

local function auth_of(conf, status)
  local consumer = kong.client.get_consumer()
  local credential = kong.client.get_credential()
  local consumer_name = consumer and (consumer.username or consumer.custom_id or consumer.id)
  if consumer and credential then
    local plugin, id = plugin_of_credential(credential, conf)
    local jwt
    if plugin == "jwt" then
      jwt = jwt_claims.from_token(kong.ctx.shared.authenticated_jwt_token)
    end
    return event.auth({ attempted = true, success = true, plugin = plugin, consumer = consumer_name,
                        credential_id = event.credential_id(id, conf), jwt = jwt })
  end
  local authorization = kong.request.get_header("authorization")
  if consumer then
    -- an auth plugin's `anonymous` consumer: credentials were missing or invalid, the request allowed
    return event.auth({ attempted = true, success = false, consumer = consumer_name, gateway = "kong",
                        plugin = plugin_of_request(authorization, kong.request.get_header("apikey")),
                        status = status, message = "anonymous consumer" })
  end
  if (status ~= 401 and status ~= 403) or kong.response.get_source() ~= "exit" then
    return event.auth({ attempted = false })
  end
  local message = event.message_of_body(kong.ctx.plugin.body)
  local reason, hinted = reasons.classify("kong", status, message)
  local plugin = hinted or plugin_of_request(authorization, kong.request.get_header("apikey"))
  local a = { attempted = true, success = false, plugin = plugin, status = status, message = message,
              gateway = "kong" }
  local claimed
  if plugin == "basic-auth" then
    claimed = credentials.basic_username(authorization)
  elseif plugin == "hmac-auth" then
    claimed = credentials.hmac_key_id(authorization)
  elseif plugin == "jwt" then
    a.jwt, claimed = credentials.jwt(authorization, conf.jwt_key_claim_name)
  end
  a.credential_id = event.credential_id(claimed, conf)
  local ev = event.auth(a)
  if reason == "invalid_credentials" and not authorization and plugin ~= "key-auth" then
    ev.reason = "missing_credentials" -- Kong says "Unauthorized" for both; nothing was sent
  end
  return ev
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
  c.auth = auth_of(conf, c.status_pdk)
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

local function encode_failed(err)
  ledger:encode_failed(err)
end

function encode_batch(entries)
  return protobuf.encode_each(entries, to_bytes, encode_failed)
end

function AuthwireHandler:log(conf)
  local ok, entry = pcall(capture, conf)
  if not ok then
    ledger:count("encode_errors", 1)
    ledger:warn_limited("authwire: cannot capture the request: ", entry)
    return
  end
  local queue_conf = Queue.get_params(conf)
  -- Our bound, checked before Kong's queue would silently drop its oldest entry: counted per request.
  if ledger.pending >= queue_param(queue_conf, "max_entries") then
    ledger:queue_full("authwire: ", ledger.pending, " events pending (sidecar slow or down); dropping new events")
    return
  end
  local queued, qerr = Queue.enqueue(queue_conf, send, conf, entry)
  if not queued then
    ledger:queue_full("authwire: cannot queue the event: ", qerr)
    return
  end
  ledger:queued()
end

--- This worker's counters.
function AuthwireHandler.stats()
  return ledger:stats()
end

return AuthwireHandler

-- authwire for Apache APISIX 3.x: reports every request's authentication outcome (method, success or
-- failure and why, consumer, non-secret credential id) with its TCP 4-tuple to the authwire sidecar over
-- gRPC-Web. Batching and retries use APISIX's batch-processor manager; sending happens in its timers.
--
-- Phases:  rewrite (priority 2650, above every auth plugin): note which auth plugins the route has;
--          body_filter: keep a bounded prefix of 4xx bodies of unauthenticated requests (the message);
--          log: build the event from ctx (real-ip aware), encode it, hand it to the batch processor.
-- Only ids leave the gateway: never an Authorization header, API key, password, token or signature.
-- The gateway-neutral parts live in gateway-plugins/lua/authwire/ (put both on extra_lua_path).
local core = require("apisix.core")
local bp_manager_mod = require("apisix.utils.batch-processor-manager")
local client = require("authwire.grpc_web_client")
local credentials = require("authwire.credentials")
local ledger_mod = require("authwire.ledger")
local event = require("authwire.event")
local protobuf = require("authwire.protobuf")

local ngx = ngx
local pairs, type, tostring, setmetatable = pairs, type, tostring, setmetatable

local plugin_name = "authwire"
local batch_processor_manager = bp_manager_mod.new(plugin_name)

-- APISIX auth plugins, highest priority first (the order APISIX runs them in)
local AUTH_PLUGINS = { "multi-auth", "openid-connect", "cas-auth", "ldap-auth", "hmac-auth", "basic-auth",
                       "jwt-auth", "key-auth" }

local schema = {
  type = "object",
  properties = {
    sidecar = { type = "string", default = "127.0.0.1:9181",
                description = "authwire gRPC-Web address: host:port, [v6]:port or unix:/path" },
    connect_timeout = { type = "integer", minimum = 1, default = 1000 },
    send_timeout = { type = "integer", minimum = 1, default = 2000 },
    read_timeout = { type = "integer", minimum = 1, default = 5000 },
    keepalive_timeout = { type = "integer", minimum = 1000, default = 60000 },
    keepalive_pool = { type = "integer", minimum = 1, default = 4 },
    include_user_agent = { type = "boolean", default = true },
    pseudonymize_credentials = { type = "boolean", default = false },
    credential_hash_key = { type = "string", minLength = 16 },
    node = { type = "string", description = "gateway node name; default: the host name" },
    packed_var = { type = "string", description = "name of the authwire.event.packed_map() variable "
                                                    .. "(fewer variable reads per request)" },
    -- batch-processor settings (wrap_schema adds the rest with APISIX's defaults); ours favour prompt
    -- delivery so the sidecar can join reports to still-fresh connection facts
    batch_max_size = { type = "integer", minimum = 1, default = 200 },
    inactive_timeout = { type = "integer", minimum = 1, default = 1 },
    buffer_duration = { type = "integer", minimum = 1, default = 5 },
    max_retry_count = { type = "integer", minimum = 0, default = 3 },
    retry_delay = { type = "integer", minimum = 0, default = 1 },
    max_pending_entries = { type = "integer", minimum = 1, default = 10000 },
  },
  encrypt_fields = { "credential_hash_key" },
}
batch_processor_manager:wrap_schema(schema)

local _M = {
  version = 0.1,
  priority = 2650,
  name = plugin_name,
  schema = schema,
}

-- per-worker delivery bookkeeping (Control API: GET /v1/plugin/authwire/stats)
local ledger = ledger_mod.new("dropped_pending_full", function(...) core.log.warn(...) end)
local attempts = setmetatable({}, { __mode = "k" }) -- batch entries table -> attempts so far

function _M.check_schema(conf)
  local ok, err = core.schema.check(schema, conf)
  if not ok then
    return false, err
  end
  local _, aerr = client.parse_address(conf.sidecar)
  if aerr then
    return false, aerr
  end
  if conf.pseudonymize_credentials and not conf.credential_hash_key then
    return false, "pseudonymize_credentials needs credential_hash_key (16+ characters)"
  end
  return true
end

local function route_auth_plugins(ctx)
  local route = ctx.matched_route
  local plugins = route and route.value and route.value.plugins
  if type(plugins) ~= "table" then
    return {}
  end
  local found = {}
  for _, name in ipairs(AUTH_PLUGINS) do
    if plugins[name] ~= nil then
      found[#found + 1] = name
    end
  end
  return found
end

function _M.rewrite(conf, ctx)
  ctx.authwire_auth_plugins = route_auth_plugins(ctx)
end

function _M.body_filter(conf, ctx)
  if ctx.consumer or ngx.status < 400 then
    return
  end
  ctx.authwire_body = event.body_prefix(ctx.authwire_body)
end

-- Which plugin authenticated a consumer: the route's only auth plugin, else the shape of auth_conf.
local function plugin_of_consumer(consumer, plugins)
  if #plugins == 1 then
    return plugins[1]
  end
  local c = consumer.auth_conf or {}
  if c.key_id or c.access_key then
    return "hmac-auth"
  elseif c.username then
    return "basic-auth"
  elseif c.key and (c.secret or c.public_key or c.algorithm) then
    return "jwt-auth"
  elseif c.key then
    return "key-auth"
  end
  return plugins[1]
end

local function jwt_token(ctx)
  local route = ctx.matched_route
  local plugins = route and route.value and route.value.plugins or {}
  local jconf = plugins["jwt-auth"] or {}
  local var = ctx.var
  local header = (jconf.header or "authorization"):lower():gsub("-", "_")
  return var["http_" .. header] or var["arg_" .. (jconf.query or "jwt")]
    or var["cookie_" .. (jconf.cookie or "jwt")]
end

-- The auth part of the event. The consumer's auth_conf holds secrets (key, password, secret): only its
-- non-secret id fields are read.
local function auth_of(conf, ctx, status)
  local plugins = ctx.authwire_auth_plugins or route_auth_plugins(ctx)
  local consumer = ctx.consumer
  if consumer then
    local plugin = plugin_of_consumer(consumer, plugins)
    local c = consumer.auth_conf or {}
    local id = consumer.credential_id -- APISIX >= 3.7 credentials: a non-secret entity id
    if not id then
      if plugin == "basic-auth" then
        id = c.username
      elseif plugin == "hmac-auth" then
        id = c.key_id or c.access_key
      elseif plugin == "jwt-auth" then
        id = c.key
      end -- key-auth: the key is the secret; no id without a credential entity
    end
    local jwt
    if plugin == "jwt-auth" then
      jwt = credentials.jwt(jwt_token(ctx), "key")
    end
    return event.auth({ attempted = true, success = true, plugin = plugin,
                        consumer = ctx.consumer_name or consumer.username,
                        credential_id = event.credential_id(id, conf), jwt = jwt })
  end
  if #plugins == 0 then
    return event.auth({ attempted = false })
  end
  if status ~= 401 and status ~= 403 then
    -- rejected before authentication ran (e.g. a 4xx from a higher-priority plugin) or no auth needed
    return event.auth({ attempted = false, plugin = #plugins == 1 and plugins[1] or nil })
  end
  local message = event.message_of_body(ctx.authwire_body)
  local a = { attempted = true, success = false, status = status, message = message, gateway = "apisix" }
  local _, hinted = require("authwire.reasons").classify("apisix", status, message)
  a.plugin = (#plugins == 1 and plugins[1]) or hinted or plugins[1]
  local authorization = ctx.var.http_authorization
  local claimed
  if a.plugin == "basic-auth" then
    claimed = credentials.basic_username(authorization)
  elseif a.plugin == "hmac-auth" then
    claimed = credentials.hmac_key_id(authorization)
  elseif a.plugin == "jwt-auth" then
    a.jwt, claimed = credentials.jwt(jwt_token(ctx), "key")
  end
  a.credential_id = event.credential_id(claimed, conf)
  return event.auth(a)
end

-- Log phase: capture what the event needs (the auth part is decided here, where ctx is). The event
-- tables are built and encoded in the batch processor's timer, a batch at a time, where LuaJIT compiles
-- the loop (in the log phase the same code runs interpreted, per request).
local function capture(conf, ctx)
  local var = ctx.var
  local c = event.capture_var(var, conf)
  c.node = conf.node or var.hostname
  c.route_id = ctx.route_id and tostring(ctx.route_id) or nil
  c.service_id = ctx.service_id and tostring(ctx.service_id) or nil
  c.auth = auth_of(conf, ctx, ngx.status)
  return c
end

local VERSION = core.version and core.version.VERSION

local scratch = { opts = { gateway = "apisix" } } -- refilled per event: each is encoded before the next

local function to_bytes(c)
  local opts = scratch.opts
  opts.node, opts.version = c.node, VERSION
  local ev = event.from_captured(c, opts, scratch.ev)
  scratch.ev = ev
  ev.route_id, ev.service_id, ev.auth = c.route_id, c.service_id, c.auth
  return protobuf.encode_auth_event(ev)
end

local function encode_failed(err)
  ledger:encode_failed(err)
end

local function encode_batch(entries)
  return protobuf.encode_each(entries, to_bytes, encode_failed)
end

local function send(conf)
  return function(entries)
    local n = (attempts[entries] or 0) + 1
    attempts[entries] = n
    local encoded = encode_batch(entries)
    local resp, err = client.report_batch(conf, encoded, ledger.unreported)
    if not resp then
      ledger:send_failed()
      if n > conf.max_retry_count then
        ledger:given_up(#entries) -- the batch processor drops the batch after this attempt
      end
      return false, err
    end
    ledger:delivered(#entries, resp)
    return true
  end
end

function _M.log(conf, ctx)
  local ok, entry = pcall(capture, conf, ctx)
  if not ok then
    ledger:count("encode_errors", 1)
    ledger:warn_limited("authwire: cannot capture the request: ", entry)
    return
  end
  -- Our own bound, checked before APISIX's (which logs an error line per discarded entry): an outage
  -- must cost a counter increment per request, not a log line.
  if ledger.pending >= conf.max_pending_entries then
    ledger:queue_full("authwire: ", ledger.pending, " events pending (sidecar slow or down); dropping new events")
    return
  end
  local added = batch_processor_manager:add_entry(conf, entry)
  if added == nil then
    ledger:queue_full()
    return
  end
  if not added and not batch_processor_manager:add_entry_to_new_processor(conf, entry, ctx, send(conf)) then
    ledger:queue_full()
    return
  end
  ledger:queued()
end

--- This worker's counters.
function _M.stats()
  return ledger:stats()
end

function _M.control_api()
  return {
    {
      methods = { "GET" },
      uris = { "/v1/plugin/authwire/stats" },
      handler = function()
        return 200, _M.stats()
      end,
    },
  }
end

return _M

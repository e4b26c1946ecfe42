-- authwire for Apache APISIX 3.x: reports every request's authentication outcome (method, success or
-- failure and why, consumer, non-secret credential id) with its TCP 4-tuple to the authwire sidecar over
-- gRPC-Web. Batching and retries use APISIX's batch-processor manager; sending happens in its timers.
--
-- Phases:  body_filter: keep a bounded prefix of 4xx bodies of unauthenticated requests (the message);
--          log: copy the request's scalars and decide the auth part from ctx (the route's and the global
--          rules' auth plugins, ctx.consumer, the auth plugin's challenge), hand it to the batch processor.
--          The batch processor's timer builds, encodes and sends the events of a whole batch.
-- Only ids leave the gateway: never an Authorization header, API key, password, token or signature.
-- The gateway-neutral parts live in gateway-plugins/lua/authwire/ (put both on extra_lua_path).
local core = require("apisix.core")
local plugin = require("apisix.plugin")
local bp_manager_mod = require("apisix.utils.batch-processor-manager")
local client = require("authwire.grpc_web_client")
local credentials = require("authwire.credentials")
local ledger_mod = require("authwire.ledger")
local event = require("authwire.event")
local jwt_claims = require("authwire.jwt_claims")
local protobuf = require("authwire.protobuf")
local reasons = require("authwire.reasons")

local ngx = ngx
local type, tostring, pcall = type, tostring, pcall
local conf_version = plugin.conf_version

local plugin_name = "authwire"
local batch_processor_manager = bp_manager_mod.new(plugin_name)

-- APISIX's own backlog limit (batch-processor-manager.lua:30 at 3.18.0, plugin metadata
-- max_pending_entries overrides it). Above it add_entry() discards the entry and still returns true
-- (lines 180-196), so the plugin bounds itself below it and counts what it drops.
local APISIX_DEFAULT_MAX_PENDING = 8192

-- APISIX auth plugins (a request's consumer comes from one of them)
local AUTH_PLUGINS = { ["multi-auth"] = true, ["openid-connect"] = true, ["cas-auth"] = true,
                       ["ldap-auth"] = true, ["hmac-auth"] = true, ["basic-auth"] = true,
                       ["jwt-auth"] = true, ["key-auth"] = true, ["authz-keycloak"] = true,
                       ["wolf-rbac"] = true, ["forward-auth"] = true }

local schema = {
  type = "object",
  properties = {
    sidecar = { type = "string", default = "127.0.0.1:9181",
                description = "authwire gRPC-Web address: host:port, [v6]:port or unix:/path" },
    token = { type = "string", minLength = 1,
              description = "bearer token of the sidecar's TCP listener (sent as authorization: Bearer ...)" },
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
    clock_skew = { type = "integer", minimum = 0, default = 0,
                   description = "seconds of leeway when a refused JWT's exp/nbf decide EXPIRED or "
                                 .. "CLOCK_SKEW (as jwt-auth's lifetime_grace_period)" },
    -- batch-processor settings (wrap_schema adds the rest with APISIX's defaults); ours favour prompt
    -- delivery so the sidecar can join reports to still-fresh connection facts
    batch_max_size = { type = "integer", minimum = 1, default = 200 },
    inactive_timeout = { type = "integer", minimum = 1, default = 1 },
    buffer_duration = { type = "integer", minimum = 1, default = 5 },
    max_retry_count = { type = "integer", minimum = 0, default = 3 },
    retry_delay = { type = "integer", minimum = 0, default = 1 },
    max_pending_entries = { type = "integer", minimum = 1, default = 4096,
                            description = "events pending for this conf (one batch processor); all confs "
                                          .. "together stay below APISIX's own backlog limit" },
  },
  encrypt_fields = { "credential_hash_key", "token" },
}
batch_processor_manager:wrap_schema(schema)

local metadata_schema = batch_processor_manager:wrap_metadata_schema({ type = "object", properties = {} })

local _M = {
  version = 0.2,
  priority = 2650,
  name = plugin_name,
  schema = schema,
  metadata_schema = metadata_schema,
}

-- per-worker delivery bookkeeping (Control API: GET /v1/plugin/authwire/stats); a lane per conf version,
-- which is exactly how the batch-processor manager keys its processors (buffers[conf_version(conf)])
local ledger = ledger_mod.new("dropped_pending_full", function(...) core.log.warn(...) end)

function _M.check_schema(conf, schema_type)
  if schema_type == core.schema.TYPE_METADATA then
    return core.schema.check(metadata_schema, conf)
  end
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

-- APISIX's backlog limit, re-read once a second (plugin metadata can change at run time).
local backlog_limit, backlog_limit_at = APISIX_DEFAULT_MAX_PENDING, -1
local function apisix_backlog_limit()
  local now = ngx.now()
  if now - backlog_limit_at >= 1 then
    backlog_limit_at = now
    local md = plugin.plugin_metadata(plugin_name)
    backlog_limit = md and md.value and md.value.max_pending_entries or APISIX_DEFAULT_MAX_PENDING
  end
  return backlog_limit
end

function _M.body_filter(conf, ctx)
  -- also with a consumer: on a route with two auth plugins the second can refuse what the first accepted
  if ngx.status < 400 then
    return
  end
  ctx.authwire_body = event.body_prefix(ctx.authwire_body)
end

-- The auth plugins that ran for this request: the route's (merged with its service, plugin config and
-- consumer: ctx.plugins) and the global rules' (ctx.global_plugins), each a flat {plugin, conf, ...} list.
-- Returns name -> conf (and [1] = the first name) and how many. The table is reused: the log phase never
-- yields between filling it and the last read, so one per worker is enough (no allocation per request).
local found, found_names = {}, {}

local function add_auth_plugins(list, n)
  if type(list) ~= "table" then
    return n
  end
  for i = 1, #list, 2 do
    local p = list[i]
    local name = type(p) == "table" and p.name
    if name and AUTH_PLUGINS[name] and not found[name] then
      local conf = list[i + 1] or true
      found[name], n = conf, n + 1
      found_names[n] = name
      if n == 1 then
        found[1] = name
      end
      if name == "multi-auth" and type(conf) == "table" and type(conf.auth_plugins) == "table" then
        -- multi-auth runs its auth_plugins itself (any one may succeed): they are candidates too
        for _, sub in ipairs(conf.auth_plugins) do
          local sub_name, sub_conf = type(sub) == "table" and next(sub)
          if sub_name and AUTH_PLUGINS[sub_name] and not found[sub_name] then
            found[sub_name], n = sub_conf, n + 1
            found_names[n] = sub_name
          end
        end
      end
    end
  end
  return n
end

local function auth_plugins(ctx)
  for i = 1, #found_names do
    found[found_names[i]], found_names[i] = nil, nil
  end
  found[1] = nil
  local n = add_auth_plugins(ctx.plugins, 0)
  return found, add_auth_plugins(ctx.global_plugins, n)
end

-- Which plugin authenticated a consumer: the only auth plugin that ran, else the shape of auth_conf
-- (only its field *names* are looked at here).
local function plugin_of_consumer(consumer, found, n)
  if n == 1 then
    return found[1]
  end
  local c = consumer.auth_conf or {}
  if (c.key_id or c.access_key) and found["hmac-auth"] then
    return "hmac-auth"
  elseif c.username and c.password ~= nil and found["basic-auth"] then
    return "basic-auth"
  elseif c.key and (c.secret or c.public_key or c.algorithm) and found["jwt-auth"] then
    return "jwt-auth"
  elseif c.key and found["key-auth"] then
    return "key-auth"
  end
  return found[1]
end

local function jwt_token(ctx, jconf)
  jconf = type(jconf) == "table" and jconf or {}
  local var = ctx.var
  local header = (jconf.header or "authorization"):lower():gsub("-", "_")
  return var["http_" .. header] or var["arg_" .. (jconf.query or "jwt")]
    or var["cookie_" .. (jconf.cookie or "jwt")]
end

local function jwt_key_claim(jconf)
  return type(jconf) == "table" and jconf.key_claim_name or "key"
end

-- The auth part of the event. The consumer's auth_conf holds secrets (key-auth's key, passwords, HMAC and
-- JWT secrets): only basic-auth's username and hmac-auth's key_id are read from it; a JWT's id is the key
-- claim of the request's own token, never auth_conf.key (which is the API key when key-auth authenticated).
local function auth_of(conf, ctx, status, start_time)
  local consumer = ctx.consumer
  if not consumer and status ~= 401 and status ~= 403 then
    -- the common unauthenticated case first: no plugin list walk
    if not (ctx.plugins or ctx.global_plugins) then
      return event.auth({ attempted = false })
    end
  end
  local found, n = auth_plugins(ctx)
  local message
  if consumer and (status == 401 or status == 403) then
    -- auth plugins all run (AND): one can attach a consumer and the next refuse the request
    message = event.message_of_body(ctx.authwire_body)
    local _, hinted = reasons.classify("apisix", status, message)
    if hinted or reasons.apisix_plugin_of_challenge(ngx.header["WWW-Authenticate"]) then
      consumer = nil
    end
  end
  if consumer then
    local name = plugin_of_consumer(consumer, found, n)
    local c = consumer.auth_conf or {}
    local id = consumer.credential_id -- APISIX >= 3.7 credentials: a non-secret entity id
    local jwt
    if name == "jwt-auth" then
      local key
      jwt, key = credentials.jwt(jwt_token(ctx, found["jwt-auth"]), jwt_key_claim(found["jwt-auth"]))
      id = id or key
    elseif not id and name == "basic-auth" then
      id = c.username
    elseif not id and name == "hmac-auth" then
      id = c.key_id or c.access_key
    end -- key-auth: the key is the secret; no id without a credential entity
    return event.auth({ attempted = true, success = true, plugin = name,
                        consumer = ctx.consumer_name or consumer.username,
                        credential_id = event.credential_id(id, conf), jwt = jwt })
  end
  if n == 0 then
    return event.auth({ attempted = false })
  end
  if status ~= 401 and status ~= 403 then
    -- rejected before authentication ran (e.g. a 4xx from a higher-priority plugin) or no auth needed
    return event.auth({ attempted = false, plugin = n == 1 and found[1] or nil })
  end
  message = message or event.message_of_body(ctx.authwire_body)
  local a = { attempted = true, success = false, status = status, message = message, gateway = "apisix" }
  local _, hinted = reasons.classify("apisix", status, message)
  -- the plugin that answered: the only one, the one whose message it is, its challenge (every APISIX auth
  -- plugin sets its own WWW-Authenticate scheme; multi-auth's are its last sub-plugin's), or the first one
  a.plugin = (n == 1 and found[1]) or hinted
    or reasons.apisix_plugin_of_challenge(ngx.header["WWW-Authenticate"]) or found[1]
  local authorization = ctx.var.http_authorization
  local claimed
  if a.plugin == "basic-auth" then
    claimed = credentials.basic_username(authorization)
  elseif a.plugin == "hmac-auth" then
    claimed = credentials.hmac_key_id(authorization)
  elseif a.plugin == "jwt-auth" then
    a.jwt, claimed = credentials.jwt(jwt_token(ctx, found["jwt-auth"]), jwt_key_claim(found["jwt-auth"]))
  end
  a.credential_id = event.credential_id(claimed, conf)
  local ev = event.auth(a)
  if a.plugin == "jwt-auth" and message == "failed to verify jwt" then
    -- APISIX 3.18's jwt-auth says this for a bad signature, an algorithm mismatch, an expired and a
    -- not-yet-valid token alike (jwt-auth.lua 327-362): the token's own claims tell expiry apart
    ev.reason = jwt_claims.time_reason(a.jwt, start_time, conf.clock_skew) or ev.reason
  end
  return ev
end

-- Worker-constant values, read once (each ctx.var read is a C call)
local hostname

-- Log phase: capture what the event needs (the auth part is decided here, where ctx is). The event
-- tables are built and encoded in the batch processor's timer, a batch at a time, where LuaJIT compiles
-- the loop (in the log phase the same code runs interpreted, per request).
local function capture(conf, ctx)
  local var = ctx.var
  local c = event.capture_var(var, conf)
  if not conf.node and not hostname then
    hostname = var.hostname
  end
  c.node = conf.node or hostname
  c.route_id = ctx.route_id and tostring(ctx.route_id) or nil
  c.service_id = ctx.service_id and tostring(ctx.service_id) or nil
  c.auth = auth_of(conf, ctx, ngx.status, c.start_time)
  return c
end

local VERSION = core.version and core.version.VERSION

local scratch = { opts = { gateway = "apisix" } } -- refilled per event: each is encoded before the next

local function build_event(c)
  local opts = scratch.opts
  opts.node, opts.version = c.node, VERSION
  if c.packed then -- written straight into the batch's buffer
    return event.write_packed(c.packed, c.host, c.http_user_agent, c.start_time, c.now, opts, c.route_id,
                              c.service_id, c.auth)
  end
  local ev = event.from_captured(c, opts, scratch.ev)
  scratch.ev = ev
  ev.route_id, ev.service_id, ev.auth = c.route_id, c.service_id, c.auth
  return ev
end

local function encode_failed(err)
  ledger:encode_failed(err)
end

-- batch entries table (the same table on every retry: batch-processor.lua 94-109) -> its state:
-- {n = events, bad = events that failed to encode (already counted), framed = the encoded events, once}
local batches = setmetatable({}, { __mode = "k" })

local function attempt(conf, lane, entries)
  local b = batches[entries]
  if not b then
    b = { n = #entries, tries = 0 }
    batches[entries] = b
    ledger:count("batches", 1)
    local framed, good = protobuf.encode_events(entries, build_event, encode_failed)
    b.bad, b.framed = b.n - good, framed
  end
  b.tries = b.tries + 1
  local resp, err = client.report_batch(conf, b.framed, ledger.unreported)
  if not resp then
    ledger:send_failed()
    ledger:warn_limited("authwire: cannot report to ", conf.sidecar, ": ", err)
    if b.tries > conf.max_retry_count then
      -- the batch processor drops the batch after this attempt (batch-processor.lua 106-115)
      batches[entries] = nil
      ledger:given_up(b.n - b.bad, lane)
      ledger:settle(b.bad, lane)
    end
    return false, err
  end
  batches[entries] = nil
  ledger:delivered(b.n, resp, lane)
  return true
end

-- The batch processor's func(entries): never raises (an error would abort APISIX's timer and leave the
-- batch counted as pending in APISIX's backlog forever).
local function sender(conf, lane)
  return function(entries)
    local ok, res, err = pcall(attempt, conf, lane, entries)
    if ok then
      return res, err
    end
    -- not reached in normal operation: whatever raised, the batch is dropped and counted once
    local b = batches[entries]
    batches[entries] = nil
    local bad = b and b.bad or 0
    ledger:encode_failed(res, #entries - bad)
    ledger:settle(#entries, lane)
    return true
  end
end

function _M.log(conf, ctx)
  local lane = ledger:lane(conf_version(conf))
  -- Our bounds, checked before APISIX's: per conf (one dead sidecar address fills only its own lane) and
  -- in total below APISIX's backlog limit, whose discards the caller cannot see. An outage costs a
  -- counter increment per request, not a log line.
  if lane.pending >= conf.max_pending_entries or ledger.pending >= apisix_backlog_limit() then
    ledger:queue_full("authwire: ", lane.pending, " events pending for ", conf.sidecar,
                      " (sidecar slow or down); dropping new events")
    return
  end
  local ok, entry = pcall(capture, conf, ctx)
  if not ok then
    ledger:encode_failed(entry)
    return
  end
  if not batch_processor_manager:add_entry(conf, entry) then
    if not lane.send then
      lane.send = sender(conf, lane)
    end
    if not batch_processor_manager:add_entry_to_new_processor(conf, entry, ctx, lane.send) then
      ledger:queue_full("authwire: cannot create a batch processor")
      return
    end
  end
  ledger:queued(lane)
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

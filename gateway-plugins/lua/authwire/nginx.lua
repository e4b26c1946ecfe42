-- Reporter for a plain nginx + ngx_lua (or OpenResty) server: the gateway-neutral path that the APISIX
-- and Kong adapters mirror. The application's own auth step (access_by_lua / rewrite_by_lua) records its
-- outcome in ngx.ctx.authwire:
--   ngx.ctx.authwire = { plugin = "key-auth", success = true, consumer = "alice", credential_id = "k1" }
--   ngx.ctx.authwire = { plugin = "jwt-auth", success = false, message = "JWT token invalid" }
-- (no ngx.ctx.authwire = the request did not authenticate). Then:
--   body_filter_by_lua_block { require("authwire.nginx").body_filter() }   -- failure message capture
--   log_by_lua_block { require("authwire.nginx").log(conf) }
-- conf = reporter settings (authwire.reporter DEFAULTS) + gateway, node, include_user_agent,
-- pseudonymize_credentials, credential_hash_key, packed_var (see authwire.event.packed_map).
local reporter = require("authwire.reporter")
local event = require("authwire.event")

local ngx = ngx

local _M = {}

function _M.body_filter()
  local a = ngx.ctx.authwire
  if a and not a.success and ngx.status >= 400 then
    a.body = event.body_prefix(a.body)
  end
end

-- Timer side: one queued request -> AuthEvent table (the reporter encodes the batch into one buffer).
-- Queued: the packed variable (or, without conf.packed_var, an event.capture_var() table), $host,
-- $http_user_agent, start time, now, ngx.ctx.authwire.
local function builder(conf)
  local opts = { gateway = conf.gateway or "other", node = conf.node, version = conf.version }
  local gateway = conf.gateway
  -- refilled per event: each is encoded before the next is built
  local scratch, scratch_auth, args = nil, {}, {}
  local function auth_of(a, status)
    if a then
      args.attempted, args.plugin, args.success, args.consumer = true, a.plugin, a.success, a.consumer
      args.credential_id, args.status = event.credential_id(a.credential_id, conf), status
      args.message = a.message or (not a.success and event.message_of_body(a.body) or nil)
      args.gateway, args.jwt = gateway, a.jwt
    else
      args.attempted, args.plugin = false, nil
    end
    return event.auth(args, scratch_auth)
  end
  return function(packed, host, ua, start, now, a)
    if type(packed) == "string" then
      -- the status only matters to a failure's reason
      local status = a and not a.success and event.packed_number(packed, 11) or nil
      return event.write_packed(packed, host, ua, start, now, opts, nil, nil, auth_of(a, status))
    end
    local ev = event.from_captured(packed, opts, scratch)
    scratch = ev
    ev.auth = auth_of(a, ev.http.status)
    return ev
  end
end

local reporters = setmetatable({}, { __mode = "k" }) -- conf table -> its reporter

local function reporter_for(conf)
  local r = reporters[conf]
  if not r then
    r = reporter.new(conf, builder(conf))
    reporters[conf] = r
  end
  return r
end

-- Only scalars are kept per request: the packed variable, $host, $http_user_agent, the two clock readings
-- and the auth step's own ngx.ctx.authwire table (no table of ours, no string built).
local function capture_and_push(conf, r)
  if conf.ablate == "nothing" then return true end
  if conf.ablate == "reqid" then local _ = ngx.var.request_id return true end
  if conf.ablate == "varonly" then local _ = ngx.var.authwire_vars return true end
  local var = ngx.var
  if conf.ablate == "capture" then
    local _ = {var.authwire_vars, var.host, var.http_user_agent, ngx.req.start_time(), ngx.now(), ngx.ctx.authwire}
    return true
  end
  local packed_var = conf.packed_var
  local packed = packed_var and var[packed_var]
  if packed then
    return r:push(packed, var.host, conf.include_user_agent ~= false and var.http_user_agent or nil,
                  ngx.req.start_time(), ngx.now(), ngx.ctx.authwire)
  end
  return r:push(event.capture_var(var, conf), nil, nil, nil, nil, ngx.ctx.authwire)
end

--- Capture the current request's values and queue them (the event is built and encoded in the sending
-- timer). Never raises; returns true when queued.
function _M.log(conf)
  local r = reporters[conf] or reporter_for(conf)
  local ok, queued = pcall(capture_and_push, conf, r)
  if not ok then
    r:inc("encode_errors", 1)
    r:log_limited(ngx.ERR, "cannot capture the request: ", queued)
    return false
  end
  return queued
end

--- This worker's reporter counters (for a status endpoint).
function _M.stats(conf)
  return reporter_for(conf):stats()
end

return _M

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

-- Timer side: captured entry -> AuthEvent table (the reporter encodes the batch into one buffer).
local function builder(conf)
  local opts = { gateway = conf.gateway or "other", node = conf.node, version = conf.version }
  local scratch -- one event table refilled per event: each is encoded before the next is built
  return function(c)
    local ev = event.from_captured(c, opts, scratch)
    scratch = ev
    local a = c.auth
    if a then
      ev.auth = event.auth({
        attempted = true, plugin = a.plugin, success = a.success, consumer = a.consumer,
        credential_id = event.credential_id(a.credential_id, conf), status = ev.http.status,
        message = a.message or event.message_of_body(a.body), gateway = conf.gateway, jwt = a.jwt,
      })
    else
      ev.auth = event.auth({ attempted = false })
    end
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

local function capture_and_push(conf, r)
  local c = event.capture_var(ngx.var, conf)
  c.auth = ngx.ctx.authwire
  return r:push(c)
end

--- Capture the current request's values and queue them (the event is built and encoded in the sending
-- timer). Never raises; returns true when queued.
function _M.log(conf)
  local r = reporter_for(conf)
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

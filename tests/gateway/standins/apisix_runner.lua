-- Stand-in of APISIX's request driver, enough to run plugins the way APISIX 3.x does:
--   route match (longest prefix) -> api_ctx {var, route_id, service_id, matched_route = {value = route}}
--   -> plugins sorted by priority (high first) run rewrite, then access; a returned status code (and body)
--   ends the request through core.response.exit -> body_filter -> log (log runs for every request).
-- Plugin confs are checked with plugin.check_schema (which injects defaults), as the Admin API does.
local core = require("apisix.core")

local _M = { routes = {}, consumers = {} }

local loaded = {}
local function plugin(name)
  local p = loaded[name]
  if not p then
    p = require("apisix.plugins." .. name)
    loaded[name] = p
  end
  return p
end

--- route = {id, uri_prefix, service_id, plugins = {name = conf}}
function _M.add_route(route)
  local list = {}
  for name, conf in pairs(route.plugins) do
    local p = plugin(name)
    if p.check_schema then
      local ok, err = p.check_schema(conf)
      if not ok then
        error("route " .. route.id .. ": plugin " .. name .. ": " .. err)
      end
    end
    list[#list + 1] = { p = p, conf = conf }
  end
  table.sort(list, function(a, b) return a.p.priority > b.p.priority end)
  route.sorted = list
  _M.routes[#_M.routes + 1] = route
  table.sort(_M.routes, function(a, b) return #a.uri_prefix > #b.uri_prefix end)
end

--- consumer = {username, credential_id?, plugins = {["key-auth"] = {key = ...}, ...}}
function _M.add_consumer(consumer)
  _M.consumers[#_M.consumers + 1] = consumer
end

--- What consumer.find_consumer(plugin, field, value) does in APISIX.
function _M.find_consumer(plugin_name, field, value)
  for _, c in ipairs(_M.consumers) do
    local conf = c.plugins[plugin_name]
    if conf and conf[field] == value then
      return c, conf
    end
  end
  return nil
end

--- What consumer.attach_consumer(ctx, consumer, conf) leaves in ctx.
function _M.attach_consumer(ctx, consumer, auth_conf)
  ctx.consumer = { username = consumer.username, auth_conf = auth_conf, credential_id = consumer.credential_id }
  ctx.consumer_name = consumer.username
end

local function new_var()
  -- APISIX's ctx.var: nginx variables (cached), plus a few of its own
  return setmetatable({}, { __index = function(t, k)
    local v = ngx.var[k]
    rawset(t, k, v)
    return v
  end })
end

local function run(phase, ctx)
  for _, item in ipairs(ctx.plugins) do
    local fn = item.p[phase]
    if fn then
      local code, body = fn(item.conf, ctx)
      if code and (phase == "rewrite" or phase == "access") then
        return core.response.exit(code, body)
      end
    end
  end
end

function _M.rewrite()
  local uri = ngx.var.uri
  local route
  for _, r in ipairs(_M.routes) do
    if uri:sub(1, #r.uri_prefix) == r.uri_prefix then
      route = r
      break
    end
  end
  if not route then
    return core.response.exit(404, { error_msg = "404 Route Not Found" })
  end
  local ctx = { var = new_var(), route_id = route.id, service_id = route.service_id,
                matched_route = { value = route }, conf_type = "route", plugins = route.sorted }
  ngx.ctx.api_ctx = ctx
  run("rewrite", ctx)
  run("access", ctx)
end

function _M.body_filter()
  local ctx = ngx.ctx.api_ctx
  if ctx then
    run("body_filter", ctx)
  end
end

function _M.log()
  local ctx = ngx.ctx.api_ctx
  if ctx then
    run("log", ctx)
  end
end

return _M

-- Substitute for Kong's runloop (kong/init.lua at 3.9.3), which cannot run without Kong's router, plugins
-- iterator and database: per request it does what Kong.access / Kong.header_filter / Kong.body_filter /
-- Kong.log do for the plugins of the matched route, with the same ctx fields, in priority order:
--   - Kong.access (1180-1261): ctx.KONG_PHASE = access; the collecting iterator (360-430): delay_response,
--     each plugin's access() in a coroutine, a plugin error -> 500; then flush_delayed_response (497-509),
--     which sends the real kong.response.exit/error reply; no delayed response -> proxied (KONG_PROXIED).
--   - setup_plugin_context / reset_plugin_context (263-280): kong.ctx.plugin namespace, namespaced log,
--     ctx.plugin_id = conf.__plugin_id (set by kong/runloop/plugins_iterator.lua).
--   - Kong.body_filter (1653-1741) and Kong.log (1744-1852): the collected iterator (433-478) calls each
--     plugin's handler UNGUARDED: an error in one plugin's log() skips every later plugin and Kong's own
--     after-log work. `after_log` below counts the requests whose log phase ran to the end.
-- The router is a path-prefix match (Kong: kong/router/*, atc-router); the matched route's workspace is the
-- default one (kong/runloop/handler.lua sets ctx.workspace from the route).
local runtime = require("kong_runtime")
local kong_global = require("kong.global")

local PHASES = runtime.PHASES

local _M = { routes = {}, globals = {}, after_log = 0 }

local function plugin(name, config)
  local entity, err = runtime.plugin_entity(name, config or {})
  if not entity then
    error(name .. ": " .. require("cjson").encode(err))
  end
  local conf = entity.config
  conf.__plugin_id = entity.id
  return { name = name, handler = require("kong.plugins." .. name .. ".handler"), conf = conf, id = entity.id }
end

local function by_priority(a, b)
  return a.handler.PRIORITY > b.handler.PRIORITY
end

--- A global plugin (runs on every route), e.g. authwire.
function _M.add_global(name, config)
  local p = plugin(name, config)
  _M.globals[#_M.globals + 1] = p
  return p
end

--- A plugin instance gets a new configuration (Admin API PATCH / declarative reload): validated again, a new
--- config table, the same plugin id.
function _M.reconfigure(p, config)
  local fresh = plugin(p.name, config)
  fresh.conf.__plugin_id = p.id
  p.conf = fresh.conf
end

--- route = {id, prefix, service = {id, name} | nil, plugins = {{name, config}, ...}}
function _M.add_route(route)
  local list = {}
  for _, p in ipairs(route.plugins or {}) do
    list[#list + 1] = plugin(p[1], p[2])
  end
  route.list = list
  _M.routes[#_M.routes + 1] = route
  return route
end

-- Kong runs one instance of each plugin per request: a route's own wins over the global one
-- (kong/runloop/plugins_iterator.lua, the most specific configuration)
local function plugins_of(route)
  local all, names = {}, {}
  for _, p in ipairs(route.list) do
    all[#all + 1] = p
    names[p.name] = true
  end
  for _, p in ipairs(_M.globals) do
    if not names[p.name] then
      all[#all + 1] = p
    end
  end
  table.sort(all, by_priority)
  return all
end

local function setup(ctx, p)
  kong_global.set_named_ctx(kong, "plugin", p.handler, ctx)
  kong_global.set_namespaced_log(kong, p.name, ctx)
  ctx.plugin_id = p.conf.__plugin_id
end

local function reset(ctx)
  kong_global.reset_log(kong, ctx)
end

local function flush_delayed_response(ctx)
  ctx.delay_response = nil
  if type(ctx.delayed_response_callback) == "function" then
    ctx.delayed_response_callback(ctx)
    return
  end
  local dr = ctx.delayed_response
  local message = dr.content and dr.content.message or dr.content
  kong.response.error(dr.status_code, message, dr.headers)
end

function _M.access()
  local ctx = ngx.ctx
  ctx.KONG_PHASE = PHASES.access
  local uri = ngx.var.uri
  local route
  for _, r in ipairs(_M.routes) do
    if uri:sub(1, #r.prefix) == r.prefix then
      route = r
      break
    end
  end
  if not route then
    return kong.response.error(404, "no Route matched with those values")
  end
  ctx.route = { id = route.id, name = route.id, ws_id = kong.default_workspace }
  ctx.service = route.service
  ctx.workspace = kong.default_workspace
  ctx.aw_plugins = plugins_of(route)

  ctx.delay_response = true
  for _, p in ipairs(ctx.aw_plugins) do
    if p.handler.access and not ctx.delayed_response then
      setup(ctx, p)
      local co = coroutine.create(p.handler.access)
      local cok, cerr = coroutine.resume(co, p.handler, p.conf)
      if not cok then
        kong.log.err(cerr)
        ctx.delayed_response = { status_code = 500, content = { message = "An unexpected error occurred" } }
        ctx.KONG_UNEXPECTED = true
      end
      reset(ctx)
    end
  end
  ctx.delay_response = nil
  if ctx.delayed_response then
    return flush_delayed_response(ctx)
  end
  if not ctx.service then
    return kong.response.error(503, "no Service found with those values")
  end
  ctx.KONG_PROXIED = true
end

local function collected(phase)
  local ctx = ngx.ctx
  for _, p in ipairs(ctx.aw_plugins or {}) do
    if p.handler[phase] then
      setup(ctx, p)
      p.handler[phase](p.handler, p.conf)
      reset(ctx)
    end
  end
end

function _M.header_filter()
  ngx.ctx.KONG_PHASE = PHASES.header_filter
  collected("header_filter")
end

function _M.body_filter()
  local ctx = ngx.ctx
  ctx.KONG_PHASE = PHASES.body_filter
  if ctx.response_body then
    ngx.arg[1] = ctx.response_body
    ngx.arg[2] = true
  end
  collected("body_filter")
end

function _M.log()
  ngx.ctx.KONG_PHASE = PHASES.log
  collected("log")
  _M.after_log = _M.after_log + 1 -- Kong's runloop.log.after (balancer release, passive health checks ...)
end

return _M

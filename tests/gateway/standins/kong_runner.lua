-- Stand-in of Kong's runloop for one plugin: validates the plugin config with its schema.lua the way
-- Kong's DAO does (defaults filled in, including nested records such as `queue`; required, type, between,
-- gt, len_min, custom_validator and conditional entity checks), then per request: route match (prefix),
-- the route's auth plugin in access, the authwire handler's body_filter and log.
require("kong_pdk")
local auth = require("kong_auth")

local _M = { routes = {} }

local function copy(v)
  if type(v) ~= "table" then
    return v
  end
  local out = {}
  for k, x in pairs(v) do
    out[k] = copy(x)
  end
  return out
end

local TYPES = { string = "string", boolean = "boolean", integer = "number", number = "number",
                record = "table", set = "table", array = "table" }

local function validate(fields, value, prefix)
  for _, entry in ipairs(fields) do
    local name, def = next(entry)
    local path = prefix .. name
    if def.type == "foreign" then
      goto continue
    end
    if value[name] == nil and def.default ~= nil then
      value[name] = copy(def.default)
    end
    if value[name] == nil and def.type == "record" then
      value[name] = {}
    end
    local v = value[name]
    if v == nil then
      if def.required then
        return nil, path .. ": required field missing"
      end
      goto continue
    end
    if type(v) ~= TYPES[def.type] or (def.type == "integer" and v ~= math.floor(v)) then
      return nil, path .. ": expected " .. (def.type == "integer" and "an integer" or "a " .. def.type)
    end
    if def.between and (v < def.between[1] or v > def.between[2]) then
      return nil, path .. ": value should be between " .. def.between[1] .. " and " .. def.between[2]
    end
    if def.gt and v <= def.gt then
      return nil, path .. ": value must be greater than " .. def.gt
    end
    if def.len_min and #v < def.len_min then
      return nil, path .. ": length must be at least " .. def.len_min
    end
    if def.custom_validator then
      local ok, err = def.custom_validator(v)
      if not ok then
        return nil, path .. ": " .. tostring(err)
      end
    end
    if def.type == "record" then
      local ok, err = validate(def.fields, v, path .. ".")
      if not ok then
        return nil, err
      end
      for _, check in ipairs(def.entity_checks or {}) do
        local c = check.conditional
        if c and v[c.if_field] == c.if_match.eq and c.then_match.required and v[c.then_field] == nil then
          return nil, path .. "." .. c.then_field .. ": required field missing"
        end
      end
    end
    ::continue::
  end
  return true
end

--- Validate a plugin config like Kong does; returns the completed config or nil, error.
function _M.check_config(config)
  local schema = require("kong.plugins.authwire.schema")
  local value = { config = copy(config) }
  local ok, err = validate(schema.fields, value, "")
  if not ok then
    return nil, err
  end
  return value.config
end

--- route = {id, prefix, service = {id}, auth = "key-auth"|"basic-auth"|"jwt"|"hmac-auth"|nil, config}
function _M.add_route(route)
  local conf, err = _M.check_config(route.config or {})
  if not conf then
    error("route " .. route.id .. ": " .. err)
  end
  route.conf = conf
  _M.routes[#_M.routes + 1] = route
end

function _M.add_consumer(consumer, credentials)
  auth.consumers[#auth.consumers + 1] = { consumer = consumer, credentials = credentials }
end

local handler
local function get_handler()
  handler = handler or require("kong.plugins.authwire.handler")
  return handler
end

function _M.access()
  local uri = ngx.var.uri
  for _, r in ipairs(_M.routes) do
    if uri:sub(1, #r.prefix) == r.prefix then
      ngx.ctx.route = { id = r.id, name = r.id }
      ngx.ctx.service = r.service
      ngx.ctx.runner_route = r
      if r.auth then
        return auth[r.auth]()
      end
      return
    end
  end
  return kong.response.exit(404, { message = "no Route matched with those values" })
end

function _M.body_filter()
  local r = ngx.ctx.runner_route
  if r then
    get_handler():body_filter(r.conf)
  end
end

function _M.log()
  local r = ngx.ctx.runner_route
  if r then
    get_handler():log(r.conf)
  end
end

return _M

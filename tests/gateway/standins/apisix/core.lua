-- Stand-in of the `apisix.core` calls the authwire APISIX plugin (and the stand-in auth plugins) make.
local cjson = require("cjson.safe")

local core = {}

core.version = { VERSION = "3.18.0" }

local LEVELS = { error = ngx.ERR, warn = ngx.WARN, notice = ngx.NOTICE, info = ngx.INFO, debug = ngx.DEBUG }
core.log = {}
for name, level in pairs(LEVELS) do
  core.log[name] = function(...)
    return ngx.log(level, ...)
  end
end

core.json = {
  encode = function(v) return cjson.encode(v) end,
  decode = function(s) return cjson.decode(s) end,
  delay_encode = function(v) return cjson.encode(v) end,
}

local function deepcopy(t)
  if type(t) ~= "table" then
    return t
  end
  local out = {}
  for k, v in pairs(t) do
    out[k] = deepcopy(v)
  end
  return out
end
core.table = { deepcopy = deepcopy, insert = table.insert, concat = table.concat }

-- APISIX validates plugin conf with JSON schema and injects defaults; this covers the keywords the
-- authwire schema uses: type, properties, default, minimum, maximum, minLength, enum, required.
local function check(schema, value, path)
  local t = schema.type
  if t then
    local lt = type(value)
    local ok = (t == "object" and lt == "table") or (t == "string" and lt == "string")
      or (t == "boolean" and lt == "boolean") or (t == "number" and lt == "number")
      or (t == "integer" and lt == "number" and value == math.floor(value))
      or (t == "array" and lt == "table")
    if not ok then
      return false, "property \"" .. path .. "\" validation failed: wrong type: expected " .. t
        .. ", got " .. lt
    end
  end
  if schema.minimum and value < schema.minimum then
    return false, "property \"" .. path .. "\" validation failed: expected " .. value
      .. " to be at least " .. schema.minimum
  end
  if schema.maximum and value > schema.maximum then
    return false, "property \"" .. path .. "\" validation failed: expected " .. value
      .. " to be at most " .. schema.maximum
  end
  if schema.minLength and #value < schema.minLength then
    return false, "property \"" .. path .. "\" validation failed: string too short, expected at least "
      .. schema.minLength .. ", got " .. #value
  end
  if schema.enum then
    local found = false
    for _, e in ipairs(schema.enum) do
      found = found or e == value
    end
    if not found then
      return false, "property \"" .. path .. "\" validation failed: matches none of the enum values"
    end
  end
  if t == "object" then
    for _, name in ipairs(schema.required or {}) do
      if value[name] == nil then
        return false, "property \"" .. name .. "\" is required"
      end
    end
    for name, sub in pairs(schema.properties or {}) do
      if value[name] == nil and sub.default ~= nil then
        value[name] = deepcopy(sub.default)
      end
      if value[name] ~= nil then
        local ok, err = check(sub, value[name], name)
        if not ok then
          return false, err
        end
      end
    end
  end
  return true
end

core.schema = {
  check = function(schema, conf)
    return check(schema, conf, "")
  end,
}

-- core.response.exit(code, body): JSON-encode a table body, send it, finish the request
core.response = {
  exit = function(code, body)
    ngx.status = code
    if type(body) == "table" then
      ngx.header["Content-Type"] = "application/json"
      body = cjson.encode(body)
    end
    if body then
      ngx.say(body)
    end
    return ngx.exit(code)
  end,
  set_header = function(name, value)
    ngx.header[name] = value
  end,
}

return core

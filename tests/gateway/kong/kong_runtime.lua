-- Kong 3.9's own Lua, loaded into Debian's nginx + ngx_lua: the real `kong` global (kong/global.lua) with the
-- real PDK (kong/pdk/*), kong.tools.queue, kong.workspaces, the schema library (kong/db/schema) and the real
-- key-auth / basic-auth / jwt / hmac-auth / ldap-auth plugins. Kong itself cannot boot here (it needs its
-- patched OpenResty, lua-resty-lmdb and the Rust atc-router), so the few pieces it would set up at boot are
-- substituted below, each naming the Kong file and lines it stands for. Nothing here imitates a module that
-- loads for real.
--
-- Required from init_worker_by_lua (timers are needed); package.path must already list the Kong tree
-- (AUTHWIRE_KONG_HOME) and the Lua dependencies Debian lacks (../shared/apisix/deps/share/lua/5.1).
local _M = {}

-- Substitute for resty.ljsonschema (a LuaRocks dependency that is neither in Debian nor in ../shared):
-- kong/db/schema/json.lua:8-9 requires it (and its metaschema, :31) at load time and uses it only for `type = "json"` schema fields,
-- which neither authwire nor the auth plugins have. Any use fails loudly.
local function no_jsonschema()
  error("resty.ljsonschema is not available in this test runtime (json schema fields are not supported)", 2)
end
package.preload["resty.ljsonschema"] = function()
  return { generate_validator = no_jsonschema }
end
package.preload["resty.ljsonschema.metaschema"] = function()
  return { id = "http://json-schema.org/draft-04/schema#" } -- json.lua:31 asserts the draft-4 id
end

-- Substitute for kong/plugins/ldap-auth/ldap.lua (LDAP BER over the socket; it needs the lua_pack C module,
-- which does not exist here). access.lua:114 calls ldap.bind_request(sock, who, password) -> true | false, err
-- on a socket it has connected to conf.ldap_host:ldap_port: here the directory is a table of users.
local ldap_users = {}
package.preload["kong.plugins.ldap-auth.ldap"] = function()
  return {
    bind_request = function(_, who, password)
      local user = who:match("^[^=]+=([^,]+)")
      if user and ldap_users[user] == password then
        return true
      end
      return false, "Error: Invalid Credentials"
    end,
    start_tls = function() return true end,
  }
end

function _M.add_ldap_user(username, password)
  ldap_users[username] = password
end

-- Substitutes for Lua bindings of C code that does not exist here, required at load time by the PDK and
-- used only by calls these tests never make; any call fails loudly:
--   resty.kong.tls, resty.kong.grpc: lua-kong-nginx-module (Kong's patched nginx), required by
--     kong/runloop/upstream_ssl.lua:2, kong/pdk/client/tls.lua:10, kong/pdk/service.lua:201, kong/pdk/service/request.lua:296
--     (upstream/client TLS, gRPC authority);
--   resty.ada.search: lua-resty-ada (FFI to the ada URL library), kong/pdk/service/request.lua:26
--     (service.request.clear_query_arg, used by hide_credentials).
local MISSING_C = { ["resty.kong.tls"] = "lua-kong-nginx-module", ["resty.kong.grpc"] = "lua-kong-nginx-module",
                    ["resty.ada.search"] = "lua-resty-ada" }
for name, lib in pairs(MISSING_C) do
  package.preload[name] = function()
    return setmetatable({}, { __index = function(_, fn)
      return function()
        error(name .. "." .. fn .. " needs " .. lib .. ", which this test runtime does not have", 2)
      end
    end })
  end
end

-- Substitute for lua_system_constants (Kong/lua-system-constants, a C module exporting <fcntl.h> values as
-- functions): kong/tools/rand.lua:35-36 calls O_RDONLY() at load time. The values are Linux's.
local FCNTL = { O_RDONLY = 0, O_WRONLY = 1, O_RDWR = 2, O_CREAT = 64, O_TRUNC = 512, O_APPEND = 1024 }
package.preload["lua_system_constants"] = function()
  return setmetatable({}, { __index = function(_, name)
    local v = FCNTL[name]
    if v == nil then
      error("lua_system_constants." .. name .. " is not substituted in this test runtime", 2)
    end
    return function() return v end
  end })
end

local kong_global = require("kong.global")
local uuid = require("kong.tools.uuid").uuid

-- kong/init.lua:65 and :655 (Kong.init) build the global from kong.global and the parsed kong.conf.
local kong_config = { trusted_ips = { "127.0.0.1/32" }, host_ports = {} }
_G.kong = kong_global.new()
kong_global.init_pdk(kong, kong_config)

-- Substitute for kong/workspaces/init.lua:8-20 (upsert_default: reads or inserts the default workspace in
-- the database at boot and keeps its id in kong.default_workspace). Real kong.workspaces reads it.
kong.default_workspace = uuid()

-- Substitute for kong.timer (kong/globalpatches.lua:88-107 makes it lua-resty-timer-ng, kong/init.lua:816-818
-- installs it; timer-ng is not packaged anywhere these machines reach). The two calls kong.tools.queue makes,
-- named_at (queue.lua:244-252) and at (queue.lua:518-523), run the callback the same way, in an ngx timer.
kong.timer = {
  named_at = function(_, _name, delay, callback, ...)
    return ngx.timer.at(delay, callback, ...)
  end,
  at = function(_, delay, callback, ...)
    return ngx.timer.at(delay, callback, ...)
  end,
}

-- Substitute for the DAO and the entity cache (kong/db/dao/init.lua: select, select_by_<unique field>,
-- cache_key; kong/cache/init.lua:165-190 get(key, opts, cb, ...) -> the cached value or cb(...)): Kong keeps
-- credentials in Postgres or LMDB behind mlcache. Here: in-memory rows, and every cache:get calls the loader,
-- which is what a cache miss does.
local rows = { consumers = {}, keyauth_credentials = {}, basicauth_credentials = {}, jwt_secrets = {},
               hmacauth_credentials = {} }
local UNIQUE = { consumers = { "id", "username" }, keyauth_credentials = { "key" },
                 basicauth_credentials = { "username" }, jwt_secrets = { "key" },
                 hmacauth_credentials = { "username" } }

local function dao(name)
  local d = { name = name }
  function d.cache_key(_, key)
    return name .. ":" .. tostring(type(key) == "table" and key.id or key) .. ":::::"
  end
  function d.select(_, pk)
    return rows[name]["id:" .. pk.id]
  end
  for _, field in ipairs(UNIQUE[name]) do
    d["select_by_" .. field] = function(_, value)
      return rows[name][field .. ":" .. tostring(value)]
    end
  end
  return d
end

kong.db = {}
for name in pairs(rows) do
  kong.db[name] = dao(name)
end

kong.cache = {
  get = function(_, _key, _opts, cb, ...)
    return cb(...)
  end,
}

local function insert(name, row)
  row.id = row.id or uuid()
  rows[name]["id:" .. row.id] = row
  for _, field in ipairs(UNIQUE[name]) do
    if row[field] ~= nil then
      rows[name][field .. ":" .. tostring(row[field])] = row
    end
  end
  return row
end

--- A consumer and its credentials, stored as Kong's DAO would after its transformations: basic-auth
--- passwords hashed with the plugin's own crypto (kong/plugins/basic-auth/daos.lua:21-28).
-- creds = { ["key-auth"] = {key=...}, ["basic-auth"] = {username, password}, jwt = {key, secret, algorithm},
--           ["hmac-auth"] = {username, secret} } (each may carry an id)
function _M.add_consumer(consumer, creds)
  insert("consumers", consumer)
  local ref = { id = consumer.id }
  for plugin, c in pairs(creds or {}) do
    c.consumer = ref
    if plugin == "key-auth" then
      insert("keyauth_credentials", c)
    elseif plugin == "basic-auth" then
      c.password = require("kong.plugins.basic-auth.crypto").hash(consumer.id, c.password)
      insert("basicauth_credentials", c)
    elseif plugin == "jwt" then
      c.algorithm = c.algorithm or "HS256"
      insert("jwt_secrets", c)
    elseif plugin == "hmac-auth" then
      insert("hmacauth_credentials", c)
    else
      error("no credential DAO for " .. plugin)
    end
  end
  return consumer
end

-- Plugin configuration, validated and completed (defaults) by Kong's own schema library the way the Admin
-- API / declarative loader does: the plugins entity with the plugin's schema as a subschema
-- (kong/db/schema/plugin_loader.lua, kong/db/dao/plugins.lua; Kong's spec/helpers.lua
-- validate_plugin_config_schema does the same).
local Entity = require("kong.db.schema.entity")
local plugins_entity
local loaded_subschemas = {}

local function plugins_schema()
  if not plugins_entity then
    for _, e in ipairs({ "workspaces", "certificates", "ca_certificates", "consumers", "services", "routes" }) do
      assert(Entity.new(require("kong.db.schema.entities." .. e)))
    end
    plugins_entity = assert(Entity.new(require("kong.db.schema.entities.plugins")))
  end
  return plugins_entity
end

local function remove_nulls(t)
  for k, v in pairs(t) do
    if v == ngx.null then
      t[k] = nil
    elseif type(v) == "table" then
      remove_nulls(v)
    end
  end
  return t
end

--- Validate `config` for plugin `name`; returns the completed plugin entity (entity.config) or nil, err.
function _M.plugin_entity(name, config)
  local schema = plugins_schema()
  if not loaded_subschemas[name] then
    local def = require("kong.plugins." .. name .. ".schema")
    assert(schema:new_subschema(name, def))
    loaded_subschemas[name] = true
  end
  local entity = { id = uuid(), name = name, config = config, enabled = true }
  local to_insert, err = schema:process_auto_fields(entity, "insert")
  if not to_insert then
    return nil, err
  end
  local ok, verr = schema:validate_insert(to_insert)
  if not ok then
    return nil, verr
  end
  -- what plugins see at run time: the row without its null fields (kong/db/dao/init.lua:38-47 remove_nulls,
  -- applied when rows are read without `nulls = true`)
  return remove_nulls(to_insert)
end

_M.PHASES = require("kong.pdk.private.phases").phases

return _M

-- Stand-in of the Kong PDK calls the authwire Kong plugin (and the stand-in auth plugins) make, on top of
-- ngx: installs the global `kong`. Per-request state lives in ngx.ctx, as in Kong.
local cjson = require("cjson.safe")

local kong = { version = "3.9.1" }

kong.node = { get_hostname = function() return ngx.var.hostname end }

local LEVELS = { err = ngx.ERR, warn = ngx.WARN, notice = ngx.NOTICE, info = ngx.INFO, debug = ngx.DEBUG }
kong.log = {}
for name, level in pairs(LEVELS) do
  kong.log[name] = function(...) return ngx.log(level, ...) end
end

kong.client = {
  -- the TCP peer, also when the real-ip module replaced remote_addr
  get_ip = function() return ngx.var.realip_remote_addr or ngx.var.remote_addr end,
  get_port = function() return tonumber(ngx.var.realip_remote_port or ngx.var.remote_port) end,
  get_forwarded_ip = function() return ngx.var.remote_addr end,
  get_forwarded_port = function() return tonumber(ngx.var.remote_port) end,
  get_consumer = function() return ngx.ctx.authenticated_consumer end,
  get_credential = function() return ngx.ctx.authenticated_credential end,
  authenticate = function(consumer, credential)
    ngx.ctx.authenticated_consumer = consumer
    ngx.ctx.authenticated_credential = credential
  end,
}

kong.request = {
  get_method = function() return ngx.req.get_method() end,
  get_host = function() return ngx.var.host end,
  get_path = function() return ngx.var.uri end,
  get_port = function() return tonumber(ngx.var.server_port) end,
  get_header = function(name)
    local v = ngx.req.get_headers()[name]
    if type(v) == "table" then
      return v[1]
    end
    return v
  end,
}

kong.response = {
  get_status = function() return ngx.status end,
  get_source = function() return ngx.ctx.KONG_RESPONSE_SOURCE or "service" end,
  get_header = function(name)
    local v = ngx.resp.get_headers()[name]
    if type(v) == "table" then
      return v[1]
    end
    return v
  end,
  exit = function(status, body, headers)
    ngx.ctx.KONG_RESPONSE_SOURCE = "exit"
    ngx.status = status
    for k, v in pairs(headers or {}) do
      ngx.header[k] = v
    end
    if type(body) == "table" then
      ngx.header["Content-Type"] = "application/json; charset=utf-8"
      body = cjson.encode(body)
    end
    if body then
      ngx.say(body)
    end
    return ngx.exit(status)
  end,
}

kong.router = {
  get_route = function() return ngx.ctx.route end,
  get_service = function() return ngx.ctx.service end,
}

kong.plugin = { get_id = function() return ngx.ctx.plugin_id or "authwire-plugin-id" end }

-- kong.ctx.shared: shared by all plugins of a request; kong.ctx.plugin: this plugin's own
kong.ctx = setmetatable({}, { __index = function(_, k)
  if k == "shared" then
    ngx.ctx.kong_shared = ngx.ctx.kong_shared or {}
    return ngx.ctx.kong_shared
  elseif k == "plugin" then
    ngx.ctx.kong_plugin = ngx.ctx.kong_plugin or {}
    return ngx.ctx.kong_plugin
  end
end })

_G.kong = kong
return kong

-- Stand-in of APISIX basic-auth (priority 2520) with its failure messages.
local runner = require("apisix_runner")

local _M = { version = 0.1, priority = 2520, name = "basic-auth", schema = { type = "object" } }

function _M.check_schema(conf)
  return true
end

function _M.rewrite(conf, ctx)
  local h = ctx.var.http_authorization
  if not h then
    ngx.header["WWW-Authenticate"] = "Basic realm='.'"
    return 401, { message = "Missing authorization in request" }
  end
  local raw = ngx.decode_base64(h:match("^%s*[Bb]asic%s+(.+)$") or "")
  local user, pass = (raw or ""):match("^([^:]+):(.*)$")
  if not user then
    return 401, { message = "Invalid authorization in request" }
  end
  local consumer, auth_conf = runner.find_consumer("basic-auth", "username", user)
  if not consumer or auth_conf.password ~= pass then
    return 401, { message = "Invalid user authorization" }
  end
  runner.attach_consumer(ctx, consumer, auth_conf)
end

return _M

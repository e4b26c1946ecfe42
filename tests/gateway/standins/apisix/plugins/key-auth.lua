-- Stand-in of APISIX key-auth (priority 2500): header or query "apikey"; APISIX's failure messages.
local runner = require("apisix_runner")

local _M = { version = 0.1, priority = 2500, name = "key-auth",
             schema = { type = "object", properties = { header = { type = "string", default = "apikey" },
                                                        query = { type = "string", default = "apikey" } } } }

function _M.check_schema(conf)
  return require("apisix.core").schema.check(_M.schema, conf)
end

function _M.rewrite(conf, ctx)
  local key = ctx.var["http_" .. conf.header:lower():gsub("-", "_")] or ctx.var["arg_" .. conf.query]
  if not key then
    return 401, { message = "Missing API key in request" }
  end
  local consumer, auth_conf = runner.find_consumer("key-auth", "key", key)
  if not consumer then
    return 401, { message = "Invalid API key in request" }
  end
  runner.attach_consumer(ctx, consumer, auth_conf)
end

return _M

-- Stand-in of APISIX jwt-auth (priority 2510): HS256 tokens from header/query/cookie, the consumer's
-- "key" claim, APISIX's failure messages.
local cjson = require("cjson.safe")
local digest = require("authwire.digest")
local runner = require("apisix_runner")

local _M = { version = 0.1, priority = 2510, name = "jwt-auth",
             schema = { type = "object", properties = {
               header = { type = "string", default = "authorization" },
               query = { type = "string", default = "jwt" }, cookie = { type = "string", default = "jwt" } } } }

function _M.check_schema(conf)
  return require("apisix.core").schema.check(_M.schema, conf)
end

local function b64url_decode(s)
  return ngx.decode_base64((s:gsub("-", "+"):gsub("_", "/") .. string.rep("=", (4 - #s % 4) % 4)))
end

function _M.rewrite(conf, ctx)
  local raw = ctx.var["http_" .. conf.header] or ctx.var["arg_" .. conf.query] or ctx.var["cookie_" .. conf.cookie]
  if not raw then
    return 401, { message = "Missing JWT token in request" }
  end
  local token = raw:gsub("^[Bb]earer%s+", "")
  local h, p, s = token:match("^([%w%-_]+)%.([%w%-_]+)%.([%w%-_]*)$")
  local payload = p and cjson.decode(b64url_decode(p) or "")
  if type(payload) ~= "table" then
    return 401, { message = "JWT token invalid" }
  end
  if not payload.key then
    return 401, { message = "missing user key in JWT token" }
  end
  local consumer, auth_conf = runner.find_consumer("jwt-auth", "key", payload.key)
  if not consumer then
    return 401, { message = "Invalid user key in JWT token" }
  end
  local sig = b64url_decode(s) or ""
  local sig_hex = sig:gsub(".", function(c) return string.format("%02x", c:byte()) end)
  if sig_hex ~= digest.hmac_sha256_hex(auth_conf.secret, h .. "." .. p)
     or (type(payload.exp) == "number" and payload.exp < ngx.time()) then
    return 401, { message = "failed to verify jwt" }
  end
  runner.attach_consumer(ctx, consumer, auth_conf)
end

return _M

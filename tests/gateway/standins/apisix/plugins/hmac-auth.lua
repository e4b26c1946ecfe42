-- Stand-in of APISIX 3.x hmac-auth (priority 2530): Authorization: Signature keyId="..",
-- algorithm="hmac-sha256",headers="@request-target date",signature="<base64>"; APISIX's failure messages.
local digest = require("authwire.digest")
local runner = require("apisix_runner")

local _M = { version = 0.1, priority = 2530, name = "hmac-auth", schema = { type = "object" } }

function _M.check_schema(conf)
  return true
end

local function hex_to_bin(h)
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

function _M.rewrite(conf, ctx)
  local h = ctx.var.http_authorization
  if not h then
    return 401, { message = "client request can't be validated: missing Authorization header" }
  end
  local key_id = h:match('keyId="([^"]+)"')
  local signature = h:match('signature="([^"]+)"')
  local consumer, auth_conf = runner.find_consumer("hmac-auth", "key_id", key_id or "")
  if not (key_id and signature and consumer) then
    return 401, { message = "client request can't be validated" }
  end
  local signing = key_id .. "\n" .. ctx.var.request_method .. " " .. ctx.var.uri .. "\n"
    .. (ctx.var.http_date or "") .. "\n"
  local want = ngx.encode_base64(hex_to_bin(digest.hmac_sha256_hex(auth_conf.secret_key, signing)))
  if want ~= signature then
    return 401, { message = "client request can't be validated" }
  end
  runner.attach_consumer(ctx, consumer, auth_conf)
end

return _M

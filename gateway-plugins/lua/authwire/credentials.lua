-- The non-secret identity a request *claimed*, read from its credentials without keeping them: used for
-- failed attempts (who tried?), where the gateway attached no consumer. Only ids leave: the Basic username
-- (never the password), the HMAC key id / username (never the signature), the JWT's key claim (never the token).
-- key-auth has no id apart from the key, which is the secret: nothing is reported for it.
local jwt_claims = require("authwire.jwt_claims")

local _M = {}

function _M.basic_username(authorization)
  if type(authorization) ~= "string" then
    return nil
  end
  local b64 = authorization:match("^%s*[Bb]asic%s+([%w%+/=]+)%s*$")
  local raw = b64 and ngx.decode_base64(b64)
  return raw and raw:match("^([^:]+):") or nil
end

function _M.hmac_key_id(authorization)
  if type(authorization) ~= "string" then
    return nil
  end
  -- APISIX 3.x: Signature keyId="..."; Kong: hmac username="..."; older APISIX/Kong: hmac <id>:<sig>
  return authorization:match('[Kk]ey[Ii]d%s*=%s*"([^"]+)"') or authorization:match('username%s*=%s*"([^"]+)"')
    or authorization:match("^%s*hmac%s+([^:%s,=]+):")
end

--- JWT claims subset plus the key claim named `key_claim` (APISIX "key", Kong "iss" by default).
function _M.jwt(token, key_claim)
  local claims, payload = jwt_claims.from_token(token)
  if not claims then
    return nil, nil
  end
  local key = payload[key_claim]
  return claims, type(key) == "string" and key or nil
end

return _M

-- Stand-ins of Kong 3.x key-auth, basic-auth, jwt and hmac-auth as they look from outside: the same
-- failure statuses, bodies and WWW-Authenticate challenges, and kong.client.authenticate(consumer,
-- credential) with credentials shaped like Kong's entities on success.
local cjson = require("cjson.safe")
local digest = require("authwire.digest")

local _M = { consumers = {} }

local function exit(status, body, headers)
  return kong.response.exit(status, body, headers)
end

local function find(plugin, field, value)
  for _, c in ipairs(_M.consumers) do
    local cred = c.credentials[plugin]
    if cred and value ~= nil and cred[field] == value then
      return c.consumer, cred
    end
  end
end

_M["key-auth"] = function()
  local key = kong.request.get_header("apikey")
  if not key then
    return exit(401, { message = "No API key found in request" }, { ["WWW-Authenticate"] = 'Key realm="kong"' })
  end
  local consumer, cred = find("key-auth", "key", key)
  if not consumer then
    return exit(401, { message = "Unauthorized" }, { ["WWW-Authenticate"] = 'Key realm="kong"' })
  end
  kong.client.authenticate(consumer, cred)
end

_M["basic-auth"] = function()
  local h = kong.request.get_header("authorization")
  local challenge = { ["WWW-Authenticate"] = 'Basic realm="service"' }
  if not h then
    return exit(401, { message = "Unauthorized" }, challenge)
  end
  local raw = ngx.decode_base64(h:match("^%s*[Bb]asic%s+(.+)$") or "")
  local user, pass = (raw or ""):match("^([^:]+):(.*)$")
  local consumer, cred = find("basic-auth", "username", user)
  if not consumer or cred.plain_password ~= pass then
    return exit(401, { message = "Unauthorized" }, challenge)
  end
  kong.client.authenticate(consumer, { id = cred.id, username = cred.username, password = cred.password_hash })
end

local function b64url_decode(s)
  return ngx.decode_base64((s:gsub("-", "+"):gsub("_", "/") .. string.rep("=", (4 - #s % 4) % 4)))
end

_M.jwt = function()
  local h = kong.request.get_header("authorization")
  local token = h and h:match("^%s*[Bb]earer%s+(.+)$")
  if not token then
    return exit(401, { message = "Unauthorized" })
  end
  local hp, p, s = token:match("^([%w%-_]+%.([%w%-_]+))%.([%w%-_]*)$")
  if not hp then
    return exit(401, { message = "Bad token; invalid JSON" })
  end
  local claims = cjson.decode(b64url_decode(p) or "")
  if type(claims) ~= "table" then
    return exit(401, { message = "Bad token; invalid JSON" })
  end
  if not claims.iss then
    return exit(401, { message = "No mandatory 'iss' in claims" })
  end
  local consumer, cred = find("jwt", "key", claims.iss)
  if not consumer then
    return exit(401, { message = "No credentials found for given 'iss'" })
  end
  local sig = (b64url_decode(s) or ""):gsub(".", function(c) return string.format("%02x", c:byte()) end)
  if sig ~= digest.hmac_sha256_hex(cred.secret, hp) then
    return exit(401, { message = "Invalid signature" })
  end
  if type(claims.exp) == "number" and claims.exp <= ngx.time() then
    return exit(401, { exp = "token expired" })
  end
  kong.ctx.shared.authenticated_jwt_token = token
  kong.client.authenticate(consumer, cred)
end

_M["hmac-auth"] = function()
  local h = kong.request.get_header("authorization")
  if not h then
    return exit(401, { message = "Unauthorized" })
  end
  local date = kong.request.get_header("date")
  if not date or not ngx.parse_http_time(date) or math.abs(ngx.parse_http_time(date) - ngx.time()) > 300 then
    return exit(401, { message = "HMAC signature cannot be verified, a valid date or x-date header is "
                                 .. "required for HMAC Authentication" })
  end
  local user = h:match('username="([^"]+)"')
  local signature = h:match('signature="([^"]+)"')
  local consumer, cred = find("hmac-auth", "username", user)
  if not consumer or not signature then
    return exit(401, { message = "HMAC signature cannot be verified" })
  end
  local want = digest.hmac_sha256_hex(cred.secret, "date: " .. date)
  local got = (ngx.decode_base64(signature) or ""):gsub(".", function(c) return string.format("%02x", c:byte()) end)
  if want ~= got then
    return exit(401, { message = "HMAC signature does not match" })
  end
  kong.client.authenticate(consumer, cred)
end

return _M

-- A small auth step for plain nginx (access_by_lua): key-auth, basic-auth and HS256 JWT with the failure
-- messages APISIX's plugins use. It records its outcome in ngx.ctx.authwire for authwire.nginx.log().
-- Credentials here are test fixtures; the tests assert none of the secrets reaches the sidecar.
local cjson = require("cjson.safe")
local digest = require("authwire.digest")
local jwt_claims = require("authwire.jwt_claims")

local _M = {}

_M.KEYS = { ["key-secret-alice-0001"] = { consumer = "alice", id = "cred-alice" } }
_M.USERS = { bob = { password = "pw-secret-bob-0002", consumer = "bob" } }
_M.JWT_SECRET = "jwt-hmac-secret-0003-thirty-two-bytes"
_M.JWT_KEYS = { ["carol-key"] = "carol" }

local function deny(plugin, message, jwt)
  ngx.ctx.authwire = { plugin = plugin, success = false, jwt = jwt }
  ngx.status = 401
  ngx.header["Content-Type"] = "application/json"
  ngx.header["WWW-Authenticate"] = "Bearer"
  ngx.say(cjson.encode({ message = message }))
  return ngx.exit(401)
end

local function allow(plugin, consumer, credential_id, jwt)
  ngx.ctx.authwire = { plugin = plugin, success = true, consumer = consumer, credential_id = credential_id,
                       jwt = jwt }
end

function _M.key_auth()
  local key = ngx.var.http_apikey
  if not key then
    return deny("key-auth", "Missing API key in request")
  end
  local c = _M.KEYS[key]
  if not c then
    return deny("key-auth", "Invalid API key in request")
  end
  allow("key-auth", c.consumer, c.id)
end

function _M.basic_auth()
  local h = ngx.var.http_authorization
  if not h then
    return deny("basic-auth", "Missing authorization in request")
  end
  local raw = ngx.decode_base64(h:match("^[Bb]asic%s+(.+)$") or "")
  local user, pass = (raw or ""):match("^([^:]*):(.*)$")
  if not user then
    return deny("basic-auth", "Invalid authorization in request")
  end
  local u = _M.USERS[user]
  if not u or u.password ~= pass then
    return deny("basic-auth", "Invalid user authorization")
  end
  allow("basic-auth", u.consumer, user)
end

function _M.jwt_auth()
  local h = ngx.var.http_authorization
  local token = h and h:match("^[Bb]earer%s+(.+)$")
  if not token then
    return deny("jwt-auth", "Missing JWT token in request")
  end
  local hp, sig = token:match("^([^.]+%.[^.]+)%.([^.]*)$")
  if not hp then
    return deny("jwt-auth", "JWT token invalid")
  end
  local claims = jwt_claims.from_token(token)
  local payload = cjson.decode(ngx.decode_base64((hp:match("%.(.*)$"):gsub("-", "+"):gsub("_", "/")
    .. string.rep("=", (4 - #hp:match("%.(.*)$") % 4) % 4))) or "")
  if type(payload) ~= "table" or not _M.JWT_KEYS[payload.key or ""] then
    return deny("jwt-auth", "Invalid user key in JWT token", claims)
  end
  local want = digest.hmac_sha256_hex(_M.JWT_SECRET, hp)
  local got = ngx.decode_base64((sig:gsub("-", "+"):gsub("_", "/") .. string.rep("=", (4 - #sig % 4) % 4)))
  local got_hex = got and got:gsub(".", function(c) return string.format("%02x", c:byte()) end)
  if got_hex ~= want then
    return deny("jwt-auth", "failed to verify jwt", claims)
  end
  if type(payload.exp) == "number" and payload.exp < ngx.time() then
    return deny("jwt-auth", "token expired", claims)
  end
  allow("jwt-auth", _M.JWT_KEYS[payload.key], payload.key, claims)
end

return _M

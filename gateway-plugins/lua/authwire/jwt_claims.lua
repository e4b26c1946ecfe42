-- The non-secret subset of a JWT's claims (iss, sub, aud, kid, exp, iat, alg; jti only as SHA-256 hex).
-- The token itself never leaves the gateway: only the values picked here are reported.
-- Decoding does not verify the signature: the gateway's auth plugin decided; this only describes the token.
local cjson = require("cjson.safe")
local digest = require("authwire.digest")

local type, tostring, floor = type, tostring, math.floor

local _M = {}

local function b64url_decode(s)
  s = s:gsub("-", "+"):gsub("_", "/")
  local pad = #s % 4
  if pad == 2 then
    s = s .. "=="
  elseif pad == 3 then
    s = s .. "="
  elseif pad == 1 then
    return nil
  end
  if ngx and ngx.decode_base64 then
    return ngx.decode_base64(s)
  end
  -- standalone LuaJIT (tests) has no ngx
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  local bits = s:gsub("[^%w%+/]", ""):gsub(".", function(c)
    local v = alphabet:find(c, 1, true) - 1
    local r = ""
    for i = 6, 1, -1 do
      r = r .. (v % 2 ^ i - v % 2 ^ (i - 1) > 0 and "1" or "0")
    end
    return r
  end)
  return (bits:gsub("%d%d%d?%d?%d?%d?%d?%d?", function(x)
    if #x ~= 8 then
      return ""
    end
    return string.char(tonumber(x, 2))
  end))
end

local function str(v, max)
  if type(v) == "string" then
    return v:sub(1, max)
  elseif type(v) == "number" then
    return tostring(v)
  elseif type(v) == "table" and type(v[1]) == "string" then
    return v[1]:sub(1, max) -- aud may be a list: keep the first
  end
  return nil
end

local function int(v)
  if type(v) == "number" and v == v and v > -2 ^ 53 and v < 2 ^ 53 then
    return floor(v)
  end
  return nil
end

--- Claims subset (and the decoded payload) of a compact JWS ("header.payload.signature"), or nil.
-- @param token string, optionally prefixed with "Bearer "
function _M.from_token(token)
  if type(token) ~= "string" then
    return nil
  end
  token = token:gsub("^[Bb]earer%s+", "")
  local h64, p64 = token:match("^([%w%-_]+)%.([%w%-_]+)%.[%w%-_]*$")
  if not h64 then
    return nil
  end
  local header = cjson.decode(b64url_decode(h64) or "")
  local payload = cjson.decode(b64url_decode(p64) or "")
  if type(payload) ~= "table" then
    return nil
  end
  if type(header) ~= "table" then
    header = {}
  end
  local claims = {
    iss = str(payload.iss, 256),
    sub = str(payload.sub, 256),
    aud = str(payload.aud, 256),
    kid = str(header.kid, 256),
    exp = int(payload.exp),
    iat = int(payload.iat),
    alg = str(header.alg, 32),
  }
  claims.nbf = int(payload.nbf) -- not reported (AuthEvent has no nbf); for time_reason()
  local jti = str(payload.jti, 4096)
  if jti then
    claims.jti_hash = digest.sha256_hex(jti)
  end
  -- the decoded payload is for the caller's own lookups (e.g. its key claim); never report it whole
  return claims, payload
end

--- Why a token the gateway refused is refused, judged from its own time claims and the request's time:
--- "expired" when exp <= now - skew, "clock_skew" when it is not valid yet (nbf >= now + skew), else nil.
--- For gateways that answer every claim failure with one message (APISIX's jwt-auth: "failed to verify
--- jwt" for a bad signature, an algorithm mismatch, exp and nbf alike, jwt-auth.lua 327-362 at 3.18.0),
--- using the same comparisons as APISIX's jwt-auth/parser.lua claims_checker (whole seconds).
-- @param claims a from_token() result; now: request time in seconds; skew: seconds of leeway (default 0)
function _M.time_reason(claims, now, skew)
  if type(claims) ~= "table" or type(now) ~= "number" then
    return nil
  end
  skew = skew or 0
  now = floor(now)
  if claims.exp and claims.exp <= now - skew then
    return "expired"
  end
  if claims.nbf and claims.nbf >= now + skew then
    return "clock_skew"
  end
  return nil
end

return _M

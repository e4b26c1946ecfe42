-- Gateway failure messages -> (FailureReason, auth plugin). The gateways put no reason code in ctx, only
-- the message of the 401/403 body ({"message": ...}); these tables are the messages of APISIX 3.x and
-- Kong 3.x auth plugins (see gateway-plugins/*/README.md). Unknown messages map to OTHER, never dropped.
local _M = {}

-- exact messages: message -> {reason, plugin}
local APISIX = {
  ["Missing API key in request"] = { "missing_credentials", "key-auth" },
  ["Invalid API key in request"] = { "unknown_key", "key-auth" },
  ["Missing authorization in request"] = { "missing_credentials", "basic-auth" },
  ["Invalid authorization in request"] = { "invalid_credentials", "basic-auth" },
  -- sent by basic-auth (unknown user, wrong password) and by key-auth, jwt-auth, hmac-auth and ldap-auth
  -- when a credential failed and their anonymous_consumer is missing (APISIX 3.18.0 basic-auth.lua 148-171,
  -- key-auth.lua 141, jwt-auth.lua 385, hmac-auth.lua 371): no plugin hint; the challenge names the plugin
  ["Invalid user authorization"] = { "invalid_credentials", nil },
  ["Missing JWT token in request"] = { "missing_credentials", "jwt-auth" },
  ["JWT token invalid"] = { "invalid_credentials", "jwt-auth" },
  ["failed to verify jwt"] = { "bad_signature", "jwt-auth" },
  ["Invalid user key in JWT token"] = { "unknown_key", "jwt-auth" },
  ["missing user key in JWT token"] = { "invalid_credentials", "jwt-auth" },
  ["client request can't be validated: missing Authorization header"] = { "missing_credentials", "hmac-auth" },
  ["client request can't be validated"] = { "invalid_credentials", "hmac-auth" },
  ["Authorization Failed"] = { "invalid_credentials", "multi-auth" },
}

local KONG = {
  ["No API key found in request"] = { "missing_credentials", "key-auth" },
  ["Invalid authentication credentials"] = { "invalid_credentials", nil },
  ["Unauthorized"] = { "invalid_credentials", nil },
  ["Unrecognizable token"] = { "invalid_credentials", "jwt" },
  ["Invalid signature"] = { "bad_signature", "jwt" },
  ["Invalid algorithm"] = { "invalid_credentials", "jwt" },
  ["HMAC signature does not match"] = { "bad_signature", "hmac-auth" },
}

-- substring patterns tried in order when no exact message matched (Lua patterns, lower-cased message)
local PATTERNS = {
  { "expired", "expired" },
  { "token expired", "expired" },
  { "clock skew", "clock_skew" },
  { "valid date or x%-date header", "clock_skew" },
  { "signature", "bad_signature" },
  { "no credentials found", "unknown_key" },
  { "invalid user key", "unknown_key" },
  { "invalid api key", "unknown_key" },
  { "missing", "missing_credentials" },
  { "no api key", "missing_credentials" },
  { "bad token", "invalid_credentials" },
  { "invalid", "invalid_credentials" },
  { "unauthorized", "invalid_credentials" },
}

local KONG_PLUGIN_HINTS = {
  { "hmac", "hmac-auth" },
  { "no credentials found for given", "jwt" },
  { "bad token", "jwt" },
  { "api key", "key-auth" },
}

--- Classify a failure.
-- @param gateway "apisix" | "kong" | other
-- @param status HTTP status (403 without a message means FORBIDDEN)
-- @param message the gateway's message (may be nil)
-- @return reason name (authwire.protobuf enums "Auth.reason"), plugin name or nil
function _M.classify(gateway, status, message)
  if type(message) ~= "string" or message == "" then
    if status == 403 then
      return "forbidden", nil
    end
    return "other", nil
  end
  local exact = (gateway == "kong" and KONG or APISIX)[message]
  if exact then
    return exact[1], exact[2]
  end
  local lower = message:lower()
  local plugin
  if gateway == "kong" then
    for _, h in ipairs(KONG_PLUGIN_HINTS) do
      if lower:find(h[1]) then
        plugin = h[2]
        break
      end
    end
  end
  for _, p in ipairs(PATTERNS) do
    if lower:find(p[1]) then
      return p[2], plugin
    end
  end
  if status == 403 then
    return "forbidden", plugin
  end
  return "other", plugin
end

-- APISIX's auth plugins each answer a 401 with their own challenge scheme (WWW-Authenticate):
-- key-auth `apikey realm=`, jwt-auth `Bearer realm=`, basic-auth `Basic realm=`, hmac-auth `hmac realm=`
local APISIX_CHALLENGES = { apikey = "key-auth", bearer = "jwt-auth", basic = "basic-auth", hmac = "hmac-auth" }

--- The APISIX auth plugin that sent a 401, from its WWW-Authenticate challenge, or nil.
function _M.apisix_plugin_of_challenge(header)
  if type(header) == "table" then
    header = header[1]
  end
  if type(header) ~= "string" then
    return nil
  end
  local scheme = header:match("^%s*([%a]+)")
  return scheme and APISIX_CHALLENGES[scheme:lower()] or nil
end

--- The auth method of a gateway plugin name (APISIX and Kong names).
local METHODS = {
  ["jwt-auth"] = "jwt", jwt = "jwt", ["openid-connect"] = "oauth2", oauth2 = "oauth2",
  ["basic-auth"] = "basic", ["ldap-auth"] = "basic",
  ["hmac-auth"] = "hmac", ["key-auth"] = "key_auth", ["multi-auth"] = "other",
}
_M.METHODS = METHODS

function _M.method_of(plugin)
  if plugin == nil then
    return "unspecified"
  end
  return METHODS[plugin] or "other"
end

return _M

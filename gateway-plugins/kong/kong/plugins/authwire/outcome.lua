-- The authentication outcome of one Kong request, decided in the log phase from the PDK: which auth plugin,
-- success or failure and why, consumer, and a non-secret credential id. Read against Kong 3.9.3's and
-- 3.4.2's key-auth, basic-auth, jwt, hmac-auth and ldap-auth (kong/plugins/*/{handler,access}.lua).
--
-- Kong records no "which plugin authenticated" field:
--   success: the credential's shape (key-auth {key}, basic-auth {username, password hash, consumer}, jwt
--            {key, algorithm}, hmac-auth {username, secret}, ldap-auth {username, password} WITHOUT a consumer:
--            ldap-auth/access.lua:164-168 and :278 authenticate a directory user, set_consumer(nil, credential));
--   failure: Kong >= 3.8 answers every 401 of these plugins with a WWW-Authenticate challenge naming the
--            scheme (Key, Basic, Bearer, hmac, ldap); 3.4 sends it for some failures only, so the message and
--            then the credentials the request carried decide.
-- Secrets never leave: no API key, password (ldap-auth's credential even holds the clear password), token,
-- signature or hash is read into the event; only usernames, key ids, the jwt key claim and entity ids.
local credentials = require("authwire.credentials")
local event = require("authwire.event")
local jwt_claims = require("authwire.jwt_claims")
local reasons = require("authwire.reasons")
local response_message = require("kong.plugins.authwire.response_message")

local type, ipairs = type, ipairs

local _M = {}

-- WWW-Authenticate scheme -> plugin (key-auth handler.lua:114 'Key', basic-auth access.lua:160 'Basic',
-- jwt handler.lua:160 'Bearer', hmac-auth access.lua:286 'hmac', ldap-auth access.lua:254 conf.header_type,
-- "ldap" by default)
local CHALLENGES = { key = "key-auth", basic = "basic-auth", bearer = "jwt", hmac = "hmac-auth", ldap = "ldap-auth" }

-- exact Kong messages -> reason, plugin (nil reason: decided per plugin below)
local MESSAGES = {
  ["No API key found in request"] = { "missing_credentials", "key-auth" },
  ["Duplicate API key found"] = { "invalid_credentials", "key-auth" },
  ["Multiple tokens provided"] = { "invalid_credentials", "jwt" },
  ["Unrecognizable token"] = { "invalid_credentials", "jwt" },
  ["Invalid algorithm"] = { "invalid_credentials", "jwt" },
  ["Invalid key/secret"] = { "invalid_credentials", "jwt" },
  ["Invalid signature"] = { "bad_signature", "jwt" },
  ["HMAC signature does not match"] = { "bad_signature", "hmac-auth" },
  ["HMAC signature cannot be verified, a valid date or x-date header is required for HMAC Authentication"] =
    { "clock_skew", "hmac-auth" },
  -- unknown user, or a malformed / unsupported Authorization (hmac-auth access.lua:316-327 at 3.9.3)
  ["HMAC signature cannot be verified"] = { nil, "hmac-auth" },
  -- every failure of basic-auth and ldap-auth on 3.9; a missing credential of jwt, hmac-auth; an unknown
  -- key of key-auth 3.9 (handler.lua:31)
  ["Unauthorized"] = { nil, nil },
  -- 3.4: key-auth's unknown key, basic-auth's and ldap-auth's wrong credentials
  ["Invalid authentication credentials"] = { nil, nil },
}

local PATTERNS = { -- Lua patterns on the message, tried in order
  { "^Bad token; ", "invalid_credentials", "jwt" },
  { "^No mandatory '.-' in claims$", "invalid_credentials", "jwt" },
  { "^Invalid '.-' in claims$", "invalid_credentials", "jwt" },
  { "^No credentials found for given '", "unknown_key", "jwt" },
  { "^Could not find consumer for '", "unknown_key", "jwt" },
  -- the jwt plugin's claim errors (response_message joins them "claim: error; ...")
  { "token expired", "expired", "jwt" },
  { "token not valid yet", "clock_skew", "jwt" },       -- nbf in the future: issuer and gateway clocks
  { "^exp: ", "invalid_credentials", "jwt" },           -- "must be a number", "exceeds maximum allowed ..."
  { "^nbf: ", "invalid_credentials", "jwt" },
}

local function header(name)
  local v = kong.request.get_header(name)
  if type(v) == "table" then
    return v[1]
  end
  return v
end

local function scheme_plugin(value)
  if type(value) == "table" then
    value = value[1]
  end
  local scheme = type(value) == "string" and value:match("^%s*([%w%-]+)")
  return scheme and CHALLENGES[scheme:lower()] or nil
end

-- jwt: the token where the jwt plugin looks (handler.lua:28-97: uri params, cookies, then Bearer headers);
-- nil unless exactly one
local function jwt_token(conf)
  local found, n = nil, 0
  local function add(t)
    if type(t) == "string" and t ~= "" and t ~= found then
      found, n = t, n + 1
    end
  end
  local names = conf.jwt_uri_param_names or { "jwt" }
  if #names > 0 then
    local args = kong.request.get_query(100)
    for _, name in ipairs(names) do
      local v = args[name]
      if type(v) == "table" then
        for _, t in ipairs(v) do
          add(t)
        end
      else
        add(v)
      end
    end
  end
  for _, name in ipairs(conf.jwt_cookie_names or {}) do
    add(ngx.var["cookie_" .. name])
  end
  for _, name in ipairs(conf.jwt_header_names or { "authorization" }) do
    local v = header(name)
    add(type(v) == "string" and v:match("^%s*[Bb]earer%s+(.+)$") or nil)
  end
  return n == 1 and found or nil
end

local function key_present(conf)
  for _, name in ipairs(conf.key_names or { "apikey" }) do
    if header(name) then
      return true
    end
  end
  if #(conf.key_names or {}) > 0 then
    local args = kong.request.get_query(100)
    for _, name in ipairs(conf.key_names or { "apikey" }) do
      if args[name] ~= nil then
        return true
      end
    end
  end
  return false
end

-- "scheme base64(user:password)" -> user (basic-auth access.lua:31-77, :166-176: Proxy-Authorization first)
local function basic_user(scheme)
  for _, name in ipairs({ "proxy-authorization", "authorization" }) do
    local v = header(name)
    local b64 = type(v) == "string" and v:match("^%s*" .. scheme .. "%s*([%w%+/=]+)%s*$")
    local raw = b64 and ngx.decode_base64(b64)
    local user = raw and raw:match("^([^:]+):")
    if user then
      return user
    end
  end
end

-- hmac username="...", algorithm, headers, signature (hmac-auth access.lua:95-126, Proxy-Authorization first)
local function hmac_user()
  for _, name in ipairs({ "proxy-authorization", "authorization" }) do
    local v = header(name)
    local user = type(v) == "string" and v:match('^%s*[Hh]mac%s*username="([^"]+)",%s*algorithm="[^"]+",'
                                                  .. '%s*headers="[^"]+",%s*signature="[^"]+"')
    if user then
      return user
    end
  end
end

-- Which plugin a request's credentials were meant for, when neither the challenge nor the message says.
local function plugin_of_request(conf)
  local auth = header("proxy-authorization") or header("authorization")
  local p = scheme_plugin(auth)
  if p then
    return p
  end
  if key_present(conf) then
    return "key-auth"
  end
  if jwt_token(conf) then
    return "jwt"
  end
end

-- The credential id a failed request claimed, and whether it carried a credential at all.
local function claimed(plugin, conf)
  if plugin == "basic-auth" then
    return basic_user("[Bb]asic"), (header("authorization") or header("proxy-authorization")) ~= nil
  elseif plugin == "ldap-auth" then
    local user = basic_user("[%w%-]+")
    return user, (header("authorization") or header("proxy-authorization")) ~= nil
  elseif plugin == "hmac-auth" then
    local user = hmac_user()
    return user, (header("authorization") or header("proxy-authorization")) ~= nil
  elseif plugin == "jwt" then
    local token = jwt_token(conf)
    if not token then
      return nil, false
    end
    return token, true
  elseif plugin == "key-auth" then
    return nil, key_present(conf) -- the key is the secret: no id
  end
  return nil, (header("authorization") or header("proxy-authorization")) ~= nil
end

-- Reason of a message that MESSAGES leaves to the plugin ("Unauthorized", 3.4's "Invalid authentication
-- credentials", hmac's "cannot be verified").
local function reason_of_plugin(plugin, message, carried, claimed_id)
  if not carried then
    return "missing_credentials"
  end
  if plugin == "key-auth" then
    return "unknown_key" -- a key was sent (a missing one is "No API key found in request")
  elseif plugin == "hmac-auth" and message == "HMAC signature cannot be verified" then
    -- a well-formed signature header: the username is unknown (or its algorithm / headers not allowed)
    return claimed_id and "unknown_key" or "invalid_credentials"
  end
  return "invalid_credentials"
end

local function classify(message)
  if type(message) ~= "string" then
    return nil, nil
  end
  local exact = MESSAGES[message]
  if exact then
    return exact[1], exact[2], true
  end
  for _, p in ipairs(PATTERNS) do
    if message:find(p[1]) then
      return p[2], p[3], true
    end
  end
end

-- Success: the plugin and the credential's non-secret id.
local function of_credential(c)
  if c.algorithm and c.key then
    return "jwt", c.key                 -- the key claim's value; `secret` / `rsa_public_key` never read
  elseif c.username and c.secret then
    return "hmac-auth", c.username
  elseif c.username and c.consumer == nil then
    return "ldap-auth", c.username      -- its id is derived from the password: not reported
  elseif c.username then
    return "basic-auth", c.username     -- the stored password hash is never read
  elseif c.client_id then
    return "oauth2", c.client_id
  elseif c.key then
    return "key-auth", c.id             -- the key is the secret: the credential's entity id
  end
  return nil, c.id
end

local NOT_ATTEMPTED = event.auth({ attempted = false }) -- the same for every such request; never modified

--- The auth part of the event (authwire.event.auth table).
-- @param conf the authwire plugin config
-- @param status the response status
-- @param ctx ngx.ctx: its authenticated_consumer / authenticated_credential are what
--        kong.client.get_consumer() / get_credential() return (pdk/client.lua:163-233), read without the
--        PDK's phase check (two ngx.ctx reads each); the kept body prefix is kong.ctx.plugin.body
function _M.decide(conf, status, ctx)
  local consumer = ctx.authenticated_consumer
  local credential = ctx.authenticated_credential
  local consumer_name = consumer and (consumer.username or consumer.custom_id or consumer.id)
  if credential then
    local plugin, id = of_credential(credential)
    local jwt
    if plugin == "jwt" then
      -- set by the jwt plugin on success (handler.lua:146). An expired token is accepted unless
      -- claims_to_verify lists exp: the claims (exp in the past) say so.
      jwt = jwt_claims.from_token(kong.ctx.shared.authenticated_jwt_token)
    end
    return event.auth({ attempted = true, success = true, plugin = plugin, consumer = consumer_name,
                        credential_id = event.credential_id(id, conf), jwt = jwt })
  end
  if consumer then
    -- an auth plugin's `anonymous` consumer: credentials missing or invalid, the request allowed
    return event.auth({ attempted = true, success = false, consumer = consumer_name, gateway = "kong",
                        plugin = plugin_of_request(conf), status = status, message = "anonymous consumer" })
  end
  if (status ~= 401 and status ~= 403) or kong.response.get_source() ~= "exit" then
    return NOT_ATTEMPTED
  end
  local message = response_message.of(kong.ctx.plugin.body, kong.response.get_header("Content-Type"),
                                      kong.response.get_header("grpc-message"))
  local reason, hinted, known = classify(message)
  local plugin = scheme_plugin(kong.response.get_header("WWW-Authenticate")) or hinted or plugin_of_request(conf)
  local claim, carried = claimed(plugin, conf)
  local a = { attempted = true, success = false, plugin = plugin, status = status, message = message,
              gateway = "kong" }
  if plugin == "jwt" then
    a.jwt, claim = credentials.jwt(claim, conf.jwt_key_claim_name or "iss")
  end
  a.credential_id = event.credential_id(claim, conf)
  local ev = event.auth(a)
  if not reason then
    if message == nil and status == 403 then
      reason = "forbidden"
    elseif known or message == nil then
      reason = reason_of_plugin(plugin, message, carried, claim)
    else
      reason = reasons.classify("kong", status, message) -- not a Kong 3.4/3.9 auth message
    end
  end
  ev.reason = reason
  return ev
end

return _M

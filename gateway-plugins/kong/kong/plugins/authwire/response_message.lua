-- The failure message of a Kong error reply, in each form Kong 3.x sends it (kong/pdk/response.lua at 3.9.3):
--   kong.response.error(status, message)  -> the body follows the client's Accept header
--     (kong/tools/http.lua:393-422 ERROR_TEMPLATES, :453-488 get_response_type):
--       JSON  {\n  "message":"<m>",\n  "request_id":"<id>"\n}        (also the default)
--       HTML  ...<h1>Error</h1>\n    <p><m>.</p>\n    <p>request_id: <id></p>...
--       text  <m>\nrequest_id: <id>\n
--       XML   ...<error>\n  <message><m></message>\n  <requestid><id></requestid>...
--     the message is inserted as is (no escaping);
--   kong.response.exit(status, {message = m}) -> JSON {"message": m} (jwt); the jwt plugin's claim errors are a
--     table of claim -> error (kong/plugins/jwt/handler.lua:233-240): {"exp":"token expired"};
--   gRPC requests (response.lua:646-651 is_grpc_request, :653-800 send): no body; kong.response.exit puts a table body's message in
--     grpc-message, kong.response.error sends only the status's generic gRPC message ("Unauthenticated").
-- Everything here reads a bounded prefix of the body (the plugin keeps 1 KiB) and never raises.
local cjson = require("cjson.safe")

local type, pairs, sort, concat = type, pairs, table.sort, table.concat

local _M = {}

-- kong/pdk/response.lua:102-120: what Kong itself puts in grpc-message when it has no message of its own
local GENERIC_GRPC = {
  OK = true, Canceled = true, Unknown = true, InvalidArgument = true, DeadlineExceeded = true, NotFound = true,
  AlreadyExists = true, PermissionDenied = true, ResourceExhausted = true, FailedPrecondition = true,
  Aborted = true, OutOfRange = true, Unimplemented = true, Internal = true, Unavailable = true, DataLoss = true,
  Unauthenticated = true,
}

local function first_string(v)
  if type(v) == "string" then
    return v
  elseif type(v) == "table" and type(v[1]) == "string" then
    return v[1] -- kong/plugins/jwt/jwt_parser.lua:330-343: several errors for one claim become a list
  end
end

-- {"message": m, "request_id": ...} -> m; the jwt plugin's {"exp": "token expired", "nbf": ...} ->
-- "exp: token expired; nbf: ..." (claims in name order, so the text does not depend on table order)
local function from_json(body)
  local t = cjson.decode(body)
  if type(t) ~= "table" then
    return body:match('"message"%s*:%s*"(.-)"') -- a truncated JSON body
  end
  if type(t.message) == "string" then
    return t.message
  end
  local keys = {}
  for k, v in pairs(t) do
    if type(k) == "string" and k ~= "request_id" and first_string(v) then
      keys[#keys + 1] = k
    end
  end
  if #keys == 0 then
    return nil
  end
  sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do
    parts[i] = k .. ": " .. first_string(t[k])
  end
  return concat(parts, "; ")
end

local function from_html(body)
  -- "<p>%s.</p>": Kong's template adds the full stop
  local m = body:match("<h1>Error</h1>%s*<p>(.-)%.</p>")
  return m
end

local function from_xml(body)
  return body:match("<message>(.-)</message>")
end

local function from_text(body)
  return body:match("^(.-)\nrequest_id: ") or body:match("^([^\n]+)")
end

local function kind_of(content_type, body)
  local ct = type(content_type) == "string" and content_type:lower() or ""
  if ct:find("json", 1, true) then
    return "json"
  elseif ct:find("html", 1, true) then
    return "html"
  elseif ct:find("xml", 1, true) then
    return "xml"
  elseif ct:find("text/plain", 1, true) then
    return "text"
  end
  -- no or an unknown Content-Type: guess from the body's first byte
  local c = body:match("^%s*(.)")
  if c == "{" then
    return "json"
  elseif c == "<" then
    return body:find("<?xml", 1, true) and "xml" or "html"
  end
  return "text"
end

--- The message of a Kong error reply, or nil.
-- @param body the start of the response body (may be nil or truncated)
-- @param content_type the response's Content-Type
-- @param grpc_message the response's grpc-message header
function _M.of(body, content_type, grpc_message)
  if type(body) ~= "string" or body == "" then
    if type(grpc_message) == "string" and grpc_message ~= "" and not GENERIC_GRPC[grpc_message] then
      return grpc_message
    end
    return nil
  end
  local kind = kind_of(content_type, body)
  local m
  if kind == "json" then
    m = from_json(body)
  elseif kind == "html" then
    m = from_html(body)
  elseif kind == "xml" then
    m = from_xml(body)
  else
    m = from_text(body)
  end
  if m == "" then
    return nil
  end
  return m
end

return _M

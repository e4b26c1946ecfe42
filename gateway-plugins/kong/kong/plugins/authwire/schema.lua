-- authwire plugin configuration for Kong 3.x (DAO schema). Batching, retries and the queue bound are
-- Kong's own `queue` settings (kong.tools.queue).
--
-- Secrets in this config (token, credential_hash_key) are `referenceable`: give them as a vault reference
-- ({vault://env/authwire-token}) to keep them out of Kong's database. `encrypted = true` is deliberately
-- absent: it is a Kong Enterprise keyring feature and does nothing in open-source Kong (see
-- kong/plugins/basic-auth/daos.lua:18 at 3.9.3), so it would only suggest a protection that is not there.
local typedefs = require("kong.db.schema.typedefs")
local client_ok, client = pcall(require, "authwire.grpc_web_client")

local function valid_sidecar(value)
  if not client_ok then
    return true -- the address is checked again when sending; the schema must load in the CLI too
  end
  local _, err = client.parse_address(value)
  if err then
    return nil, err
  end
  return true
end

return {
  name = "authwire",
  fields = {
    { protocols = typedefs.protocols_http },
    -- the reporter watches every request, whoever the consumer turns out to be
    { consumer = typedefs.no_consumer },
    { config = {
        type = "record",
        fields = {
          { sidecar = { description = "authwire gRPC-Web address: host:port, [v6]:port or unix:/path",
                        type = "string", required = true, default = "127.0.0.1:9181",
                        custom_validator = valid_sidecar } },
          { connect_timeout = typedefs.timeout { default = 1000 } },
          { send_timeout = typedefs.timeout { default = 2000 } },
          { read_timeout = typedefs.timeout { default = 5000 } },
          { keepalive_timeout = { type = "integer", required = true, default = 60000, gt = 0 } },
          { keepalive_pool = { type = "integer", required = true, default = 4, gt = 0 } },
          { include_user_agent = { type = "boolean", required = true, default = true } },
          { pseudonymize_credentials = { type = "boolean", required = true, default = false } },
          { token = { description = "bearer token for the sidecar's TCP listeners (sent as `authorization: Bearer`"
                                    .. " only when set; never logged). Prefer a vault reference",
                      type = "string", len_min = 1, referenceable = true } },
          { credential_hash_key = { description = "key of the credential-id HMAC (16+ characters). Stored as "
                                                  .. "given unless it is a vault reference",
                                    type = "string", len_min = 16, referenceable = true } },
          { node = { description = "gateway node name; default: kong.node.get_hostname()", type = "string" } },
          { packed_var = { description = "name of the authwire.event.packed_map() variable (fewer variable "
                                         .. "reads per request)", type = "string" } },
          -- where the auth plugins look for credentials (same names and defaults as their own config), so
          -- that a failure can say what the request claimed and whether it carried anything at all
          { jwt_key_claim_name = { description = "the jwt plugin's key_claim_name (reported as credential id)",
                                   type = "string", required = true, default = "iss" } },
          { jwt_header_names = { description = "the jwt plugin's header_names", type = "array",
                                 elements = { type = "string" }, required = true, default = { "authorization" } } },
          { jwt_uri_param_names = { description = "the jwt plugin's uri_param_names", type = "array",
                                    elements = { type = "string" }, required = true, default = { "jwt" } } },
          { jwt_cookie_names = { description = "the jwt plugin's cookie_names", type = "array",
                                 elements = { type = "string" }, required = true, default = {} } },
          { key_names = { description = "the key-auth plugin's key_names (header or query names)", type = "array",
                          elements = { type = "string" }, required = true, default = { "apikey" } } },
          { queue = typedefs.queue },
        },
        entity_checks = {
          { conditional = { if_field = "pseudonymize_credentials", if_match = { eq = true },
                            then_field = "credential_hash_key", then_match = { required = true } } },
        },
      },
    },
  },
}

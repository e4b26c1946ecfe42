-- authwire plugin configuration for Kong 3.x (DAO schema). Batching, retries and the queue bound are
-- Kong's own `queue` settings (kong.tools.queue).
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
          { credential_hash_key = { type = "string", len_min = 16, encrypted = true, referenceable = true } },
          { node = { description = "gateway node name; default: kong.node.get_hostname()", type = "string" } },
          { packed_var = { description = "name of the authwire.event.packed_map() variable (fewer variable "
                                         .. "reads per request)", type = "string" } },
          { jwt_key_claim_name = { description = "the jwt plugin's key_claim_name (reported as credential id)",
                                   type = "string", required = true, default = "iss" } },
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

-- Stand-in of kong.db.schema.typedefs: the field definitions the authwire schema uses. Like Kong's, each
-- typedef can be called with overrides (typedefs.timeout { default = 1000 }).
local function define(t)
  return setmetatable(t, { __call = function(self, overrides)
    local out = {}
    for k, v in pairs(self) do out[k] = v end
    for k, v in pairs(overrides or {}) do out[k] = v end
    return out
  end })
end

local typedefs = {}

typedefs.protocols_http = define({ type = "set", required = true,
                                   default = { "grpc", "grpcs", "http", "https" },
                                   elements = { type = "string", one_of = { "grpc", "grpcs", "http", "https" } } })
typedefs.no_consumer = define({ type = "foreign", reference = "consumers", eq = ngx.null })
typedefs.timeout = define({ type = "integer", between = { 0, 2 ^ 31 - 2 } })
-- Kong 3.x queue parameters and their defaults (kong/tools/queue_schema.lua)
typedefs.queue = define({
  type = "record",
  fields = {
    { max_batch_size = { type = "integer", default = 1, between = { 1, 1000000 } } },
    { max_coalescing_delay = { type = "number", default = 1, between = { 0, 3600 } } },
    { max_entries = { type = "integer", default = 10000, between = { 1, 1000000 } } },
    { max_bytes = { type = "integer" } },
    { max_retry_time = { type = "number", default = 60 } },
    { initial_retry_delay = { type = "number", default = 0.01, between = { 0.001, 1000000 } } },
    { max_retry_delay = { type = "number", default = 60, between = { 0.001, 1000000 } } },
  },
})

return typedefs

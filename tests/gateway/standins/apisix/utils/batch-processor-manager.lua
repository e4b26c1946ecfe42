-- Stand-in of apisix.utils.batch-processor-manager: one batch processor per plugin conf table;
-- add_entry returns true (buffered), false (no processor for this conf yet) or nil (more than
-- conf.max_pending_entries, default 2000, entries pushed and not yet processed: discarded, logged).
local core = require("apisix.core")
local batch_processor = require("apisix.utils.batch-processor")

local _M = {}
local mt = { __index = _M }

function _M.new(name)
  return setmetatable({ name = name, buffers = {}, total_pushed_entries = 0 }, mt)
end

function _M:wrap_schema(schema)
  local props = schema.properties
  for k, v in pairs(core.table.deepcopy(batch_processor.schema.properties)) do
    if props[k] == nil then
      props[k] = v
    end
  end
  props.name.default = self.name
  return schema
end

local function over_limit(self, conf)
  local processed = 0
  for _, b in pairs(self.buffers) do
    processed = processed + b.processed_entries
  end
  if self.total_pushed_entries - processed > (conf.max_pending_entries or 2000) then
    core.log.error("max pending entries limit exceeded. discarding entry")
    return true
  end
  return false
end

function _M:add_entry(conf, entry)
  if over_limit(self, conf) then
    return nil
  end
  local buffer = self.buffers[conf]
  if not buffer then
    return false
  end
  buffer:push(entry)
  self.total_pushed_entries = self.total_pushed_entries + 1
  return true
end

function _M:add_entry_to_new_processor(conf, entry, ctx, func)
  if over_limit(self, conf) then
    return nil
  end
  local buffer, err = batch_processor:new(func, {
    name = conf.name, batch_max_size = conf.batch_max_size, max_retry_count = conf.max_retry_count,
    retry_delay = conf.retry_delay, buffer_duration = conf.buffer_duration,
    inactive_timeout = conf.inactive_timeout, route_id = ctx.var.route_id, server_addr = ctx.var.server_addr,
  })
  if not buffer then
    core.log.error("error when creating the batch processor: ", err)
    return false
  end
  buffer:push(entry)
  self.buffers[conf] = buffer
  self.total_pushed_entries = self.total_pushed_entries + 1
  return true
end

return _M

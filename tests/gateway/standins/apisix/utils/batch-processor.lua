-- Stand-in of apisix.utils.batch-processor: entries are buffered until batch_max_size, inactive_timeout
-- (no new entry) or buffer_duration (age of the first entry); each batch goes to func(entries,
-- batch_max_size) in an ngx.timer; a failing batch is retried max_retry_count times retry_delay seconds
-- apart and then dropped (with an error log line per failure, as APISIX does).
local core = require("apisix.core")

local timer_at, now = ngx.timer.at, ngx.now

local bp = {}
local mt = { __index = bp }

bp.schema = {
  type = "object",
  properties = {
    name = { type = "string", default = "log buffer" },
    max_retry_count = { type = "integer", minimum = 0, default = 0 },
    retry_delay = { type = "integer", minimum = 0, default = 1 },
    buffer_duration = { type = "integer", minimum = 1, default = 60 },
    inactive_timeout = { type = "integer", minimum = 1, default = 5 },
    batch_max_size = { type = "integer", minimum = 1, default = 1000 },
  },
}

local run_batch

local function schedule(self, delay, batch)
  local ok, err = timer_at(delay, run_batch, self, batch)
  if not ok then
    core.log.error("failed to create process timer: ", err)
  end
end

function run_batch(premature, self, batch)
  if premature then
    return
  end
  local ok, err = self.func(batch.entries, self.batch_max_size)
  if ok then
    self.processed_entries = self.processed_entries + #batch.entries
    return
  end
  core.log.error("Batch Processor[", self.name, "] failed to process entries: ", err)
  batch.retry_count = batch.retry_count + 1
  if batch.retry_count <= self.max_retry_count then
    schedule(self, self.retry_delay, batch)
  else
    self.processed_entries = self.processed_entries + #batch.entries
    core.log.error("Batch Processor[", self.name, "] exceeded the max_retry_count[", batch.retry_count,
                   "] dropping the entries")
  end
end

function bp:new(func, config)
  local ok, err = core.schema.check(bp.schema, config)
  if not ok then
    return nil, err
  end
  return setmetatable({
    func = func, name = config.name, batch_max_size = config.batch_max_size,
    max_retry_count = config.max_retry_count, retry_delay = config.retry_delay,
    buffer_duration = config.buffer_duration, inactive_timeout = config.inactive_timeout,
    entries = {}, first_t = 0, last_t = 0, timer_running = false, processed_entries = 0,
  }, mt)
end

function bp:flush()
  if #self.entries > 0 then
    local batch = { entries = self.entries, retry_count = 0 }
    self.entries = {}
    schedule(self, 0, batch)
  end
end

local function on_timer(premature, self)
  if premature then
    return
  end
  if now() - self.last_t >= self.inactive_timeout or now() - self.first_t >= self.buffer_duration then
    self:flush()
    self.timer_running = false
    return
  end
  timer_at(self.inactive_timeout, on_timer, self)
end

function bp:push(entry)
  if self.batch_max_size == 1 then
    schedule(self, 0, { entries = { entry }, retry_count = 0 })
    return
  end
  self.entries[#self.entries + 1] = entry
  if #self.entries == 1 then
    self.first_t = now()
  end
  self.last_t = now()
  if #self.entries >= self.batch_max_size then
    self:flush()
  end
  if not self.timer_running then
    self.timer_running = true
    timer_at(self.inactive_timeout, on_timer, self)
  end
end

return bp

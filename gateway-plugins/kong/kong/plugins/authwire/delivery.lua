-- Delivery through Kong's own queue (kong.tools.queue), read at Kong 3.9.3 and 3.4.2:
--   Queue.get_plugin_params(plugin_name, config) -> the instance's queue_conf (config.queue, named by the
--     plugin id: one queue per plugin instance); Queue.enqueue(queue_conf, handler, handler_conf, value).
--   A queue keeps the parameters AND the handler function of the enqueue call that created it
--     (queue.lua get_or_create_queue: 3.9.3 :205-259, 3.4.2 :116-168); later calls only replace handler_conf.
--     It lives until it is empty, then the next enqueue creates a new one with the config of that moment.
--     3.9's concurrency_limit = -1 keeps no queue: every entry gets its own, and its own timer (:516-528).
--   The handler's failure is retried until now() - (time of the first attempt) > max_retry_time, then the
--     batch is dropped with only a log line (3.9 handle :319-356, 3.4 process_once :260-291); 3.4 calls the
--     handler without pcall (an error kills the queue's timer and the queue with it).
--   Full queues drop their OLDEST entry with one log line; with max_bytes set, non-string entries log an
--     error on every enqueue (3.9 enqueue :511-595, 3.4 :377-431).
-- So this module bounds each queue itself (max_entries, max_bytes) BEFORE Kong's queue would drop anything,
-- counts every drop, gives each queue a handler bound to the parameters that queue was created with (a
-- config change never makes the plugin apply another queue's max_retry_time or max_entries), makes the
-- handler unable to raise, and, with max_bytes, queues the encoded event (a string) as Kong requires.
--
-- Chunks: without max_bytes, a queue entry is a *chunk* of events, not one event: Queue.enqueue costs
-- ≈ 1.5 µs per call here (13 argument asserts, the queue key string built twice, a debug message string
-- built and dropped, four capacity checks, a semaphore post that wakes the coalescing timer). A request
-- appends its capture to the instance's open chunk; only the first event of a chunk is enqueued. A chunk
-- is closed when the handler takes it (its events are then encoded: later requests open a new chunk) or
-- when it holds max_batch_size events. One handler call may get several chunks: they are sent as reports of
-- at most max_batch_size events each, in order, and a retry resumes at the first report not yet accepted
-- (no event is sent twice by the plugin).
local Queue = require("kong.tools.queue")
local workspaces_ok, workspaces = pcall(require, "kong.workspaces")

local ngx = ngx
local pcall, type, setmetatable = pcall, type, setmetatable

local _M = {}
local mt = { __index = _M }

local DEFAULT_MAX_ENTRIES, DEFAULT_MAX_RETRY_TIME = 10000, 60 -- kong/tools/queue_schema.lua

--- plugin_name: for get_plugin_params; ledger: authwire.ledger; encode_batch(entries) -> the batch's
--- encoded events (kept for retries); encode_one(entry) -> one encoded event; report(conf, encoded,
--- unreported) -> response | nil, err (grpc_web_client.report_batch: it claims the untold drops, so
--- handlers of several queues running at once never tell the same drop twice).
function _M.new(plugin_name, ledger, encode_batch, encode_one, report)
  return setmetatable({ plugin_name = plugin_name, ledger = ledger, encode_batch = encode_batch,
                        encode_one = encode_one, report = report, states = {},
                        params = setmetatable({}, { __mode = "k" }) }, mt)
end

-- kong/tools/queue.lua _make_queue_key / make_queue_key: queues are per workspace
local function key_of(name)
  local ws = workspaces_ok and workspaces.get_workspace_id() or nil
  return (ws or "") .. "." .. name
end

-- events held by a batch's entries (chunks, or encoded events when max_bytes is set)
local function events_of(entries)
  local n = 0
  for i = 1, #entries do
    local e = entries[i]
    n = n + (type(e) == "table" and e.n or 1)
  end
  return n
end

local function release(st, entries, n)
  st.pending = st.pending - n
  if st.max_bytes then
    for i = 1, #entries do
      local e = entries[i]
      st.bytes = st.bytes - (type(e) == "string" and #e or 0)
    end
  end
end

-- A batch's reports, encoded once on its first attempt: parts[k] = the events of up to max_batch_size
-- events, counts[k] = how many queued events (including any that failed to encode) it stands for.
local function encode_parts(self, st, entries)
  local parts, counts, flat, n = {}, {}, {}, 0
  for i = 1, #entries do
    local e = entries[i]
    local m = type(e) == "table" and e.n or 1
    if type(e) == "table" and st.chunk == e then
      st.chunk = nil -- taken: its events are encoded now, later requests open a new chunk
    end
    for j = 1, m do
      n = n + 1
      flat[n] = type(e) == "table" and e[j] or e
      if n >= st.batch_max then
        parts[#parts + 1], counts[#counts + 1] = self.encode_batch(flat), n
        flat, n = {}, 0
      end
    end
  end
  if n > 0 then
    parts[#parts + 1], counts[#counts + 1] = self.encode_batch(flat), n
  end
  return parts, counts
end

-- Send the batch's reports from b.next on; true when all were accepted.
local function deliver(self, conf, b)
  local ledger = self.ledger
  while b.next <= #b.parts do
    local k = b.next
    local resp, err = self.report(conf, b.parts[k], ledger.unreported)
    if not resp then
      return false, err
    end
    b.next = k + 1
    b.sent = b.sent + b.counts[k]
    ledger:delivered(b.counts[k], resp)
  end
  return true
end

-- One attempt at a batch, as Kong's queue calls it. Never raises; true exactly on success.
local function attempt(self, st, conf, entries)
  local ledger = self.ledger
  local first = ngx.now() -- the queue's start_time on a first attempt: nothing yields between the two
  local key = entries[1]
  local b = st.failing[key]
  if not b then
    local ok, parts, counts = pcall(encode_parts, self, st, entries)
    local n = events_of(entries)
    if not ok then
      -- not reached in normal operation (encode_events counts bad events itself): drop the batch, counted
      release(st, entries, n)
      ledger:encode_failed(parts, n)
      ledger:settle(n)
      return true
    end
    b = { started = first, parts = parts, counts = counts, next = 1, sent = 0, n = n }
  end
  local ok, done, err = pcall(deliver, self, conf, b)
  if ok and done then
    st.failing[key] = nil
    release(st, entries, b.n)
    return true
  end
  if not ok then
    err = done
    ledger:warn_limited("authwire: sending a batch failed: ", err)
  end
  ledger:send_failed()
  -- The queue gives this batch up right after we return (the same ngx.now(): no yield in between) once
  -- now - start > its max_retry_time: count that drop here, with that queue's own max_retry_time.
  if ngx.now() - b.started > st.max_retry_time then
    st.failing[key] = nil
    release(st, entries, b.n)
    ledger:given_up(b.n - b.sent)
  else
    st.failing[key] = b -- retries send the same bytes, from the first report not yet accepted
  end
  return false, err or "failed"
end

local function same_params(st, qc)
  return st.max_entries == (qc.max_entries or DEFAULT_MAX_ENTRIES)
    and st.max_retry_time == (qc.max_retry_time or DEFAULT_MAX_RETRY_TIME)
    and st.max_bytes == qc.max_bytes and st.concurrency_limit == qc.concurrency_limit
end

-- The state of the queue this enqueue goes to: the existing queue's (Kong keeps its parameters and our
-- handler bound to them), or a new one with the parameters of this config.
local function state(self, qc)
  local key = key_of(qc.name)
  local st = self.states[key]
  if st and (same_params(st, qc) or Queue.exists(qc.name)) then -- the cheap test first: nearly always true
    return st
  end
  st = { max_entries = qc.max_entries or DEFAULT_MAX_ENTRIES,
         max_retry_time = qc.max_retry_time or DEFAULT_MAX_RETRY_TIME,
         max_bytes = qc.max_bytes, concurrency_limit = qc.concurrency_limit,
         batch_max = qc.max_batch_size or 1,
         pending = 0, bytes = 0, failing = setmetatable({}, { __mode = "k" }), chunk = nil }
  st.handler = function(conf, entries)
    return attempt(self, st, conf, entries)
  end
  self.states[key] = st
  return st
end

--- Queue one captured event for the plugin instance configured by `conf`. Counts every drop; may raise only
--- on a programming error (the caller guards the log phase).
function _M:enqueue(conf, captured)
  local ledger = self.ledger
  -- a config table is one plugin instance's, as long as Kong keeps it: its queue_conf is computed once
  local qc = self.params[conf]
  if not qc then
    qc = Queue.get_plugin_params(self.plugin_name, conf)
    self.params[conf] = qc
  end
  local st = state(self, qc)
  if st.pending >= st.max_entries then
    ledger:queue_full("authwire: ", st.pending, " events pending (sidecar slow or down); dropping new events")
    return
  end
  local size = 0
  if st.max_bytes then
    local ok, bytes = pcall(self.encode_one, captured)
    if not ok or type(bytes) ~= "string" then
      ledger:encode_failed(ok and "no bytes" or bytes)
      return
    end
    size = #bytes
    if st.bytes + size > st.max_bytes then
      ledger:queue_full("authwire: queue.max_bytes (", st.max_bytes, ") reached; dropping new events")
      return
    end
    local ok2, queued, qerr = pcall(Queue.enqueue, qc, st.handler, conf, bytes)
    if not ok2 or not queued then
      ledger:queue_full("authwire: cannot queue the event: ", ok2 and qerr or queued)
      return
    end
  else
    local chunk = st.chunk
    -- a chunk is one config's: Kong hands the handler the conf of the latest enqueue call
    if chunk and chunk.conf == conf and chunk.n < st.batch_max then
      local n = chunk.n + 1
      chunk[n], chunk.n = captured, n
    else
      chunk = { captured, n = 1, conf = conf }
      local ok, queued, qerr = pcall(Queue.enqueue, qc, st.handler, conf, chunk)
      if not ok or not queued then
        ledger:queue_full("authwire: cannot queue the event: ", ok and qerr or queued)
        return
      end
      st.chunk = chunk
    end
  end
  st.pending = st.pending + 1
  st.bytes = st.bytes + size
  ledger:queued()
end

--- Events pending per queue (for tests and stats).
function _M:pending()
  local out = {}
  for key, st in pairs(self.states) do
    out[key] = st.pending
  end
  return out
end

return _M

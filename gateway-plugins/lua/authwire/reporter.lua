-- Per-worker bounded queue of captured requests, built, encoded and shipped in batches to the sidecar from
-- ngx.timer only.
--
-- push() is all the request path does: O(1), no I/O, never blocks, no allocation: a request is six scalars
-- stored in six parallel ring arrays (a table per request cost its allocation in the log phase and its
-- collection later). When the queue is full the event is dropped and counted (a sidecar outage must never
-- slow or break a request, nor grow memory without bound). A timer drains the queue: build + encode a batch
-- into one buffer -> grpc_web_client.report_batch(); on failure it retries with exponential backoff for up
-- to max_retry_time, then drops the batch (counted). Errors are logged at most once per log_interval so an
-- outage cannot flood the error log; the first success after an outage logs once.
--
-- Counters live in the reporter (stats()) and, when conf.stats_dict names a lua_shared_dict, are mirrored
-- there so any worker (or a status endpoint) can read the totals of all workers.
local client = require("authwire.grpc_web_client")
local drops = require("authwire.drops")
local protobuf = require("authwire.protobuf")

local timer_at, now, sleep, log = ngx.timer.at, ngx.now, ngx.sleep, ngx.log
local ERR, WARN, NOTICE = ngx.ERR, ngx.WARN, ngx.NOTICE
local worker_exiting = ngx.worker.exiting
local min, setmetatable = math.min, setmetatable

local _M = {}
local mt = { __index = _M }

local DEFAULTS = {
  sidecar = "127.0.0.1:9181",
  connect_timeout = 1000, -- ms
  send_timeout = 2000,    -- ms
  read_timeout = 5000,    -- ms
  keepalive_timeout = 60000, -- ms; below aiohttp's 75 s idle close so we rarely meet a closed socket
  keepalive_pool = 4,
  batch_max_size = 200,
  flush_interval = 0.05,  -- s: how long the first event of a batch may wait for company
  queue_max = 10000,      -- events waiting per worker; beyond it new events are dropped and counted
  initial_retry_delay = 0.1, -- s, doubled per retry
  max_retry_delay = 5,    -- s
  max_retry_time = 30,    -- s a batch is retried before it is dropped (counted)
  log_interval = 10,      -- s between two error-log lines about the same outage
}
_M.DEFAULTS = DEFAULTS

local COUNTERS = { "pushed", "sent", "rejected", "dropped_queue_full", "dropped_send_failed", "send_errors",
                   "timer_errors", "encode_errors", "batches" }

local instances = {}

--- A reporter for `conf` (one per worker per name; later calls return the same one).
-- @param build function(a, b, c, d, e, f) -> AuthEvent table | nil, err: called in the sending timer with
--        the six values one push() queued, a batch at a time; the reporter encodes what it returns
function _M.new(conf, build)
  conf = conf or {}
  local name = conf.name or conf.sidecar or DEFAULTS.sidecar
  local self = instances[name]
  if self then
    return self
  end
  local c = {}
  for k, v in pairs(DEFAULTS) do
    c[k] = v
  end
  for k, v in pairs(conf) do
    c[k] = v
  end
  self = setmetatable({
    conf = c, name = name, cap = c.queue_max, batch_max = c.batch_max_size,
    -- events head..tail (counters), in slot (i - 1) % queue_max + 1 of each column
    q1 = {}, q2 = {}, q3 = {}, q4 = {}, q5 = {}, q6 = {}, head = 1, tail = 0,
    running = false, scheduled = false,
    failing = false, last_log = -1e9, suppressed = 0,
    stats_dict = c.stats_dict and ngx.shared[c.stats_dict] or nil,
    counters = {},
    build = build,
    unreported = drops.new(),
  }, mt)
  for _, k in ipairs(COUNTERS) do
    self.counters[k] = 0
  end
  self.build_slot = function(slot)
    return build(self.q1[slot], self.q2[slot], self.q3[slot], self.q4[slot], self.q5[slot], self.q6[slot])
  end
  self.encode_failed = function(err)
    self:inc("encode_errors", 1)
    self:log_limited(ERR, "cannot encode an event: ", err)
  end
  instances[name] = self
  return self
end

function _M:count()
  return self.tail - self.head + 1
end

local DROP_KIND = { dropped_queue_full = "queue_full", dropped_send_failed = "send_failed",
                    encode_errors = "encode_failed" }

function _M:inc(name, n)
  self.counters[name] = self.counters[name] + n
  local kind = DROP_KIND[name]
  if kind then
    self.unreported:add(kind, n)
  end
  local d = self.stats_dict
  if d then
    d:incr("authwire:" .. name, n, 0)
  end
end

-- Rate-limited error log: at most one line per log_interval; says how many were held back.
function _M:log_limited(level, ...)
  local t = now()
  if t - self.last_log < self.conf.log_interval then
    self.suppressed = self.suppressed + 1
    return
  end
  local held = self.suppressed
  self.last_log, self.suppressed = t, 0
  log(level, "authwire reporter [", self.name, "]: ", ...)
  if held > 0 then
    log(level, "authwire reporter [", self.name, "]: ", held, " similar messages suppressed")
  end
end

local flush

local function schedule(self, delay)
  if self.scheduled or self.running then
    return
  end
  local ok, err = timer_at(delay, flush, self)
  if not ok then
    self:inc("timer_errors", 1)
    self:log_limited(ERR, "cannot create flush timer: ", err)
    return
  end
  self.scheduled = true
end

--- Queue one request: up to six values (what `build` takes). Returns true, or false when it was dropped
-- (queue full).
function _M:push(a, b, c, d, e, f)
  local tail, cap = self.tail + 1, self.cap
  if tail - self.head >= cap then
    self:inc("dropped_queue_full", 1)
    self:log_limited(WARN, "queue full (", cap, " events), dropping new events")
    return false
  end
  -- a ring of queue_max slots: under steady load the queue never empties, and ever-growing indexes would
  -- move the table's entries into its hash part
  self.tail = tail
  local slot = (tail - 1) % cap + 1
  self.q1[slot], self.q2[slot], self.q3[slot], self.q4[slot], self.q5[slot], self.q6[slot] = a, b, c, d, e, f
  local counters = self.counters
  counters.pushed = counters.pushed + 1
  if self.stats_dict then
    self.stats_dict:incr("authwire:pushed", 1, 0)
  end
  if not (self.scheduled or self.running) then
    schedule(self, tail - self.head + 1 >= self.batch_max and 0 or self.conf.flush_interval)
  end
  return true
end

local function clear(q, from, to)
  for i = from, to do
    q[i] = nil
  end
end

-- Build and encode the next batch (at most batch_max_size events) and free its slots: the encoded events
-- as one ReportRequest.events string, and how many were taken and encoded.
local function encode_next(self)
  local n = min(self:count(), self.batch_max)
  if self.conf.ablate == "queue" then
    self.head = self.head + n
    return "", n, 0
  end
  local head, cap = self.head, self.cap
  local first = (head - 1) % cap + 1
  -- the batch's slots: first..first+n-1, wrapping at most once
  local n1 = min(n, cap - first + 1)
  local framed, good = protobuf.encode_events(n1, self.build_slot, self.encode_failed, first - 1)
  if n1 < n then
    local rest, good2 = protobuf.encode_events(n - n1, self.build_slot, self.encode_failed, 0)
    framed, good = framed .. rest, good + good2
  end
  for _, q in ipairs({ self.q1, self.q2, self.q3, self.q4, self.q5, self.q6 }) do
    clear(q, first, first + n1 - 1)
    clear(q, 1, n - n1)
  end
  self.head = head + n
  return framed, n, good
end

-- framed: the batch's events, encoded once (a retry re-sends these bytes); n: how many
local function send_with_retry(self, framed, n, exiting)
  local conf = self.conf
  local started = now()
  local attempt = 0
  while true do
    local resp, err = client.report_batch(conf, framed, self.unreported)
    if resp then
      self:inc("sent", resp.accepted)
      local nrej = #resp.rejections
      if nrej > 0 then
        self:inc("rejected", nrej)
        local r = resp.rejections[1]
        self:log_limited(WARN, "sidecar rejected ", nrej, " of ", n, " events; first: #", r.index,
                         " ", r.field, ": ", r.reason)
      end
      if self.failing then
        self.failing = false
        log(NOTICE, "authwire reporter [", self.name, "]: reporting resumed")
      end
      return true
    end
    self:inc("send_errors", 1)
    self.failing = true
    if exiting or now() - started >= conf.max_retry_time then
      self:inc("dropped_send_failed", n)
      self:log_limited(ERR, "dropping ", n, " events after ", attempt + 1, " attempts: ", err)
      return false
    end
    self:log_limited(ERR, "sending to sidecar failed (will retry with backoff): ", err)
    sleep(min(conf.max_retry_delay, conf.initial_retry_delay * 2 ^ attempt))
    attempt = attempt + 1
    if worker_exiting() then
      exiting = true
    end
  end
end

-- Send full batches; a partial one waits flush_interval for company (the next timer), except on exit.
-- Sending whatever trickled in during the previous send would mean one HTTP exchange per few events.
local function drain(self, exiting)
  repeat
    local framed, n, good = encode_next(self)
    if n > 0 then
      self:inc("batches", 1)
      if self.conf.ablate ~= "encode" then send_with_retry(self, framed, good, exiting) end
    end
  until self:count() == 0 or (self:count() < self.batch_max and not exiting)
end

function flush(premature, self)
  self.scheduled = false
  if self.running then
    return
  end
  self.running = true
  -- on worker exit (premature) try once to ship what is queued, without retries
  local ok, err = pcall(drain, self, premature or worker_exiting())
  self.running = false
  if not ok then
    self:log_limited(ERR, "flush failed: ", err)
  end
  if self:count() > 0 and not premature then
    schedule(self, self:count() >= self.conf.batch_max_size and 0 or self.conf.flush_interval)
  end
end

--- Counters of this worker's reporter, plus the current queue length.
function _M:stats()
  local s = { queued = self:count() }
  for k, v in pairs(self.counters) do
    s[k] = v
  end
  s.dropped = s.dropped_queue_full + s.dropped_send_failed
  return s
end

return _M

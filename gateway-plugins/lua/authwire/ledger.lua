-- Per-worker delivery bookkeeping shared by the APISIX and Kong adapters: what was queued, sent, rejected
-- and dropped (the plugin's stats), how many events are pending, the drops not yet told to the sidecar
-- (authwire.drops, carried in ReportRequest.drops), and warnings at most once per interval, so that an
-- outage costs a counter increment per request rather than a log line.
--
-- Pending is counted in total and per *lane* (one per queue the gateway keeps: APISIX keeps a batch
-- processor per plugin conf version, Kong a queue per plugin instance), so that one dead sidecar address
-- fills only its own lane's bound. Lanes are optional: queued/delivered/given_up without one count the
-- total only.
local drops = require("authwire.drops")

local ngx = ngx
local pairs, select, setmetatable = pairs, select, setmetatable

local _M = {}
local mt = { __index = _M }

local WARN_INTERVAL = 10 -- seconds
local DROP_KIND = { dropped_pending_full = "queue_full", dropped_queue_full = "queue_full",
                    dropped_send_failed = "send_failed", encode_errors = "encode_failed" }

--- full: the counter of queue-full drops (APISIX names it dropped_pending_full, Kong dropped_queue_full);
--- warn(...): the gateway's warning logger.
function _M.new(full, warn)
  return setmetatable({
    counters = { queued = 0, sent = 0, rejected = 0, [full] = 0, dropped_send_failed = 0, send_errors = 0,
                 encode_errors = 0, batches = 0 }, -- batches: encoded (once each; retries re-send the bytes)
    full = full,
    pending = 0, -- events handed to the gateway's queue and not yet sent or given up (all lanes)
    lanes = {},
    unreported = drops.new(),
    warn = warn,
    last_warn = -1e9,
  }, mt)
end

function _M:count(name, n)
  n = n or 1
  self.counters[name] = self.counters[name] + n
  local kind = DROP_KIND[name]
  if kind then
    self.unreported:add(kind, n)
  end
end

function _M:warn_limited(...)
  local now = ngx.now()
  if now - self.last_warn >= WARN_INTERVAL then
    self.last_warn = now
    self.warn(...)
  end
end

--- One event could not be queued: the queue is full (or refused it).
function _M:queue_full(...)
  self:count(self.full, 1)
  if select("#", ...) > 0 then
    self:warn_limited(...)
  end
end

--- The lane for `key` (e.g. APISIX's plugin.conf_version(conf)): {pending = n}; created on first use.
function _M:lane(key)
  local l = self.lanes[key]
  if not l then
    l = { pending = 0 }
    self.lanes[key] = l
  end
  return l
end

function _M:queued(lane)
  self.pending = self.pending + 1
  if lane then
    lane.pending = lane.pending + 1
  end
  self.counters.queued = self.counters.queued + 1
end

--- n events (default 1) could not be encoded: dropped and counted as encode_failed.
function _M:encode_failed(err, n)
  self:count("encode_errors", n or 1)
  self:warn_limited("authwire: cannot encode an event: ", err)
end

--- The sidecar accepted a report of n queued events.
function _M:delivered(n, resp, lane)
  self.pending = self.pending - n
  if lane then
    lane.pending = lane.pending - n
  end
  self.counters.sent = self.counters.sent + resp.accepted
  local nrej = #resp.rejections
  if nrej > 0 then
    self.counters.rejected = self.counters.rejected + nrej
    local r = resp.rejections[1]
    self:warn_limited("authwire: sidecar rejected ", nrej, " events; first: ", r.field, ": ", r.reason)
  end
end

function _M:send_failed()
  self.counters.send_errors = self.counters.send_errors + 1
end

--- The gateway's queue gives n events up after their last failed attempt.
function _M:given_up(n, lane)
  self.pending = self.pending - n
  if lane then
    lane.pending = lane.pending - n
  end
  self:count("dropped_send_failed", n)
end

--- n pending events leave the queue already counted (e.g. encode failures inside a batch).
function _M:settle(n, lane)
  self.pending = self.pending - n
  if lane then
    lane.pending = lane.pending - n
  end
end

function _M:stats()
  local s = { pending = self.pending }
  for k, v in pairs(self.counters) do
    s[k] = v
  end
  s.dropped = s[self.full] + s.dropped_send_failed + s.encode_errors
  s.untold = self.unreported:untold()
  return s
end

return _M

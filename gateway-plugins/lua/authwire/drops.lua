-- Drops not yet told to the sidecar (the "untold pool"). Each dropped event is added once. A report that
-- is about to be sent *claims* the pool: claim() moves every count out of the pool into the report (no
-- yield between reading and zeroing, so two batches in flight can never carry the same drops). If that
-- report fails, give_back() returns its claim to the pool for a later report; if it is accepted, the claim
-- is simply forgotten. The pool therefore never goes negative, and `authwire stats` (gateway.dropped) ends
-- up with every gateway-side loss exactly once, however many batches are in flight (retries, timers).
local _M = {}
local mt = { __index = _M }

_M.KINDS = { "queue_full", "send_failed", "encode_failed" }
local KINDS = _M.KINDS

function _M.new()
  return setmetatable({ queue_full = 0, send_failed = 0, encode_failed = 0 }, mt)
end

function _M:add(kind, n)
  self[kind] = self[kind] + (n or 1)
end

--- Take everything out of the pool: a {queue_full, send_failed, encode_failed} table for one report, or
--- nil when there is nothing to tell.
function _M:claim()
  if self.queue_full == 0 and self.send_failed == 0 and self.encode_failed == 0 then
    return nil
  end
  local c = { queue_full = self.queue_full, send_failed = self.send_failed, encode_failed = self.encode_failed }
  self.queue_full, self.send_failed, self.encode_failed = 0, 0, 0
  return c
end

--- The report that carried `claim` failed: its drops are untold again.
function _M:give_back(claim)
  if claim then
    for i = 1, #KINDS do
      local k = KINDS[i]
      self[k] = self[k] + claim[k]
    end
  end
end

--- What the pool holds now (a copy, for stats and tests).
function _M:untold()
  return { queue_full = self.queue_full, send_failed = self.send_failed, encode_failed = self.encode_failed }
end

return _M

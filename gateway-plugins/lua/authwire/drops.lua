-- Drops not yet told to the sidecar. Each dropped event is added once; a report carries a snapshot in
-- ReportRequest.drops, and only an accepted report takes the snapshot off (a failed one leaves it for the
-- next), so `authwire stats` (gateway.dropped) ends up with every gateway-side loss exactly once.
local _M = {}
local mt = { __index = _M }

local KINDS = { "queue_full", "send_failed", "encode_failed" }

function _M.new()
  return setmetatable({ queue_full = 0, send_failed = 0, encode_failed = 0 }, mt)
end

function _M:add(kind, n)
  self[kind] = self[kind] + (n or 1)
end

--- A copy to send, or nil when there is nothing to tell.
function _M:snapshot()
  if self.queue_full == 0 and self.send_failed == 0 and self.encode_failed == 0 then
    return nil
  end
  return { queue_full = self.queue_full, send_failed = self.send_failed, encode_failed = self.encode_failed }
end

--- The sidecar accepted a report that carried `snap`.
function _M:delivered(snap)
  if snap then
    for _, k in ipairs(KINDS) do
      self[k] = self[k] - snap[k]
    end
  end
end

return _M

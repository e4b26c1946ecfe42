-- Stand-in of kong.tools.queue (Kong 3.x): Queue.enqueue(queue_conf, handler, handler_conf, value) and
-- Queue.get_params(conf). One queue per name; a timer drains it in batches of up to max_batch_size,
-- waiting up to max_coalescing_delay for a batch to fill; handler(conf, entries) -> ok, err is retried
-- with exponential backoff (initial_retry_delay doubling, capped at max_retry_delay) until
-- max_retry_time has passed since the first attempt, then the batch is dropped and logged. When
-- max_entries are waiting, the oldest entry is dropped to make room (logged once per full episode).
local Queue = {}
local queues = {}

local now, sleep = ngx.now, ngx.sleep

local function count(q)
  return q.back - q.front
end

local function drop_front(q, n)
  for _ = 1, n do
    q.entries[q.front] = nil
    q.front = q.front + 1
  end
end

local function process_once(q)
  local started = now()
  while count(q) < q.max_batch_size and now() - started < q.max_coalescing_delay do
    sleep(0.01)
  end
  local n = math.min(count(q), q.max_batch_size)
  local batch = { unpack(q.entries, q.front, q.front + n - 1) }
  local start_time = now()
  local retry = 0
  while true do
    local ok, err = q.handler(q.handler_conf, batch)
    if ok then
      break
    end
    if now() - start_time > q.max_retry_time then
      kong.log.err(string.format("queue %s: could not send entries, giving up after %d retries.  %d queue "
                                 .. "entries were lost", q.name, retry, n))
      break
    end
    kong.log.warn("queue ", q.name, ": handler could not process entries: ", tostring(err))
    sleep(math.min(q.max_retry_delay, 2 ^ retry * q.initial_retry_delay))
    retry = retry + 1
  end
  drop_front(q, math.min(n, count(q)))
  q.full = false
end

local function run(premature, q)
  if premature then
    return
  end
  while count(q) > 0 do
    process_once(q)
  end
  queues[q.name] = nil
end

function Queue.get_params(conf)
  local qc = conf.queue or {}
  if not qc.name then
    qc.name = kong.plugin.get_id()
  end
  return qc
end

function Queue.enqueue(queue_conf, handler, handler_conf, value)
  assert(type(queue_conf) == "table" and type(handler) == "function")
  local q = queues[queue_conf.name]
  if not q then
    q = { name = queue_conf.name, handler = handler, entries = {}, front = 1, back = 1 }
    for k, v in pairs(queue_conf) do
      q[k] = v
    end
    local ok, err = ngx.timer.at(0, run, q)
    if not ok then
      return nil, "cannot start queue timer: " .. tostring(err)
    end
    queues[q.name] = q
  end
  q.handler_conf = handler_conf
  if count(q) >= q.max_entries then
    if not q.full then
      q.full = true
      kong.log.err("queue ", q.name, ": queue full, dropping old entries until processing is successful again")
    end
    drop_front(q, 1)
  end
  q.entries[q.back] = value
  q.back = q.back + 1
  return true
end

return Queue

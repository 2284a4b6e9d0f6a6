-- ssehub's one script: every change is one call, atomic in Redis.
-- KEYS: 1 source hash, 2 history stream, 3 partition stream, 4 source set, 5 name index, 6 epoch
-- ARGV[1]: e (emit), c (create), d (delete), x (clear), w (write back); ARGV[2]: source id;
-- ARGV[3]: partition stream MAXLEN (~); ARGV[4]: the epoch the node knows; then per op (below).
-- An epoch that is not the node's means Redis lost data: LOST, nothing done.
local op, src, plen = ARGV[1], ARGV[2], ARGV[3]
if op ~= 'w' and redis.call('GET', KEYS[6]) ~= ARGV[4] then return redis.error_reply('LOST data (epoch)') end

-- The next id after `last`: this millisecond, or the same one continued,
-- so a source's ids increase even over a Redis restarted without its data.
local function next_id(last)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local ms, seq = string.match(last, '^(%d+)-(%d+)$')
  ms, seq = tonumber(ms), tonumber(seq)
  if now > ms then return string.format('%.0f-0', now) end
  return string.format('%.0f-%.0f', ms, seq + 1)
end

if op == 'e' then
  -- ARGV 5 --history, 6 emit id (node:counter), 7 payload. Returns {id, previous id} or nil (no such source).
  local last = redis.call('HGET', KEYS[1], 'last')
  if not last then return false end
  -- One more than --history is kept: the oldest is the newest evicted
  -- (what the gap signal compares with), known without a read per emit.
  local id = redis.call('XADD', KEYS[2], 'MAXLEN', '=', tonumber(ARGV[5]) + 1, next_id(last), 'p', ARGV[7], 'e', ARGV[6], 'v', last)
  redis.call('HSET', KEYS[1], 'last', id)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', plen, '*', 't', 'e', 's', src, 'i', id, 'v', last, 'e', ARGV[6], 'p', ARGV[7])
  return {id, last}
elseif op == 'c' or op == 'w' then
  -- ARGV 5 account, 6 name, 7 endpoint key, 8 created_at; for w (a source written back
  -- after Redis lost it) 9 the newest id the node served. c: error TAKEN if the name is.
  local name = ARGV[5] .. '\n' .. ARGV[6]
  if redis.call('HSETNX', KEYS[5], name, src) == 0 and op == 'c' then return redis.error_reply('TAKEN name') end
  redis.call('HSET', KEYS[1], 'account', ARGV[5], 'name', ARGV[6], 'endpoint', ARGV[7], 'created', ARGV[8])
  if op == 'c' then
    redis.call('HSET', KEYS[1], 'last', '0-0')
  else
    -- Never below an id served: the floor rises; what is gone counts as evicted.
    local last = redis.call('HGET', KEYS[1], 'last')
    local function less(a, b)
      local am, as = string.match(a, '^(%d+)-(%d+)$')
      local bm, bs = string.match(b, '^(%d+)-(%d+)$')
      return tonumber(am) < tonumber(bm) or (tonumber(am) == tonumber(bm) and tonumber(as) < tonumber(bs))
    end
    if not last or less(last, ARGV[9]) then
      redis.call('HSET', KEYS[1], 'last', ARGV[9])
      if ARGV[9] ~= '0-0' then redis.call('HSET', KEYS[1], 'evicted', ARGV[9]) end
    end
  end
  redis.call('SADD', KEYS[4], src)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', plen, '*', 't', 'c', 's', src, 'a', ARGV[5], 'n', ARGV[6], 'k', ARGV[7], 'at', ARGV[8])
  return 1
elseif op == 'd' then
  local f = redis.call('HMGET', KEYS[1], 'account', 'name')
  if f[1] and f[2] then
    local name = f[1] .. '\n' .. f[2]
    if redis.call('HGET', KEYS[5], name) == src then redis.call('HDEL', KEYS[5], name) end
  end
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SREM', KEYS[4], src)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', plen, '*', 't', 'd', 's', src)
  return 1
elseif op == 'x' then
  local last = redis.call('HGET', KEYS[1], 'last')
  if not last then return 0 end
  redis.call('XTRIM', KEYS[2], 'MAXLEN', 0)
  if last ~= '0-0' then redis.call('HSET', KEYS[1], 'evicted', last) end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', plen, '*', 't', 'x', 's', src, 'i', last)
  return 1
end
return redis.error_reply('ERR unknown ssehub op')

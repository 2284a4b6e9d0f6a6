-- ssehub's one script: every change is one call, atomic in Redis.
-- KEYS: 1 source hash, 2 history stream, 3 partition stream, 4 source set, 5 name index
-- ARGV[1]: e (emit), c (create), d (delete), x (clear); ARGV[2]: source id;
-- ARGV[3]: partition stream MAXLEN (~); then per op (below).
local op, src, plen = ARGV[1], ARGV[2], ARGV[3]
if op == 'e' then
  -- ARGV 4 history, 5 emit id (node:counter), 6 payload. Returns {id, previous id} or nil (no such source).
  local last = redis.call('HGET', KEYS[1], 'last')
  if not last then return false end
  local history = tonumber(ARGV[4])
  if history > 0 and redis.call('XLEN', KEYS[2]) >= history then
    local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
    if oldest[1] then redis.call('HSET', KEYS[1], 'evicted', oldest[1][1]) end
  end
  local id = redis.call('XADD', KEYS[2], 'MAXLEN', '=', history, '*', 'p', ARGV[6], 'e', ARGV[5])
  if history == 0 then redis.call('HSET', KEYS[1], 'evicted', id) end
  redis.call('HSET', KEYS[1], 'last', id)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', plen, '*', 't', 'e', 's', src, 'i', id, 'v', last, 'e', ARGV[5], 'p', ARGV[6])
  return {id, last}
elseif op == 'c' then
  -- ARGV 4 account, 5 name, 6 endpoint key, 7 created_at. Error TAKEN if the name is.
  local name = ARGV[4] .. '\n' .. ARGV[5]
  if redis.call('HSETNX', KEYS[5], name, src) == 0 then return redis.error_reply('TAKEN name') end
  redis.call('HSET', KEYS[1], 'account', ARGV[4], 'name', ARGV[5], 'endpoint', ARGV[6], 'created', ARGV[7], 'last', '0-0')
  redis.call('SADD', KEYS[4], src)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', plen, '*', 't', 'c', 's', src, 'a', ARGV[4], 'n', ARGV[5], 'k', ARGV[6], 'at', ARGV[7])
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

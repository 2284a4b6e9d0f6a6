-- ssehub's one script: every change is one call, atomic in Redis.
-- KEYS: 1 source hash, 2 history stream, 3 partition stream, 4 source set, 5 name index, 6 epoch
-- (E: three per emit, then the epoch, always last).
-- ARGV[1]: E (emits), c (create), d (delete), x (clear), w (write back), v (signature check),
-- T (token made), R (token revoked), P (probe: no other ARGV); ARGV[2]: source id;
-- ARGV[3]: partition stream MAXLEN (~); ARGV[4]: the epoch the node knows; then per op (below).
-- An epoch that is not the node's means Redis lost data: LOST, nothing done.
local op, src, plen = ARGV[1], ARGV[2], ARGV[3]
-- P: the probe while Redis refuses changes (KEYS: 1 the probe key): one write, refused
-- exactly when a change's first write is (OOM, MISCONF, READONLY, NOREPLICAS).
if op == 'P' then return redis.call('SET', KEYS[1], '1') end
if op ~= 'w' and redis.call('GET', KEYS[#KEYS]) ~= ARGV[4] then return redis.error_reply('LOST data (epoch)') end

if op == 'E' then
  -- Emits, one after another. KEYS per emit: source hash, history, partition (then the epoch);
  -- ARGV 5 --history + 1, then per emit: source id, emit id (node:counter), payload.
  -- Returns per emit {id, previous id}, or false (no such source).
  -- Redis assigns the id (`*`: above the stream's last, even if its clock went back; a
  -- stream written back after a loss starts above the newest id served, see w).
  -- At least one more than --history is kept: of the newest --history + 1, the oldest is
  -- the newest evicted (what the gap signal compares with), known without a read per emit.
  -- `~` trims whole nodes only (<= 4 KiB or 100 entries more), where `=` walks the
  -- first node on every append: 17 % of Redis's CPU per emit.
  -- A call's events for one partition go in one partition record, in order: pairs
  -- `e` (source, id, id before, emit id) and `p` (payload), one pair per event.
  local keep, out, lasts, records, partitions = ARGV[5], {}, {}, {}, {}
  for i = 0, (#KEYS - 1) / 3 - 1 do
    local hash, history, partition = KEYS[i * 3 + 1], KEYS[i * 3 + 2], KEYS[i * 3 + 3]
    local source, emit, payload = ARGV[6 + i * 3], ARGV[7 + i * 3], ARGV[8 + i * 3]
    local last = lasts[hash]
    if last == nil then last = redis.call('HGET', hash, 'last') end
    if not last then
      out[i + 1] = false
    else
      local id = redis.call('XADD', history, 'MAXLEN', '~', keep, '*', 'p', payload, 'v', last)
      local record = records[partition]
      if record == nil then
        record = {'XADD', partition, 'MAXLEN', '~', plen, '*'}
        records[partition] = record
        partitions[#partitions + 1] = partition
      end
      local n = #record
      record[n + 1], record[n + 2], record[n + 3], record[n + 4] = 'e', source .. ' ' .. id .. ' ' .. last .. ' ' .. emit, 'p', payload
      lasts[hash] = id
      out[i + 1] = {id, last}
    end
  end
  -- A partition keeps at most about ARGV[3] events (and two calls' more): a record of
  -- k events trims the stream to ARGV[3] / k records.
  for _, partition in ipairs(partitions) do
    local record = records[partition]
    record[5] = math.ceil(tonumber(plen) * 4 / (#record - 6))
    redis.call(unpack(record))
  end
  for hash, last in pairs(lasts) do
    if last then redis.call('HSET', hash, 'last', last) end
  end
  return out
elseif op == 'c' or op == 'w' then
  -- ARGV 5 account, 6 name, 7 endpoint key, 8 created_at, 9 for w (a source written back
  -- after Redis lost it) the newest id the node served, 10 the signature check's settings
  -- ('' for none). c: error TAKEN if the name is.
  local name = ARGV[5] .. '\n' .. ARGV[6]
  if redis.call('HSETNX', KEYS[5], name, src) == 0 and op == 'c' then return redis.error_reply('TAKEN name') end
  redis.call('HSET', KEYS[1], 'account', ARGV[5], 'name', ARGV[6], 'endpoint', ARGV[7], 'created', ARGV[8])
  if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'verify', ARGV[10]) else redis.call('HDEL', KEYS[1], 'verify') end
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
      if ARGV[9] ~= '0-0' then
        redis.call('HSET', KEYS[1], 'evicted', ARGV[9])
        -- An empty history stream starts above it: the next `*` id is greater.
        if redis.call('XLEN', KEYS[2]) == 0 then redis.pcall('XADD', KEYS[2], 'MAXLEN', '0', ARGV[9], 'x', '') end
      end
    end
  end
  redis.call('SADD', KEYS[4], src)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', plen, '*', 't', 'c', 's', src, 'a', ARGV[5], 'n', ARGV[6], 'k', ARGV[7], 'at', ARGV[8], 'j', ARGV[10])
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
elseif op == 'v' then
  -- ARGV 5: the signature check's settings, '' to remove it.
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'verify', ARGV[5]) else redis.call('HDEL', KEYS[1], 'verify') end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', plen, '*', 't', 'v', 's', src, 'j', ARGV[5])
  return 1
elseif op == 'T' then
  -- ARGV 5 token, 6 expires_at, 7 now (unix ms): kept in the source's hash as tok:<token>,
  -- so deleting the source revokes it; expired ones are dropped here.
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 4) == 'tok:' and tonumber(all[i + 1]) <= tonumber(ARGV[7]) then redis.call('HDEL', KEYS[1], all[i]) end
  end
  redis.call('HSET', KEYS[1], 'tok:' .. ARGV[5], ARGV[6])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', plen, '*', 't', 'T', 's', src, 'k', ARGV[5], 'x', ARGV[6])
  return 1
elseif op == 'R' then
  -- ARGV 5 token.
  redis.call('HDEL', KEYS[1], 'tok:' .. ARGV[5])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', plen, '*', 't', 'R', 's', src, 'k', ARGV[5])
  return 1
end
return redis.error_reply('ERR unknown ssehub op')

-- ssehub's one script: every change is one call, atomic in Redis.
-- KEYS: 1 source hash, 2 history stream, 3 partition stream, 4 source set, 5 name index,
-- 6 idempotency keys, 7 their order, 8 epoch (E: three per emit, five with an idempotency
-- key, then the epoch, always last).
-- ARGV[1]: E (emits), c (create), d (delete), x (clear), w (write back), v (signature check),
-- r (retention), a (age trim), T (token made), R (token revoked), P (probe: no other ARGV); ARGV[2]: source id;
-- ARGV[3]: partition stream MAXLEN (~); ARGV[4]: the epoch the node knows; then per op (below).
-- An epoch that is not the node's means Redis lost data: LOST, nothing done.
local op, src, plen = ARGV[1], ARGV[2], ARGV[3]
-- P: the probe while Redis refuses changes (KEYS: 1 the probe key): one write, refused
-- exactly when a change's first write is (OOM, MISCONF, READONLY, NOREPLICAS).
if op == 'P' then return redis.call('SET', KEYS[1], '1') end
if op ~= 'w' and redis.call('GET', KEYS[#KEYS]) ~= ARGV[4] then return redis.error_reply('LOST data (epoch)') end

local function less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  return tonumber(am) < tonumber(bm) or (tonumber(am) == tonumber(bm) and tonumber(as) < tonumber(bs))
end

-- Age: the history's events of `cut` (now - max_age, unix ms) and before go, as the rings'
-- (`XTRIM MINID`, Redis 6.2), the newest of them kept as the newest evicted (a node
-- loading later tells the gap).
local function age_trim(hash, history, cut)
  if cut <= 0 then return end
  local older = redis.call('XREVRANGE', history, string.format('%d', cut), '-', 'COUNT', 1)
  if #older == 0 then return end
  local newest = older[1][1]
  local evicted = redis.call('HGET', hash, 'evicted')
  if not evicted or less(evicted, newest) then redis.call('HSET', hash, 'evicted', newest) end
  redis.call('XTRIM', history, 'MINID', string.format('%d', cut + 1))
end

if op == 'E' then
  -- Emits, one after another. KEYS per emit: source hash, history, partition, and with an
  -- idempotency key its source's keys and their order (then the epoch); ARGV 5 --history
  -- + 1, 6 --idempotency-keys, 7 now (the node's unix ms), then per emit: source id, emit id (node:counter), payload, the
  -- hex hashes of its idempotency key and of its body ('' and '' without a key).
  -- Returns per emit {id, previous id}, or {'R', id} (the key was used with this body: the
  -- id it got, nothing appended), {'C'} (used with another body), or false (no such source);
  -- then per partition record written {'P', partition, its id}.
  -- A key is kept (hash: key -> 'body id'; list: 'key id', oldest first) 24 h after its
  -- event's id, at most ARGV[6] per source; decided here, so two nodes given the same key
  -- at once store one event.
  -- The id: `<ms>-*` (below; above the stream's last whatever the clocks; a stream
  -- written back after a loss starts above the newest id served, see w).
  -- At least one more than --history is kept: of the newest --history + 1, the oldest is
  -- the newest evicted (what the gap signal compares with), known without a read per emit.
  -- `~` trims whole nodes only (<= 4 KiB or 100 entries more), where `=` walks the
  -- first node on every append: 17 % of Redis's CPU per emit.
  -- A call's events for one partition go in one partition record, in order: pairs
  -- `e` (source, id, id before, emit id) and `p` (payload), one pair per event.
  local keep, max_keys, now, out, lasts, records, partitions = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), {}, {}, {}, {}
  local life, keeps = 86400000, {}
  local function ms(id) return tonumber(string.match(id, '(%d+)%-')) end
  local k = 1
  for i = 0, (#ARGV - 7) / 5 - 1 do
    local source, emit, payload, key, body = ARGV[8 + i * 5], ARGV[9 + i * 5], ARGV[10 + i * 5], ARGV[11 + i * 5], ARGV[12 + i * 5]
    local hash, history, partition, idem, order = KEYS[k], KEYS[k + 1], KEYS[k + 2], nil, nil
    if key ~= '' then idem, order, k = KEYS[k + 3], KEYS[k + 4], k + 5 else k = k + 3 end
    -- A source's history keeps its own max_events + 1 (`keep` in its hash; else --history + 1).
    -- One with an age bound (`age` ms in its hash) loses what is past it, once a call.
    local last, skeep = lasts[hash], nil
    if last == nil then
      local f = redis.call('HMGET', hash, 'last', 'keep', 'age')
      last, skeep = f[1], f[2]
      if last and f[3] then age_trim(hash, history, now - tonumber(f[3])) end
    end
    local kept = false
    if last and key ~= '' then
      kept = redis.call('HGET', idem, key)
      if kept and ms(string.sub(kept, #body + 2)) + life <= now then kept = false end
    end
    if not last then
      out[i + 1] = false
    elseif kept then
      if string.sub(kept, 1, #body) == body then out[i + 1] = {'R', string.sub(kept, #body + 2)} else out[i + 1] = {'C'} end
    else
      -- The id's millisecond is the submitting node's clock (ARGV 7), or the last id's if that
      -- is later (a clock behind, another node's ahead): ids increase per source, and a
      -- node's age bound and its ids share one clock. Redis's own (`*`) if it refuses that.
      local maxlen, lm = skeep or keeps[hash] or keep, string.match(last, '^(%d+)-')
      local at = ARGV[7]
      if tonumber(lm) > now then at = lm end
      local id = redis.pcall('XADD', history, 'MAXLEN', '~', maxlen, at .. '-*', 'p', payload, 'v', last)
      if type(id) == 'table' then id = redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'p', payload, 'v', last) end
      keeps[hash] = skeep or keeps[hash]
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
      if key ~= '' then
        redis.call('HSET', idem, key, body .. ' ' .. id)
        local n = redis.call('RPUSH', order, key .. ' ' .. id)
        -- Forget the oldest past the count, and those 24 h older than this event.
        while n > 0 do
          local first = redis.call('LINDEX', order, 0)
          local k, at = string.match(first, '^(%S+) (%S+)$')
          if n <= max_keys and ms(at) + life > ms(id) then break end
          redis.call('LPOP', order)
          n = n - 1
          -- A key used again later (after it expired) has its newer entry.
          local now_kept = redis.call('HGET', idem, k)
          if now_kept and string.sub(now_kept, -#at - 1) == ' ' .. at then redis.call('HDEL', idem, k) end
        end
      end
    end
  end
  -- A partition keeps at most about ARGV[3] events (and two calls' more): a record of
  -- k events trims the stream to ARGV[3] / k records.
  -- After the emits' answers, each record's partition and id (a node checks after a
  -- failover that the new master has what it wrote).
  for _, partition in ipairs(partitions) do
    local record = records[partition]
    record[5] = math.ceil(tonumber(plen) * 4 / (#record - 6))
    out[#out + 1] = {'P', partition, redis.call(unpack(record))}
  end
  for hash, last in pairs(lasts) do
    if last then redis.call('HSET', hash, 'last', last) end
  end
  return out
elseif op == 'c' or op == 'w' then
  -- ARGV 5 account, 6 name, 7 endpoint key, 8 created_at, 9 for w (a source written back
  -- after Redis lost it) the newest id the node served, 10 the signature check's settings
  -- ('' for none), 11 its retention ('max_events max_age_s max_bytes', '-' for the
  -- server's), 12 its history's length (max_events in effect + 1), 13 its age bound in
  -- effect (ms, '' for none). c: error TAKEN if the name is.
  local name = ARGV[5] .. '\n' .. ARGV[6]
  if redis.call('HSETNX', KEYS[5], name, src) == 0 and op == 'c' then return redis.error_reply('TAKEN name') end
  redis.call('HSET', KEYS[1], 'account', ARGV[5], 'name', ARGV[6], 'endpoint', ARGV[7], 'created', ARGV[8], 'ret', ARGV[11], 'keep', ARGV[12])
  if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'verify', ARGV[10]) else redis.call('HDEL', KEYS[1], 'verify') end
  if ARGV[13] ~= '' then redis.call('HSET', KEYS[1], 'age', ARGV[13]) else redis.call('HDEL', KEYS[1], 'age') end
  if op == 'c' then
    redis.call('HSET', KEYS[1], 'last', '0-0')
  elseif ARGV[9] ~= '0-0' then
    -- Never below an id served: the floor rises; what is gone counts as evicted. Gone:
    -- the id served is not in the history where the history reaches back past it (an
    -- emit that reached this server before the write-back does not hide the loss),
    -- and no eviction covers it (a count bound's trim, a clear, an age).
    local served, last = ARGV[9], redis.call('HGET', KEYS[1], 'last')
    if not last or less(last, served) then redis.call('HSET', KEYS[1], 'last', served) end
    local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
    local evicted = redis.call('HGET', KEYS[1], 'evicted')
    local gone = #redis.call('XRANGE', KEYS[2], served, served) == 0 and (oldest == nil or less(oldest[1], served))
    if gone and (not evicted or less(evicted, served)) then redis.call('HSET', KEYS[1], 'evicted', served) end
    -- An empty history stream starts above it: the next `*` id is greater.
    if oldest == nil then redis.pcall('XADD', KEYS[2], 'MAXLEN', '0', served, 'x', '') end
  end
  redis.call('SADD', KEYS[4], src)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', plen, '*', 't', 'c', 's', src, 'a', ARGV[5], 'n', ARGV[6], 'k', ARGV[7], 'at', ARGV[8], 'j', ARGV[10], 'r', ARGV[11])
  return 1
elseif op == 'd' then
  local f = redis.call('HMGET', KEYS[1], 'account', 'name')
  if f[1] and f[2] then
    local name = f[1] .. '\n' .. f[2]
    if redis.call('HGET', KEYS[5], name) == src then redis.call('HDEL', KEYS[5], name) end
  end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[6], KEYS[7])
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
elseif op == 'r' then
  -- ARGV 5: the retention ('max_events max_age_s max_bytes', '-' for the server's), 6 the
  -- history's length (max_events in effect + 1): a smaller one trims it now, 7 the age
  -- bound in effect (ms, '' for none), 8 now (the node's unix ms). Every node applies
  -- the record to its ring (age and bytes are each node's, by the same rule).
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  -- Past the smaller of the old and the new length, the newest is the newest evicted
  -- (so a load after a larger bound brings nothing back: `~` leaves some in the stream).
  local keep = tonumber(ARGV[6])
  local before = tonumber(redis.call('HGET', KEYS[1], 'keep') or ARGV[6])
  if before < keep then keep = before end
  redis.call('HSET', KEYS[1], 'ret', ARGV[5], 'keep', ARGV[6])
  local over = redis.call('XLEN', KEYS[2]) - keep + 1
  if over > 0 then
    local gone = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', over)
    local newest = gone[#gone][1]
    local evicted = redis.call('HGET', KEYS[1], 'evicted')
    if not evicted or less(evicted, newest) then redis.call('HSET', KEYS[1], 'evicted', newest) end
  end
  redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', ARGV[6])
  if ARGV[7] ~= '' then
    redis.call('HSET', KEYS[1], 'age', ARGV[7])
    age_trim(KEYS[1], KEYS[2], tonumber(ARGV[8]) - tonumber(ARGV[7]))
  else
    redis.call('HDEL', KEYS[1], 'age')
  end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', plen, '*', 't', 'r', 's', src, 'r', ARGV[5])
  return 1
elseif op == 'a' then
  -- A node's age deadline of the source came: ARGV 5 now - max_age (unix ms).
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  age_trim(KEYS[1], KEYS[2], tonumber(ARGV[5]))
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

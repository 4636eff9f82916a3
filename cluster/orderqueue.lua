-- The institution's order queue (orderqueue.go): one script, every step
-- atomic. Times are Redis's clock in milliseconds, the same for every node.
--
-- KEYS: 1 q:seq (arrival counter), 2 q:line (queued tickets by arrival),
-- 3 q:seen (queued tickets by last follow), 4 q:clients (queued orders per
-- client), 5 q:sending (tickets being sent -> node), 6 q:ver (changes),
-- 7 nodes (live nodes by heartbeat, members.go), 8 q:gap (the call that
-- holds up the next claim), 9 q:o:<ticket> (the ticket's record, a hash;
-- any key for the ops that name no ticket).
-- ARGV: 1 op, 2 prefix of records (q:o:), 3 ms a line's keys live after
-- their last change, 4 ms an outcome is kept; then the op's.
--
-- A record: seq, path, body, client, meta (JSON), at, seen, state, reason,
-- answer (JSON), done, node. Records of other tickets than KEYS[9] are
-- named from ARGV[2]: s360edge needs a standalone Redis (README.md).
local op, recs = ARGV[1], ARGV[2]
local lineKeep, keep = tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function changed()
  redis.call('INCR', KEYS[6])
  for i = 1, 6 do redis.call('PEXPIRE', KEYS[i], lineKeep) end
end

-- unline takes ticket, of client, out of the line.
local function unline(ticket, client)
  redis.call('ZREM', KEYS[2], ticket)
  redis.call('ZREM', KEYS[3], ticket)
  if client and redis.call('HINCRBY', KEYS[4], client, -1) <= 0 then redis.call('HDEL', KEYS[4], client) end
end

-- finish gives record k its outcome, kept for keep ms.
local function finish(k, state, reason)
  redis.call('HSET', k, 'state', state, 'reason', reason, 'done', now)
  redis.call('HDEL', k, 'body')
  redis.call('PEXPIRE', k, keep)
end

if op == 'enqueue' then
  -- ARGV: 5 ticket, 6 client, 7 max, 8 per client, 9 path, 10 body, 11 meta.
  -- Returns {0, position, at} when queued, {1} for a ticket known already
  -- (not queued again: a retry is idempotent), {2} when the line is full,
  -- {3} when the client has its share. Nothing is written before the checks.
  if redis.call('EXISTS', KEYS[9]) == 1 then return {1} end
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[7]) then return {2} end
  if (tonumber(redis.call('HGET', KEYS[4], ARGV[6])) or 0) >= tonumber(ARGV[8]) then return {3} end
  local seq = redis.call('INCR', KEYS[1])
  -- A counter that expired or was lost never puts an order before others.
  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  if last[2] and tonumber(last[2]) >= seq then
    seq = tonumber(last[2]) + 1
    redis.call('SET', KEYS[1], seq)
  end
  redis.call('HSET', KEYS[9], 'seq', seq, 'path', ARGV[9], 'body', ARGV[10], 'client', ARGV[6], 'meta', ARGV[11],
    'at', now, 'state', 'queued')
  redis.call('PEXPIRE', KEYS[9], lineKeep)
  redis.call('ZADD', KEYS[2], seq, ARGV[5])
  redis.call('ZADD', KEYS[3], now, ARGV[5])
  redis.call('HINCRBY', KEYS[4], ARGV[6], 1)
  changed()
  return {0, redis.call('ZCARD', KEYS[2]), now}

elseif op == 'head' then
  -- The head of the line, for the budget's admission: ticket, path,
  -- client, meta, at; false when the line is empty.
  local h = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #h == 0 then return false end
  local r = redis.call('HMGET', recs .. h[1], 'path', 'client', 'meta', 'at')
  return {h[1], r[1], r[2], r[3], r[4]}

elseif op == 'claim' then
  -- ARGV: 5 node, 6 gap ms, 7 '1' to put back first the orders marked
  -- sending by this node whose claim it never heard of, 8... the tickets
  -- this node is sending. Marks the head sending by node, before its call.
  -- Returns {0} for an empty line, {1, ms} while the last claimed call
  -- holds up the next, else {2, ticket, seq, path, body, client, meta, at}.
  local node = ARGV[5]
  local back = false
  if ARGV[7] == '1' then
    local mine = {}
    for i = 8, #ARGV do mine[ARGV[i]] = true end
    local s = redis.call('HGETALL', KEYS[5])
    for i = 1, #s, 2 do
      local k = recs .. s[i]
      if s[i + 1] == node and not mine[s[i]] and redis.call('HGET', k, 'state') == 'sending' then
        -- Never sent: back to its place.
        local r = redis.call('HMGET', k, 'seq', 'client')
        redis.call('HSET', k, 'state', 'queued')
        redis.call('HDEL', k, 'node')
        redis.call('HDEL', KEYS[5], s[i])
        redis.call('ZADD', KEYS[2], r[1], s[i])
        redis.call('ZADD', KEYS[3], now, s[i])
        redis.call('HINCRBY', KEYS[4], r[2], 1)
        back = true
      end
    end
  end
  if back then changed() end
  local gap = redis.call('PTTL', KEYS[8])
  if gap > 0 then return {1, gap} end
  while true do
    local h = redis.call('ZPOPMIN', KEYS[2])
    if #h == 0 then return {0} end
    local ticket, k = h[1], recs .. h[1]
    local r = redis.call('HMGET', k, 'state', 'seq', 'path', 'body', 'client', 'meta', 'at')
    unline(ticket, r[5])
    if r[1] == 'queued' then
      redis.call('HSET', k, 'state', 'sending', 'node', node)
      redis.call('HDEL', k, 'body')
      redis.call('HSET', KEYS[5], ticket, node)
      redis.call('SET', KEYS[8], ticket, 'PX', ARGV[6])
      -- The claimer is alive: a sweep must not take it for dead before
      -- its next heartbeat.
      redis.call('ZADD', KEYS[7], 'XX', now, node)
      changed()
      return {2, ticket, r[2], r[3], r[4], r[5], r[6], r[7]}
    end
    -- Not queued (its record expired): dropped.
  end

elseif op == 'outcome' then
  -- ARGV: 5 ticket, 6 node, 7 state, 8 reason, 9 answer. Written over
  -- sending, or over order_unknown when a sweep took the node for dead
  -- while it was cut off; a record Redis lost is written anew.
  local r = redis.call('HMGET', KEYS[9], 'state', 'node', 'reason')
  if r[1] and r[2] ~= ARGV[6] then return 0 end
  if r[1] and r[1] ~= 'sending' and not (r[1] == 'failed' and r[3] == 'order_unknown') then return 1 end
  redis.call('HSET', KEYS[9], 'answer', ARGV[9], 'node', ARGV[6])
  finish(KEYS[9], ARGV[7], ARGV[8])
  redis.call('HDEL', KEYS[5], ARGV[5])
  if redis.call('GET', KEYS[8]) == ARGV[5] then redis.call('DEL', KEYS[8]) end
  changed()
  return 1

elseif op == 'withdraw' then
  -- ARGV: 5 ticket, 6 reason. Only a queued order: {1}; else {0, state}.
  local r = redis.call('HMGET', KEYS[9], 'state', 'client')
  if r[1] ~= 'queued' then return {0, r[1]} end
  unline(ARGV[5], r[2])
  finish(KEYS[9], 'withdrawn', ARGV[6])
  changed()
  return {1}

elseif op == 'view' then
  -- ARGV: 5 ticket, 6 '1' to record a follow. Returns state, reason,
  -- client, meta, at, done, answer and the 0-based rank in the line (-1
  -- when not queued); false for an unknown ticket.
  local r = redis.call('HMGET', KEYS[9], 'state', 'reason', 'client', 'meta', 'at', 'done', 'answer')
  if not r[1] then return false end
  local rank = -1
  if r[1] == 'queued' then
    rank = redis.call('ZRANK', KEYS[2], ARGV[5]) or -1
    if ARGV[6] == '1' then
      redis.call('ZADD', KEYS[3], 'XX', now, ARGV[5])
      redis.call('PEXPIRE', KEYS[9], lineKeep)
    end
  end
  r[8] = rank
  return r

elseif op == 'touch' then
  -- ARGV: 5... tickets followed now.
  for i = 5, #ARGV do
    if redis.call('ZADD', KEYS[3], 'XX', 'CH', now, ARGV[i]) == 1 then
      redis.call('PEXPIRE', recs .. ARGV[i], lineKeep)
    end
  end
  return 0

elseif op == 'sweep' then
  -- ARGV: 5 abandon after ms, 6 ms after which a node unseen is dead, 7
  -- most orders to abandon. Withdraws the queued orders nobody followed;
  -- reports unknown the orders a dead node was sending. Any node may run
  -- it, as often as it likes. Returns {abandoned, unknown}.
  local n, u = 0, 0
  for _, ticket in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[5]), 'LIMIT', 0, tonumber(ARGV[7]))) do
    local k = recs .. ticket
    local r = redis.call('HMGET', k, 'state', 'client')
    unline(ticket, r[1] == 'queued' and r[2])
    if r[1] == 'queued' then
      finish(k, 'withdrawn', 'abandoned')
      n = n + 1
    end
  end
  local s = redis.call('HGETALL', KEYS[5])
  for i = 1, #s, 2 do
    local seen = tonumber(redis.call('ZSCORE', KEYS[7], s[i + 1]))
    if not seen or now - seen > tonumber(ARGV[6]) then
      local k = recs .. s[i]
      if redis.call('HGET', k, 'state') == 'sending' then
        finish(k, 'failed', 'order_unknown')
        u = u + 1
      end
      redis.call('HDEL', KEYS[5], s[i])
    end
  end
  if n + u > 0 then changed() end
  return {n, u}

elseif op == 'stats' then
  -- The line's length and its head's arrival (0 when empty).
  local h = redis.call('ZRANGE', KEYS[2], 0, 0)
  local at = 0
  if h[1] then at = tonumber(redis.call('HGET', recs .. h[1], 'at')) or 0 end
  return {redis.call('ZCARD', KEYS[2]), at}
end
return redis.error_reply('orderqueue.lua: unknown operation ' .. tostring(op))

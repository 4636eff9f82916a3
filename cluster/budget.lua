-- The cluster's one budget (cluster/budget.go): every decision that must
-- be atomic across nodes is one call of this script, so that N nodes make
-- at most the configured calls in any window, as one budget.Budget would.
-- Redis TIME is the one clock. Times are microseconds (scores, hash fields);
-- pause lengths are milliseconds (PX). Big numbers go to Redis through
-- fmt(): Lua's default conversion keeps 14 digits, too few for µs.
--
-- KEYS (the same layout for every operation; unused ones are never touched):
--   1  window    ZSET  the grants of the last window: score = grant time,
--                      member = node:sequence (unique), then " <method>"
--                      when the call has one
--   2  limit     HASH  the adaptive limit: eff (effective limit; absent =
--                      the configured one), grown (its last increase or
--                      decrease), refused (the last pushback of any scope),
--                      cut and from (the time of its last decrease by a
--                      refusal, and the limit before it)
--   3  pause     STR   the institution pause, PX = its remaining length
--   4  mpause    STR   the call's method pause
--   5  kpause    STR   the call's key pause (only read when ARGV[16] = 1)
--   6  client    ZSET  the call's client's quota calls (score = time)
--   7  probing   STR   set while, after an institution pause, calls go one
--                      at a time until a success
--   8  probe     STR   the lease of the probe out now, PX = probe timeout
--   9  refusals  ZSET  the last window's pushbacks: member = JSON
--                      [method, key, unique]
--   10 backoff   STR   the institution's last pause without Retry-After
--   11 mbackoff  STR   the method's last pause without Retry-After
--   12 paused    ZSET  the key and method pauses ("k:<key>", "m:<method>"),
--                      score = end in ms, for statistics
--   13 fcalls    ZSET  fair sharing: the clients' Foreground grants of the
--                      window, member = client|unique, score = time
--   14 factive   ZSET  fair sharing: the active clients, score = their
--                      last ask
--   15 fuse      HASH  fair sharing: client -> its grants in fcalls
--   16 answers   ZSET  the last window's answers that were not pushbacks:
--                      score = time, member = "<method> node:sequence"
--   17 mlimit    HASH  the limits learned for methods, six fields each:
--                      <method>|e (the limit), |g (last change), |r (last
--                      refusal of the method), |c, |b and |s (the time of
--                      its last decrease by a refusal, the limit before it,
--                      and the method's grants since)
--
-- ARGV (common):
--   1 operation: acquire | pushback | success | rejoin | stats | restore
--   2 a unique member prefix: node:sequence
--   3 window (µs)        4 configured limit (Calls)   5 fixed limit: 1 or 0
--   6 adaptive step      7 lowest adaptive limit      8 probe timeout (ms)
--   9 first pause (ms)   10 longest pause (ms)
-- ARGV from 11, by operation:
--   acquire:  11 priority (0 order, 1 queued order, 2 watch, 3 foreground, 4 background)
--             12 the effective limit the caller computed its numbers for
--             13 the priority's allowance   14 client quota (0: none)
--             15 client window (µs)          16 1 when the call has a key
--             17 this node's cap on its grants in the window (0: none),
--                for a window after it rejoins: the nodes not back yet
--                decide alone, and the window does not hold their grants
--             18 this node's member prefix (node:)
--             19 the Foreground allowance the clients share fairly (0:
--                no fair sharing, or not a client's Foreground call)
--             20 the client   21 the most clients tracked (MaxClients)
--             22 the call's method ("" for none)
--   pushback: 11 method   12 key ("" for none)   13 Retry-After (ms, 0: none)
--   success:  11 method
--   rejoin:   11.. pairs (member, time) of this node's grants of the last
--             window: time > 0 is Redis's clock (µs), time < 0 an age (µs)
--   restore:  11 the limit learned before a restart, 12.. pairs (method,
--             its limit learned before the restart)
--
-- Replies: acquire {code, calls in window, wait µs, effective limit,
-- institution pause µs (0 for orders, which do not look), the method's
-- learned limit (0: none)} with code 0 granted (wait = grant time), 1
-- stale (recompute for the limit returned), 2 paused key or method (calls
-- = 1 key, 2 method), 3 institution pause, 4 window full, 5 probe out, 6
-- client quota or fair share, 7 the method's learned limit used (wait
-- until its next slot); pushback {scope 0 call 1 key 2 method 3
-- institution, started 0/1, pause ms, effective limit, the method's
-- learned limit}; success {1 when the institution is free again,
-- effective limit, the method's learned limit}; rejoin {calls in window,
-- effective limit}; restore {calls in window, effective limit, then for
-- each learned method limit: method, limit}; stats {calls, effective
-- limit, pause ms, probing 0/1, paused keys, active clients, number of
-- paused methods, the paused methods..., then for each learned method
-- limit: method, limit, calls of the method in the window}.
--
-- The learned limits follow budget/adaptive.go: a refusal of a method
-- lowers its limit to 0.9 × its answers in the window, one of the
-- institution the effective limit to 0.9 × all answers, one of a method
-- that made three quarters of them both; a refusal that lowered a limit,
-- or came before any grant under the last decrease (an echo), pauses
-- nothing unless it carries a Retry-After.

local op = ARGV[1]
local uniq = ARGV[2]
local win = tonumber(ARGV[3])
local calls = tonumber(ARGV[4])
local fixed = ARGV[5] == '1'
local step = tonumber(ARGV[6])
local minLimit = tonumber(ARGV[7])
local probeTimeout = tonumber(ARGV[8])
local firstPause = tonumber(ARGV[9])
local maxPause = tonumber(ARGV[10])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nowMs = math.floor(now / 1000)
local winMs = math.ceil(win / 1000)

local function fmt(x) return string.format('%.0f', x) end

local function pttl(k)
  local v = redis.call('PTTL', k)
  if v < 0 then return 0 end
  return v
end

-- The limit climbs back from its lowest to Calls in this long: the hash
-- may expire then, which means the configured limit.
local limitTTL = (math.ceil(calls / step) + 2) * winMs

-- effective is the limit in force, after the additive increase: step per
-- full window since the later of the last change and the last pushback.
local function effective()
  if fixed then return calls end
  local h = redis.call('HMGET', KEYS[2], 'eff', 'grown', 'refused')
  local eff = tonumber(h[1])
  if not eff or eff >= calls then return calls end
  local from = math.max(tonumber(h[2]) or now, tonumber(h[3]) or 0)
  local n = math.floor((now - from) / win)
  if n > 0 then
    eff = math.min(calls, eff + n * step)
    redis.call('HSET', KEYS[2], 'eff', eff, 'grown', fmt(from + n * win))
    redis.call('PEXPIRE', KEYS[2], limitTTL)
  end
  return eff
end

-- used prunes the window and counts it: a grant at g holds its slot
-- during [g, g + window).
local function used()
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now - win))
  return redis.call('ZCARD', KEYS[1])
end

local function grantAt(k, at, member, ttl)
  redis.call('ZADD', k, fmt(at), member)
  redis.call('PEXPIRE', k, ttl)
end

-- The method of a member of the window ("<uniq> <method>": after the last
-- space) or of the answers ("<method> <uniq>": before the first).
local function methodOf(member, first)
  if first then
    local i = string.find(member, ' ', 1, true)
    if not i then return '' end
    return string.sub(member, 1, i - 1)
  end
  return string.match(member, ' ([^ ]*)$') or ''
end

-- grantsOf lists the scores of method's grants in the window, oldest
-- first (the window is pruned by used()).
local function grantsOf(method)
  local out = {}
  local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do
    if methodOf(all[i], false) == method then out[#out + 1] = tonumber(all[i + 1]) end
  end
  return out
end

-- newest is the time of the window's newest grant.
local function newest()
  local g = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  return tonumber(g[2]) or 0
end

-- answered counts the window's answers, all of them and method's.
local function answered(method)
  redis.call('ZREMRANGEBYSCORE', KEYS[16], '-inf', fmt(now - win))
  local all = redis.call('ZRANGE', KEYS[16], 0, -1)
  local mine = 0
  for _, m in ipairs(all) do
    if method ~= '' and methodOf(m, true) == method then mine = mine + 1 end
  end
  return #all, mine
end

local mfields = {'|e', '|g', '|r', '|c', '|b', '|s'}

local function forget(method)
  local f = {}
  for i, x in ipairs(mfields) do f[i] = method .. x end
  redis.call('HDEL', KEYS[17], unpack(f))
end

-- methodEffective is method's learned limit after the additive increase,
-- nil when it has none (or grew back to the configured one).
local function methodEffective(method)
  if fixed or method == '' then return nil end
  local h = redis.call('HMGET', KEYS[17], method .. '|e', method .. '|g', method .. '|r')
  local eff = tonumber(h[1])
  if not eff then return nil end
  local from = math.max(tonumber(h[2]) or now, tonumber(h[3]) or 0)
  local n = math.max(math.floor((now - from) / win), 0)
  eff = eff + n * step
  if eff >= calls then
    -- Grown back, or rate_limit was lowered below it.
    forget(method)
    return nil
  end
  if n > 0 then
    redis.call('HSET', KEYS[17], method .. '|e', eff, method .. '|g', fmt(from + n * win))
    redis.call('PEXPIRE', KEYS[17], limitTTL)
  end
  return eff
end

-- appendMethodLimits appends to out each method's learned limit in force:
-- method, limit, and with withCalls its grants in the window.
local function appendMethodLimits(out, withCalls)
  local h = redis.call('HGETALL', KEYS[17])
  for i = 1, #h, 2 do
    if string.sub(h[i], -2) == '|e' then
      local m = string.sub(h[i], 1, -3)
      local l = methodEffective(m)
      if l then
        out[#out + 1] = m
        out[#out + 1] = l
        if withCalls then out[#out + 1] = #grantsOf(m) end
      end
    end
  end
  return out
end

-- Fair sharing, as budget/quota.go: a client is active from each call it
-- asks for until a window later; its use is its grants in the window.
-- pruneFair forgets what left the window.
local function pruneFair()
  local cut = fmt(now - win)
  local old = redis.call('ZRANGEBYSCORE', KEYS[13], '-inf', cut)
  for _, m in ipairs(old) do
    local c = string.sub(m, 1, string.find(m, '|', 1, true) - 1)
    if redis.call('HINCRBY', KEYS[15], c, -1) <= 0 then redis.call('HDEL', KEYS[15], c) end
  end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[13], '-inf', cut) end
  redis.call('ZREMRANGEBYSCORE', KEYS[14], '-inf', cut)
end

-- heldFair is 0 unless client, at or beyond its share a/n, would take a
-- slot of the ones owed to the other active clients' unused shares (with
-- used calls in the window): then the wait (µs) until it is back within
-- its share.
local function heldFair(a, client, used)
  local n = redis.call('ZCARD', KEYS[14])
  local u = tonumber(redis.call('HGET', KEYS[15], client)) or 0
  if u * n < a then return 0 end
  -- In n-ths of a call: the others' unused shares.
  local owed, users = 0, 0
  local h = redis.call('HGETALL', KEYS[15])
  for i = 1, #h, 2 do
    users = users + 1
    owed = owed + math.max(a - tonumber(h[i + 1]) * n, 0)
  end
  owed = owed + (n - users) * a
  if owed == 0 or (a - used - 1) * n >= owed then return 0 end
  -- Back within its share once its use is at most (a-1)/n: its kth oldest
  -- call must age out.
  local k = u - math.floor((a - 1) / n)
  local prefix = client .. '|'
  local all = redis.call('ZRANGE', KEYS[13], 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, #prefix) == prefix then
      k = k - 1
      if k == 0 then return math.max(tonumber(all[i + 1]) + win - now, 1) end
    end
  end
  return win
end

if op == 'acquire' then
  local p = tonumber(ARGV[11])
  local eff = effective()
  local method = ARGV[22]
  local meff = methodEffective(method)
  if eff ~= tonumber(ARGV[12]) then return {1, 0, 0, eff, 0, meff or 0} end
  if ARGV[16] == '1' then
    local ms = pttl(KEYS[5])
    if ms > 0 then return {2, 1, ms * 1000, eff, 0, meff or 0} end
  end
  local ms = pttl(KEYS[4])
  if ms > 0 then return {2, 2, ms * 1000, eff, 0, meff or 0} end
  if meff then
    used()
    local g = grantsOf(method)
    if #g >= meff then
      -- The (#g - meff + 1)th oldest of its grants must age out first.
      return {7, #g, math.max(g[#g - meff + 1] + win - now, 1), eff, 0, meff}
    end
  end
  local fa, client = tonumber(ARGV[19]), ARGV[20]
  if fa > 0 then
    pruneFair()
    if not redis.call('ZSCORE', KEYS[14], client) and redis.call('ZCARD', KEYS[14]) >= tonumber(ARGV[21]) then
      client = '\0overflow' -- beyond MaxClients, newcomers count as one
    end
    grantAt(KEYS[14], now, client, winMs + 1000)
  end
  -- The quota refuses at once, before the window: waiting would not help.
  local quota = tonumber(ARGV[14])
  local cw = tonumber(ARGV[15])
  if quota > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', fmt(now - cw))
    local n = redis.call('ZCARD', KEYS[6])
    if n >= quota then
      local g = redis.call('ZRANGE', KEYS[6], n - quota, n - quota, 'WITHSCORES')
      return {6, n, math.max(tonumber(g[2]) + cw - now, 1), eff, 0, meff or 0}
    end
  end
  local n = used()
  if fa > 0 then
    local held = heldFair(fa, client, n)
    if held > 0 then return {6, n, held, eff, 0, meff or 0} end
  end
  -- Orders pass the institution pause and the probe: a buyer is paying.
  local pause = 0
  if p ~= 0 then pause = pttl(KEYS[3]) * 1000 end
  local slot = 0
  local allowance = tonumber(ARGV[13])
  if n >= allowance then
    -- The (n - allowance)th oldest grant must age out first.
    local i = n - allowance
    local g = redis.call('ZRANGE', KEYS[1], i, i, 'WITHSCORES')
    slot = math.max(tonumber(g[2]) + win - now, 1)
  end
  local cap = tonumber(ARGV[17])
  if cap > 0 and slot == 0 then
    local own = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
    local mine, oldest = 0, nil
    for i = 1, #own, 2 do
      if string.sub(own[i], 1, #ARGV[18]) == ARGV[18] then
        mine = mine + 1
        oldest = oldest or tonumber(own[i + 1])
      end
    end
    if mine >= cap then slot = math.max(oldest + win - now, 1) end
  end
  if pause > 0 then return {3, n, math.max(pause, slot), eff, pause, meff or 0} end
  if slot > 0 then return {4, n, slot, eff, 0, meff or 0} end
  local probing = p ~= 0 and redis.call('EXISTS', KEYS[7]) == 1
  if probing then
    ms = pttl(KEYS[8])
    if ms > 0 then return {5, n, ms * 1000, eff, 0, meff or 0} end
    redis.call('SET', KEYS[8], uniq, 'PX', probeTimeout)
  end
  grantAt(KEYS[1], now, uniq, 2 * winMs + 1000)
  if quota > 0 then grantAt(KEYS[6], now, uniq, math.ceil(cw / 1000) + 1000) end
  if fa > 0 then
    grantAt(KEYS[13], now, client .. '|' .. uniq, 2 * winMs + 1000)
    redis.call('HINCRBY', KEYS[15], client, 1)
    redis.call('PEXPIRE', KEYS[15], 2 * winMs + 1000)
  end
  if meff then redis.call('HINCRBY', KEYS[17], method .. '|s', 1) end
  return {0, n + 1, now, eff, 0, meff or 0}

elseif op == 'pushback' then
  local method, key, retryAfter = ARGV[11], ARGV[12], tonumber(ARGV[13])
  local eff = effective()
  local n = used()
  redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', fmt(now - win))
  local past = redis.call('ZRANGE', KEYS[9], 0, -1)
  if #past >= 256 then
    redis.call('ZREMRANGEBYRANK', KEYS[9], 0, 0)
    table.remove(past, 1)
  end
  grantAt(KEYS[9], now, cjson.encode({method, key, uniq}), winMs + 1000)
  if not fixed then
    redis.call('HSET', KEYS[2], 'refused', fmt(now))
    redis.call('PEXPIRE', KEYS[2], limitTTL)
  end

  -- The scope, by budget/scope.go's rules on the cluster's counts.
  local meff = methodEffective(method)
  if meff then redis.call('HSET', KEYS[17], method .. '|r', fmt(now)) end
  local scope
  if pttl(KEYS[3]) > 0 or n >= eff - math.max(1, math.floor(eff / 20)) then
    scope = 3
  elseif pttl(KEYS[4]) > 0 then
    scope = 2
  elseif meff and #grantsOf(method) >= meff - math.max(1, math.floor(meff / 20)) then
    scope = 2
  else
    local others = false
    for _, m in ipairs(past) do
      local r = cjson.decode(m)
      if r[1] ~= method then scope = 3; break end
      others = others or r[2] == '' or r[2] ~= key
    end
    if not scope then
      if others then scope = 2 elseif key == '' then scope = 0 else scope = 1 end
    end
  end

  -- What the refusal teaches (a pause or a method pause in force: an
  -- echo, nothing).
  if not fixed and ((scope == 3 and pttl(KEYS[3]) == 0) or (scope == 2 and pttl(KEYS[4]) == 0)) then
    local total, mine = answered(method)
    local most = method ~= '' and mine > 0 and 4 * mine >= 3 * total
    local explained = false
    if scope == 3 then
      -- Other methods' decreases in this window: the institution's limit
      -- explains their refusals too.
      local h = redis.call('HGETALL', KEYS[17])
      for i = 1, #h, 2 do
        local m = string.sub(h[i], 1, -3)
        if string.sub(h[i], -2) == '|c' and m ~= method and now - tonumber(h[i + 1]) < win then
          local l = redis.call('HMGET', KEYS[17], m .. '|e', m .. '|b')
          local e, b = tonumber(l[1]), tonumber(l[2])
          if e and b and b > e then
            if b >= calls then
              forget(m)
            else
              redis.call('HSET', KEYS[17], m .. '|e', b)
              redis.call('HDEL', KEYS[17], m .. '|c', m .. '|s')
            end
          end
        end
      end
    end
    if scope == 3 or most then
      local cut = tonumber(redis.call('HGET', KEYS[2], 'cut'))
      if cut and newest() <= cut then
        explained = true
      else
        local to = math.max(math.floor(total * 9 / 10), minLimit)
        if to < eff then
          redis.call('HSET', KEYS[2], 'eff', to, 'grown', fmt(now), 'refused', fmt(now), 'cut', fmt(now), 'from', eff)
          redis.call('PEXPIRE', KEYS[2], limitTTL)
          eff, explained = to, true
        end
      end
    end
    if (scope == 2 or most) and method ~= '' then
      local l = redis.call('HMGET', KEYS[17], method .. '|c', method .. '|s')
      if meff and l[1] and (tonumber(l[2]) or 0) == 0 then
        explained = true
      else
        local to = math.max(math.floor(mine * 9 / 10), minLimit)
        if to < (meff or calls) and (meff or redis.call('HLEN', KEYS[17]) < #mfields * 64) then
          redis.call('HSET', KEYS[17], method .. '|e', to, method .. '|g', fmt(now), method .. '|r', fmt(now),
            method .. '|c', fmt(now), method .. '|b', meff or calls, method .. '|s', 0)
          redis.call('PEXPIRE', KEYS[17], limitTTL)
          meff, explained = to, true
        end
      end
    end
    if explained and retryAfter <= 0 then
      -- The lowered limits hold the calls: no pause. A refusal of a
      -- method says nothing about the institution: another probe may go.
      if scope ~= 3 then redis.call('DEL', KEYS[8]) end
      return {scope, 0, 0, eff, meff or 0}
    end
  end

  local started, pause = 0, 0
  if scope == 3 then
    local left = pttl(KEYS[3])
    local d = 0
    if retryAfter > 0 then
      d = retryAfter
    elseif left == 0 then
      local b = tonumber(redis.call('GET', KEYS[10]))
      if b then b = math.min(2 * b, maxPause) else b = firstPause end
      redis.call('SET', KEYS[10], b, 'PX', 2 * maxPause + probeTimeout)
      d = b
    end
    d = math.min(d, maxPause)
    if d > left then
      redis.call('SET', KEYS[3], fmt(nowMs + d), 'PX', d)
      pause = d
      if left == 0 then started = 1 end
    end
    redis.call('SET', KEYS[7], '1', 'PX', math.max(d, left) + maxPause + probeTimeout)
    redis.call('DEL', KEYS[8])
    return {scope, started, pause, eff, meff or 0}
  end

  if scope == 2 then
    local left = pttl(KEYS[4])
    local d = retryAfter
    if d <= 0 and left == 0 then
      local b = tonumber(redis.call('GET', KEYS[11])) or 0
      b = math.min(math.max(2 * b, firstPause), maxPause)
      redis.call('SET', KEYS[11], b, 'PX', 2 * maxPause + winMs)
      d = b
    end
    d = math.min(d, maxPause)
    if d > left then
      redis.call('SET', KEYS[4], '1', 'PX', d)
      grantAt(KEYS[12], nowMs + d, 'm:' .. method, maxPause + 1000)
    end
    if left == 0 then started, pause = 1, d end
  elseif scope == 1 then
    local d = retryAfter
    if d <= 0 then d = firstPause end
    d = math.min(d, maxPause)
    local left = pttl(KEYS[5])
    if d > left then
      redis.call('SET', KEYS[5], '1', 'PX', d)
      grantAt(KEYS[12], nowMs + d, 'k:' .. key, maxPause + 1000)
    end
    if left == 0 then started, pause = 1, d end
  end
  -- A refusal of a key or a method says nothing about the institution:
  -- another probe may go.
  redis.call('DEL', KEYS[8])
  return {scope, started, pause, eff, meff or 0}

elseif op == 'success' then
  local method = ARGV[11]
  redis.call('ZREMRANGEBYSCORE', KEYS[16], '-inf', fmt(now - win))
  grantAt(KEYS[16], now, method .. ' ' .. uniq, winMs + 1000)
  local eff = effective()
  local meff = methodEffective(method)
  -- An answer that came before any grant under a limit just lowered is to
  -- a call S-360 counted before it refused: the limit rises to 0.9 × the
  -- answers, never above what it was.
  if not fixed then
    local h = redis.call('HMGET', KEYS[2], 'cut', 'from')
    local cut, from = tonumber(h[1]), tonumber(h[2])
    if cut and from and newest() <= cut then
      local total = answered('')
      local to = math.min(math.floor(total * 9 / 10), from)
      if to > eff then
        redis.call('HSET', KEYS[2], 'eff', to)
        eff = to
      end
    end
    if meff then
      local l = redis.call('HMGET', KEYS[17], method .. '|c', method .. '|b', method .. '|s')
      cut, from = tonumber(l[1]), tonumber(l[2])
      if cut and from and (tonumber(l[3]) or 0) == 0 then
        local _, mine = answered(method)
        local to = math.min(math.floor(mine * 9 / 10), from)
        if to > meff then
          redis.call('HSET', KEYS[17], method .. '|e', to)
          meff = to
        end
      end
    end
  end
  if pttl(KEYS[4]) == 0 then redis.call('DEL', KEYS[11]) end
  -- During a pause the answer is to a call sent before it.
  if pttl(KEYS[3]) > 0 then return {0, eff, meff or 0} end
  redis.call('DEL', KEYS[10], KEYS[7], KEYS[8])
  return {1, eff, meff or 0}

elseif op == 'rejoin' then
  for i = 11, #ARGV - 1, 2 do
    local at = tonumber(ARGV[i + 1])
    if at < 0 then at = now + at end
    grantAt(KEYS[1], at, ARGV[i], 2 * winMs + 1000)
  end
  return {used(), effective()}

elseif op == 'restore' then
  if not fixed and redis.call('HEXISTS', KEYS[2], 'eff') == 0 and tonumber(ARGV[11]) > 0 then
    local l = math.max(math.min(tonumber(ARGV[11]), calls), minLimit)
    if l < calls then
      redis.call('HSET', KEYS[2], 'eff', l, 'grown', fmt(now))
      redis.call('PEXPIRE', KEYS[2], limitTTL)
    end
  end
  for i = 12, #ARGV - 1, 2 do
    local m, l = ARGV[i], math.max(tonumber(ARGV[i + 1]), minLimit)
    if not fixed and l < calls and redis.call('HEXISTS', KEYS[17], m .. '|e') == 0 and redis.call('HLEN', KEYS[17]) < #mfields * 64 then
      redis.call('HSET', KEYS[17], m .. '|e', l, m .. '|g', fmt(now))
      redis.call('PEXPIRE', KEYS[17], limitTTL)
    end
  end
  return appendMethodLimits({used(), effective()}, false)

elseif op == 'stats' then
  pruneFair()
  local out = {used(), effective(), pttl(KEYS[3]), redis.call('EXISTS', KEYS[7]), 0, redis.call('ZCARD', KEYS[14]), 0}
  redis.call('ZREMRANGEBYSCORE', KEYS[12], '-inf', nowMs)
  for _, m in ipairs(redis.call('ZRANGE', KEYS[12], 0, -1)) do
    if string.sub(m, 1, 2) == 'k:' then
      out[5] = out[5] + 1
    else
      out[#out + 1] = string.sub(m, 3)
      out[7] = out[7] + 1
    end
  end
  return appendMethodLimits(out, true)
end
return redis.error_reply('budget.lua: unknown operation ' .. tostring(op))

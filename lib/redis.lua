-- numballoc's allocator in Redis: every operation is one call of this script, so each runs
-- atomically on the server (no read-modify-write across round trips). lib/redis.js sends it.
--
-- KEYS (one hash tag, so they live in one Cluster slot):
--   1 meta     hash: format, capacity, policy, cursor (cyclic: where the next search starts),
--              token (the last fencing token handed out; only grows)
--   2 bits     string: bit n set while n is held (BITPOS finds free numbers)
--   3 held     hash: n -> "owner:token" (who holds n, under which grant)
--   4 byowner  sorted set, every score 0: "owner:n" for each held n (an owner's numbers by prefix)
--   5 leases   sorted set: owner -> the server time (ms) at which its lease ends
--   6 owners   hash: owner -> "pid host" (what holderOf reports)
-- ARGV[1] is the operation; the rest are its arguments. Replies are arrays whose first item is a
-- status: 0 done, -1 no free number, -2 the owner's lease was lost, -3 not held (ARGV index),
-- -4 a block search cut short (where to go on from).
-- A lease is over when the server's clock reaches its end; whoever runs the next allocation
-- after that gives its numbers back (reclaim_expired), so no sweeper process is needed.

local FORMAT = '1'
-- The most numbers one call frees (releasing or reclaiming an owner) and the most steps of one
-- block search: Redis serves nobody else while a script runs, so a script's work is bounded and
-- the caller calls again for the rest.
local CHUNK = 1024
local BLOCK_STEPS = 1024
-- The largest capacity (MAX_REDIS_CAPACITY in redis.js).
local MAX_CAPACITY = 16777216
local POLICIES = { any = true, lowest = true, cyclic = true }
local op = ARGV[1]
local meta, bits, held, byowner, leases, owners = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Gives back up to `budget` numbers `owner` holds, and forgets the owner once it holds none;
-- returns how many it gave back and whether that was all.
local function release_owner(owner, budget)
  local from, to = '[' .. owner .. ':', '[' .. owner .. ';'
  local members = redis.call('ZRANGEBYLEX', byowner, from, to, 'LIMIT', 0, budget)
  for _, member in ipairs(members) do
    local n = string.sub(member, #owner + 2)
    redis.call('SETBIT', bits, n, 0)
    redis.call('HDEL', held, n)
  end
  if #members > 0 then
    redis.call('ZREM', byowner, unpack(members))
    redis.call('HINCRBY', meta, 'held', -#members)
  end
  if #members < budget then
    redis.call('ZREM', leases, owner)
    redis.call('HDEL', owners, owner)
    return #members, true
  end
  return #members, false
end

-- Gives back up to CHUNK numbers of owners whose lease ended at or before `now` (at most 64
-- owners); returns how many.
local function reclaim_expired(now)
  local freed, budget = 0, CHUNK
  for _ = 1, 64 do
    local dead = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 1)
    if #dead == 0 then break end
    local n, all = release_owner(dead[1], budget)
    freed, budget = freed + n, budget - n
    if not all or budget == 0 then break end
  end
  return freed
end

-- True, with the lease extended to now + lease_ms, if `owner` holds a lease that has not ended;
-- otherwise its numbers go back (if the lease ended but nobody had reclaimed it yet) and false.
local function renew(owner, now, lease_ms)
  local ends = redis.call('ZSCORE', leases, owner)
  if not ends then return false end
  if tonumber(ends) <= now then
    release_owner(owner, CHUNK) -- the rest, if any, goes back through reclaim_expired
    return false
  end
  redis.call('ZADD', leases, 'GT', now + lease_ms, owner)
  return true
end

local function not_allocator(what)
  return redis.error_reply('NUMBALLOC_NOT_ALLOCATOR ' .. what)
end

local function another_type(key)
  return not_allocator(key .. ' is a ' .. redis.call('TYPE', key).ok .. ', not part of a numballoc allocator')
end

-- `command` on `key`, or nil if the key is of another type: a raw WRONGTYPE would abort the
-- script with an error that names no allocator.
local function read(command, key)
  local reply = redis.pcall(command, key)
  if type(reply) == 'table' and reply.err then return nil end
  return reply
end

-- An error unless the keys agree with each other: a key evicted (maxmemory with an allkeys-*
-- policy) or deleted behind the allocator's back would otherwise read as free numbers; a key
-- replaced by another type is not this allocator's any more. `count` is meta's count of numbers
-- held.
local function intact(cap, count)
  local lengths = {}
  for i, check in ipairs({ { 'STRLEN', bits }, { 'HLEN', held }, { 'ZCARD', byowner }, { 'ZCARD', leases }, { 'HLEN', owners } }) do
    lengths[i] = read(check[1], check[2])
    if lengths[i] == nil then return another_type(check[2]) end
  end
  if lengths[1] ~= math.ceil(cap / 8) or lengths[2] ~= count or lengths[3] ~= count or lengths[4] ~= lengths[5] then
    return redis.error_reply('NUMBALLOC_GONE keys of the allocator were evicted or deleted (Redis must keep them: maxmemory-policy noeviction or volatile-*)')
  end
  return nil
end

-- Field `text` as an integer; `default` if absent; nil if it is not one.
local function integer(text, default)
  if not text then return default end
  local n = tonumber(text)
  if n and n == math.floor(n) then return n end
  return nil
end

-- The allocator's capacity and policy from its meta key, or an error reply third: gone when
-- there is no meta key, not an allocator when it is not one this script wrote (another type of
-- key, another format, fields that do not parse), so that no operation runs on what it cannot
-- read. Then the other keys must agree with it (intact).
local function described()
  local fields = redis.pcall('HMGET', meta, 'format', 'capacity', 'policy', 'token', 'cursor', 'held')
  if fields.err then return nil, nil, another_type(meta) end
  local format, cap, policy, token, cursor, count = unpack(fields, 1, 6)
  if not format then
    if redis.call('EXISTS', meta) == 0 then
      return nil, nil, redis.error_reply('NUMBALLOC_GONE the allocator\'s keys are gone (deleted, or a server restarted without persistence)')
    end
    return nil, nil, not_allocator(meta .. ' has no format: not a numballoc allocator')
  end
  if format ~= FORMAT then return nil, nil, not_allocator(meta .. ' has format ' .. format .. '; this numballoc reads format ' .. FORMAT) end
  cap, token, cursor, count = integer(cap), integer(token), integer(cursor, 0), integer(count, 0)
  if not cap or cap < 1 or cap > MAX_CAPACITY or not POLICIES[policy] or not token or not cursor or cursor < 0 or cursor >= cap or not count then
    return nil, nil, not_allocator(meta .. ' holds fields that are not a numballoc allocator\'s (capacity, policy, token, cursor, held)')
  end
  local damaged = intact(cap, count)
  if damaged then return nil, nil, damaged end
  return cap, policy
end

-- The first free number in [lo, hi] at or after `start`, wrapping to lo; nil when none.
local function first_free(lo, hi, start)
  if start < lo or start > hi then start = lo end
  local n = redis.call('BITPOS', bits, 0, start, hi, 'BIT')
  if n >= 0 then return n end
  if start > lo then
    n = redis.call('BITPOS', bits, 0, lo, start - 1, 'BIT')
    if n >= 0 then return n end
  end
  return nil
end

-- The first run of `count` free numbers at or after `p` starting at a multiple of `align`: the
-- first number, or nil and where to go on from after BLOCK_STEPS steps (nil, nil when none).
local function first_block(cap, count, align, p)
  for _ = 1, BLOCK_STEPS do
    p = math.ceil(p / align) * align
    if p + count > cap then return nil, nil end
    local z = redis.call('BITPOS', bits, 0, p, cap - 1, 'BIT')
    if z < 0 then return nil, nil end
    if z > p then
      p = z
    else
      local s = redis.call('BITPOS', bits, 1, p, p + count - 1, 'BIT')
      if s < 0 then return p end
      p = s + 1
    end
  end
  return nil, p
end

-- Where a single-number search starts: the policy decides.
local function start_of(policy, lo, hint)
  if policy == 'lowest' then return lo end
  if policy == 'cyclic' then return tonumber(redis.call('HGET', meta, 'cursor') or '0') end
  return hint
end

-- Finds what ARGV asks for (after owner, lease_ms): a list of numbers, or nil when not free
-- (and, for a block search cut short, where to go on from).
--   one HINT | range LO HI HINT | many N HINT | block COUNT ALIGN FROM
local function find(cap, policy)
  local mode = ARGV[4]
  if mode == 'one' then
    local n = first_free(0, cap - 1, start_of(policy, 0, tonumber(ARGV[5])))
    return n and { n }
  elseif mode == 'range' then
    local lo, hi = tonumber(ARGV[5]), tonumber(ARGV[6])
    local n = first_free(lo, hi, start_of(policy, lo, tonumber(ARGV[7])))
    return n and { n }
  elseif mode == 'many' then
    local want = tonumber(ARGV[5])
    if cap - redis.call('HLEN', held) < want then return nil end
    local found, at = {}, start_of(policy, 0, tonumber(ARGV[6]))
    for i = 1, want do
      -- Set as found, so the next search skips it; the caller sets them all again.
      local n = first_free(0, cap - 1, at)
      if n == nil then
        -- Cannot happen while bits and held agree; if they do not, take nothing.
        for j = 1, i - 1 do redis.call('SETBIT', bits, found[j], 0) end
        return nil
      end
      redis.call('SETBIT', bits, n, 1)
      found[i] = n
      at = n + 1
    end
    return found
  elseif mode == 'block' then
    local count, align = tonumber(ARGV[5]), tonumber(ARGV[6])
    local first, resume = first_block(cap, count, align, tonumber(ARGV[7]))
    if not first then return nil, resume end
    local found = {}
    for i = 1, count do found[i] = first + i - 1 end
    return found
  end
  return redis.error_reply('NUMBALLOC_BAD_CALL unknown allocation ' .. tostring(mode))
end

if op == 'open' then
  -- ARGV: capacity policy. Creates the allocator or checks it is the one asked for.
  -- BITPOS ... BIT (searching by bit, not byte) came in Redis 7.0.
  if not redis.REDIS_VERSION_NUM or redis.REDIS_VERSION_NUM < 0x070000 then
    return redis.error_reply('NUMBALLOC_OLD_SERVER numballoc needs Redis 7.0 or later (or Valkey); this server is ' .. tostring(redis.REDIS_VERSION))
  end
  for i = 1, 6 do
    local t = redis.call('TYPE', KEYS[i]).ok
    local want = ({ 'hash', 'string', 'hash', 'zset', 'zset', 'hash' })[i]
    if t ~= 'none' and t ~= want then
      return redis.error_reply('NUMBALLOC_NOT_ALLOCATOR ' .. KEYS[i] .. ' is a ' .. t .. ', not part of a numballoc allocator')
    end
  end
  if redis.call('EXISTS', meta) == 1 then
    local cap, policy, failure = described()
    if failure then return failure end
    return { 0, cap, policy }
  end
  if redis.call('EXISTS', meta, bits, held, byowner, leases, owners) > 0 then
    return redis.error_reply('NUMBALLOC_NOT_ALLOCATOR ' .. meta .. ' is missing while other keys of the allocator exist')
  end
  local cap = tonumber(ARGV[2])
  -- Tokens start from the creation time in microseconds, so that an allocator made again after
  -- its keys were lost never hands out a token the old one did: each grant took the old one more
  -- than a microsecond of the server's time.
  local t = redis.call('TIME')
  local start = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('HSET', meta, 'format', FORMAT, 'capacity', cap, 'policy', ARGV[3], 'cursor', 0, 'token', string.format('%.0f', start), 'held', 0)
  -- The whole bitmap exists from the start, so BITPOS ranges never run past its end.
  redis.call('SETBIT', bits, cap - 1, 0)
  return { 0, cap, ARGV[3] }
end

local cap, policy, failure = described()
if failure then return failure end
local now = now_ms()

if op == 'register' then
  -- ARGV: owner lease_ms info
  reclaim_expired(now)
  redis.call('ZADD', leases, now + tonumber(ARGV[3]), ARGV[2])
  redis.call('HSET', owners, ARGV[2], ARGV[4])
  return { 0 }
elseif op == 'renew' then
  -- ARGV: owner lease_ms
  if not renew(ARGV[2], now, tonumber(ARGV[3])) then return { -2 } end
  return { 0 }
elseif op == 'alloc' then
  -- ARGV: owner lease_ms mode ...
  local owner = ARGV[2]
  reclaim_expired(now)
  if not renew(owner, now, tonumber(ARGV[3])) then return { -2 } end
  local found, resume = find(cap, policy)
  if found == nil and resume == nil then
    -- Before saying "full": ended leases give their numbers back (up to CHUNK more).
    if reclaim_expired(now) > 0 then found, resume = find(cap, policy) end
  end
  if found == nil then
    if resume then return { -4, resume } end
    return { -1 }
  end
  if found.err then return found end
  local token = redis.call('HINCRBY', meta, 'token', 1)
  redis.call('HINCRBY', meta, 'held', #found)
  -- '%.0f': Lua would write a token this large in exponent form.
  local grant = owner .. ':' .. string.format('%.0f', token)
  local reply = { 0, token }
  for i, n in ipairs(found) do
    redis.call('SETBIT', bits, n, 1)
    redis.call('HSET', held, n, grant)
    redis.call('ZADD', byowner, 0, owner .. ':' .. n)
    reply[i + 2] = n
  end
  if policy == 'cyclic' then redis.call('HSET', meta, 'cursor', (found[#found] + 1) % cap) end
  return reply
elseif op == 'free' then
  -- ARGV: owner lease_ms n... or owner lease_ms 'grant' n token: frees all or none; each must be
  -- held by this owner, once (with a token: under that very grant, so that a free repeated
  -- after a timeout never frees the number's next grant).
  local owner = ARGV[2]
  if not renew(owner, now, tonumber(ARGV[3])) then return { -2 } end
  if ARGV[4] == 'grant' then
    if redis.call('HGET', held, ARGV[5]) ~= owner .. ':' .. ARGV[6] then return { -3, 1 } end
    redis.call('SETBIT', bits, ARGV[5], 0)
    redis.call('HDEL', held, ARGV[5])
    redis.call('ZREM', byowner, owner .. ':' .. ARGV[5])
    redis.call('HINCRBY', meta, 'held', -1)
    return { 0 }
  end
  local seen = {}
  for i = 4, #ARGV do
    local grant = redis.call('HGET', held, ARGV[i])
    if seen[ARGV[i]] or not grant or string.sub(grant, 1, #owner + 1) ~= owner .. ':' then return { -3, i - 3 } end
    seen[ARGV[i]] = true
  end
  for i = 4, #ARGV do
    redis.call('SETBIT', bits, ARGV[i], 0)
    redis.call('HDEL', held, ARGV[i])
    redis.call('ZREM', byowner, owner .. ':' .. ARGV[i])
  end
  redis.call('HINCRBY', meta, 'held', -(#ARGV - 3))
  return { 0 }
elseif op == 'inspect' then
  -- ARGV: cells. A read-only picture: capacity, server time, policy, last token, numbers held, cell size,
  -- numbers held per cell of that size, and per owner: id, lease end, "pid host", numbers held.
  local cells = tonumber(ARGV[2])
  local size = math.ceil(cap / cells)
  local counts = {}
  for first = 0, cap - 1, size do
    counts[#counts + 1] = redis.call('BITCOUNT', bits, first, math.min(first + size, cap) - 1, 'BIT')
  end
  local list = {}
  local leased = redis.call('ZRANGE', leases, 0, -1, 'WITHSCORES')
  for i = 1, #leased, 2 do
    local owner = leased[i]
    list[#list + 1] = owner
    list[#list + 1] = tonumber(leased[i + 1])
    list[#list + 1] = redis.call('HGET', owners, owner) or ''
    list[#list + 1] = redis.call('ZLEXCOUNT', byowner, '[' .. owner .. ':', '[' .. owner .. ';')
  end
  return { 0, cap, now, policy, tonumber(redis.call('HGET', meta, 'token')), redis.call('HLEN', held), size, counts, list }
elseif op == 'count' then
  return { 0, redis.call('HLEN', held) }
elseif op == 'bit' then
  -- ARGV: n
  return { 0, redis.call('GETBIT', bits, ARGV[2]) }
elseif op == 'release' then
  -- ARGV: owner. Gives back up to CHUNK numbers the owner holds (close with release, a lost
  -- lease); the reply's third item is 1 once it holds none and is forgotten.
  local n, all = release_owner(ARGV[2], CHUNK)
  return { 0, n, all and 1 or 0 }
elseif op == 'reclaim' then
  -- Up to CHUNK numbers of ended leases; the third item is 1 while more ended leases remain.
  local n = reclaim_expired(now)
  return { 0, n, redis.call('ZCOUNT', leases, '-inf', now) > 0 and 1 or 0 }
elseif op == 'holder' then
  -- ARGV: n. The holder of n: owner, token, "pid host", lease end; or just the status if free.
  local grant = redis.call('HGET', held, ARGV[2])
  if not grant then return { 0 } end
  local colon = string.find(grant, ':', 1, true)
  local owner = string.sub(grant, 1, colon - 1)
  local ends = redis.call('ZSCORE', leases, owner)
  return { 0, owner, tonumber(string.sub(grant, colon + 1)), redis.call('HGET', owners, owner) or '', ends and tonumber(ends) or -1 }
end
return redis.error_reply('NUMBALLOC_BAD_CALL unknown operation ' .. tostring(op))

-- Shared by every script that hands out ids (prepended to each; see store/sequence.rs).

-- This server's replication id: a new one on every promotion and every restart.
local function replication_id()
  local id = string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)')
  if not id then
    error({err = 'ERR INFO replication names no master_replid'})
  end
  return id
end

-- The id sequence as this primary may continue it. Returns the value to continue from and,
-- when this primary has not handed out ids before (a new term), its replication id, which
-- the caller stores in the term key once its own writes have succeeded.
--
-- A new term starts at least half an epoch (500,000,000) above both the sequence and
-- `known`, the highest id the calling backend has seen: ids the previous primary handed out
-- but never replicated lie below that, so no id is ever handed out twice.
local function sequence_base(seq_key, term_key, known)
  local seq = tonumber(redis.call('GET', seq_key) or '0')
  if not seq then
    error({err = 'ERR the id sequence is not a number'})
  end
  local term = replication_id()
  local stored = redis.call('GET', term_key)
  if stored == term then
    return seq, nil
  end
  local base = math.max(seq, known)
  if not stored and base == 0 then
    -- A guestbook that never had a message starts at 1.
    return 0, term
  end
  local epoch = 1000000000
  local next = (math.floor(base / epoch) + 1) * epoch
  if next - base < epoch / 2 then
    next = next + epoch
  end
  return next, term
end

-- A whole number argument within bounds, or an error before anything is written.
local function whole(value, low, high, name)
  local number = tonumber(value)
  if not number or number ~= math.floor(number) or number < low or number > high then
    error({err = 'ERR ' .. name .. ' out of range: ' .. tostring(value)})
  end
  return number
end

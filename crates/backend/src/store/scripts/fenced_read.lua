-- The `lock` strategy's read, fenced. Records the caller's fencing token as the newest that
-- has touched the data, so a holder whose lock expired meanwhile (an older token) can no
-- longer commit: its commit finds a newer token and is refused.
--
-- KEYS[1] highest token seen   KEYS[2] idempotency record   KEYS[3] id sequence   KEYS[4] term
-- ARGV[1] fencing token        ARGV[2] '1' when an idempotency key was sent
-- ARGV[3] the highest id the calling backend has seen
-- Returns {-1} when fenced, {0, stored record} for a replay, {1, sequence to continue from}.
-- A new term's jump is written here: a jump without a message wastes ids, never reuses one.
local token = whole(ARGV[1], 1, 9007199254740991, 'fencing token')
local known = whole(ARGV[3], 0, 9007199254740991, 'known id')
local seen = tonumber(redis.call('GET', KEYS[1]) or '0')
if token < seen then
  return {-1}
end
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  local existing = redis.call('GET', KEYS[2])
  if existing then
    return {0, existing}
  end
end
local seq, new_term = sequence_base(KEYS[3], KEYS[4], known)
local value = string.format('%d', seq)
if new_term then
  redis.call('SET', KEYS[3], value)
  redis.call('SET', KEYS[4], new_term)
end
return {1, value}

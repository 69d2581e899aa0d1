-- The `lock` strategy's first round trip: take the lock, draw a fencing token, and read, fenced.
-- Taking the lock and reading in one script saves a round trip per append; the lock still
-- spans the application's read-modify-write, which ends with commit_and_release.lua.
-- The read records the token as the newest that has touched the data, so a holder whose lock
-- expired meanwhile (an older token) can no longer commit: its commit finds a newer token and
-- is refused.
--
-- KEYS[1] lock   KEYS[2] fencing-token counter   KEYS[3] highest token seen
-- KEYS[4] idempotency record   KEYS[5] id sequence   KEYS[6] term
-- ARGV[1] the holder's random value   ARGV[2] lock TTL in milliseconds
-- ARGV[3] '1' when an idempotency key was sent   ARGV[4] the highest id the calling backend has seen
-- Returns {-2} when another holder has the lock (nothing is written), {-1, token} when fenced,
-- {0, token, stored record} for a replay, {1, token, sequence to continue from}. The lock is
-- released here unless the answer is {1, ...}: only then does the caller go on to commit.
-- A new term's jump is written here: a jump without a message wastes ids, never reuses one.
local ttl = whole(ARGV[2], 1, 86400000, 'lock TTL')
local known = whole(ARGV[4], 0, 9007199254740991, 'known id')
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', string.format('%d', ttl)) then
  return {-2}
end
local token = redis.call('INCR', KEYS[2])
local seen = tonumber(redis.call('GET', KEYS[3]) or '0')
if token < seen then
  redis.call('DEL', KEYS[1])
  return {-1, token}
end
redis.call('SET', KEYS[3], string.format('%d', token))
if ARGV[3] == '1' then
  local existing = redis.call('GET', KEYS[4])
  if existing then
    redis.call('DEL', KEYS[1])
    return {0, token, existing}
  end
end
local seq, new_term = sequence_base(KEYS[5], KEYS[6], known)
local value = string.format('%d', seq)
if new_term then
  redis.call('SET', KEYS[5], value)
  redis.call('SET', KEYS[6], new_term)
end
return {1, token, value}

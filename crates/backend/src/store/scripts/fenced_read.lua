-- The `lock` strategy's read, fenced. Records the caller's fencing token as the newest that
-- has touched the data, so a holder whose lock expired meanwhile (an older token) can no
-- longer commit: its commit finds a newer token and is refused.
--
-- KEYS[1] highest token seen   KEYS[2] idempotency record   KEYS[3] id sequence
-- ARGV[1] fencing token        ARGV[2] '1' when an idempotency key was sent
-- Returns {-1} when fenced, {0, stored message} for a replay, {1, current sequence value}.
local seen = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) < seen then
  return {-1}
end
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  local existing = redis.call('GET', KEYS[2])
  if existing then
    return {0, existing}
  end
end
return {1, redis.call('GET', KEYS[3]) or '0'}

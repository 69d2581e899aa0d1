-- The `lock` strategy's write, fenced: applied only if no newer token has touched the data
-- since this holder's fenced read.
--
-- KEYS[1] highest token seen   KEYS[2] id sequence   KEYS[3] message log   KEYS[4] idempotency record
-- ARGV[1] fencing token   ARGV[2] new id   ARGV[3] message JSON   ARGV[4] retention cap
-- ARGV[5] idempotency TTL in seconds      ARGV[6] '1' when an idempotency key was sent
-- Returns 1 when written, 0 when fenced off.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[4], ARGV[2] .. '-0', 'm', ARGV[3])
if ARGV[6] == '1' then
  redis.call('SET', KEYS[4], ARGV[3], 'EX', ARGV[5])
end
return 1

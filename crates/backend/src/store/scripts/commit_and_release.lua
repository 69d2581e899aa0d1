-- The `lock` strategy's second round trip: the write, fenced, then the release. The write is
-- applied only if no newer token has touched the data since this holder's fenced read, and
-- only on the primary whose term that read saw (after a failover, the read's sequence may be
-- behind ids the old primary handed out). The release is a compare-and-delete, written or
-- not: a holder whose lock expired cannot release the lock of the next holder.
--
-- KEYS[1] highest token seen   KEYS[2] id sequence   KEYS[3] message log
-- KEYS[4] idempotency record   KEYS[5] term   KEYS[6] lock
-- ARGV[1] fencing token   ARGV[2] new id   ARGV[3] message JSON   ARGV[4] retention cap
-- ARGV[5] idempotency TTL in seconds      ARGV[6] '1' when an idempotency key was sent
-- ARGV[7] the record after its id         ARGV[8] the holder's random value
-- Returns 1 when written, 0 when fenced off. The log entry comes first (see append.lua).
local cap = whole(ARGV[4], 1, 1000000000, 'retention cap')
local ttl = whole(ARGV[5], 1, 31536000, 'idempotency TTL')
whole(ARGV[2], 1, 9007199254740991, 'id')
local written = 0
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[5]) == replication_id() then
  redis.call('XADD', KEYS[3], 'MAXLEN', string.format('%d', cap), ARGV[2] .. '-0', 'm', ARGV[3])
  if ARGV[6] == '1' then
    redis.call('SET', KEYS[4], ARGV[2] .. ' ' .. ARGV[7], 'EX', string.format('%d', ttl))
  end
  redis.call('SET', KEYS[2], ARGV[2])
  written = 1
end
if redis.call('GET', KEYS[6]) == ARGV[8] then
  redis.call('DEL', KEYS[6])
end
return written

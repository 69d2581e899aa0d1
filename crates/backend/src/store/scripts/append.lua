-- The `lua` strategy: one whole append as a single script. Redis runs a script to completion
-- with no other command in between, so the idempotency check, the new id, the log entry, the
-- idempotency record and the retention trim happen as one indivisible step.
--
-- KEYS[1] id sequence      KEYS[2] message log (stream)   KEYS[3] idempotency record
-- ARGV[1] message JSON after its id ("author":...})        ARGV[2] retention cap
-- ARGV[3] idempotency TTL in seconds                       ARGV[4] '1' when a key was sent
-- Returns {1, created message} or {0, message stored earlier under the same key}.
if ARGV[4] == '1' then
  local existing = redis.call('GET', KEYS[3])
  if existing then
    return {0, existing}
  end
end
local id = redis.call('INCR', KEYS[1])
local message = string.format('{"id":%d,', id) .. ARGV[1]
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], string.format('%d-0', id), 'm', message)
if ARGV[4] == '1' then
  redis.call('SET', KEYS[3], message, 'EX', ARGV[3])
end
return {1, message}

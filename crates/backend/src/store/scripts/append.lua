-- The `lua` strategy: one whole append as a single script. Redis runs a script to completion
-- with no other command in between, so the idempotency check, the new id, the log entry, the
-- idempotency record and the retention trim happen as one indivisible step.
--
-- KEYS[1] id sequence   KEYS[2] message log (stream)   KEYS[3] idempotency record   KEYS[4] term
-- ARGV[1] message JSON after its id ("author":...})    ARGV[2] retention cap
-- ARGV[3] idempotency TTL in seconds                   ARGV[4] '1' when a key was sent
-- ARGV[5] the record after its id ("<created_at> <fingerprint>")
-- ARGV[6] the highest id the calling backend has seen
-- Returns {1, the new id} or {0, record stored earlier under the same key}. Not the message:
-- the caller holds its JSON already (`'{"id":' .. id .. ',' .. ARGV[1]`), and sending it back
-- cost Redis and the backend the message's bytes a second time.
--
-- Order: every argument is checked and every read done before the first write; the log
-- entry, the one write that can fail (a wrong type, an id not above the log's last), comes
-- first, so a failure leaves nothing behind, and never a message without its record. Out of
-- memory, Redis refuses the whole script before it starts (the `#!lua` line marks it as one
-- that writes).
local cap = whole(ARGV[2], 1, 1000000000, 'retention cap')
local ttl = whole(ARGV[3], 1, 31536000, 'idempotency TTL')
local known = whole(ARGV[6], 0, 9007199254740991, 'known id')
if ARGV[4] == '1' then
  local existing = redis.call('GET', KEYS[3])
  if existing then
    return {0, existing}
  end
end
local seq, new_term = sequence_base(KEYS[1], KEYS[4], known)
local id = string.format('%d', seq + 1)
local message = '{"id":' .. id .. ',' .. ARGV[1]
redis.call('XADD', KEYS[2], 'MAXLEN', string.format('%d', cap), id .. '-0', 'm', message)
if ARGV[4] == '1' then
  redis.call('SET', KEYS[3], id .. ' ' .. ARGV[5], 'EX', string.format('%d', ttl))
end
redis.call('SET', KEYS[1], id)
if new_term then
  redis.call('SET', KEYS[4], new_term)
end
return {1, id}

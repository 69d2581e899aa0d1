-- Group commit for the `lua` strategy: N appends in one script (see store/strategy/batch.rs),
-- each exactly as `append.lua` would do it alone, one after the other, so Redis runs one
-- script, one term check and one sequence write for N messages instead of N of each.
--
-- KEYS[1] id sequence   KEYS[2] message log (stream)   KEYS[3] term
-- KEYS[3 + i] append i's idempotency record (without a key: one the script never touches)
-- ARGV[1] retention cap   ARGV[2] idempotency TTL in seconds
-- ARGV[3] the highest id the calling backend has seen
-- ARGV[3i + 1] append i's message JSON after its id   ARGV[3i + 2] '1' when it sent a key
-- ARGV[3i + 3] append i's record after its id ("<created_at> <fingerprint>")
-- Returns {status_1, payload_1, ..., status_n, payload_n}: {1, the new id} (as append.lua),
-- {0, record stored earlier under the same key} (also when an earlier append of this very
-- batch stored it), or {-1, error} for an append whose log entry failed after an earlier
-- append of the batch had its answer.
--
-- Order, as in append.lua: every argument is checked and the term read before the first
-- write, and the first append's log entry failing fails the whole script, so the batch
-- fails as each of its appends would have alone and leaves nothing behind. Once an entry
-- was written the sequence and term are stored regardless, so ids never repeat.
--
-- Retention: the entries go in without MAXLEN and one exact XTRIM follows the last. A script
-- runs atomically, so nobody sees the log longer than the cap, and the entries it keeps are
-- the ones per-entry trimming would keep. Exact trimming costs Redis about the same per call
-- however many entries it removes (Redis 7.0, a log at its cap: XADD 0.5 us without MAXLEN,
-- 2.1 us with it; one XTRIM of 15 entries 2.1 us), so a script of 15 appends took 17 us
-- instead of 39 us.
local cap = whole(ARGV[1], 1, 1000000000, 'retention cap')
local ttl = whole(ARGV[2], 1, 31536000, 'idempotency TTL')
local known = whole(ARGV[3], 0, 9007199254740991, 'known id')
local count = #KEYS - 3
if count < 1 or #ARGV ~= 3 + 3 * count then
  error({err = 'ERR batch of ' .. count .. ' appends with ' .. #ARGV .. ' arguments'})
end
local seq, new_term = sequence_base(KEYS[1], KEYS[3], known)
local cap_text = string.format('%d', cap)
local ttl_text = string.format('%d', ttl)
local replies = {}
local written = false
for i = 1, count do
  local record_key = KEYS[3 + i]
  local has_key = ARGV[3 * i + 2] == '1'
  local existing = has_key and redis.call('GET', record_key)
  if existing then
    replies[#replies + 1] = 0
    replies[#replies + 1] = existing
  else
    local id = string.format('%d', seq + 1)
    local message = '{"id":' .. id .. ',' .. ARGV[3 * i + 1]
    local added = redis.pcall('XADD', KEYS[2], id .. '-0', 'm', message)
    if type(added) == 'table' and added.err then
      if #replies == 0 then
        return added
      end
      replies[#replies + 1] = -1
      replies[#replies + 1] = added.err
    else
      written = true
      seq = seq + 1
      if has_key then
        redis.call('SET', record_key, id .. ' ' .. ARGV[3 * i + 3], 'EX', ttl_text)
      end
      replies[#replies + 1] = 1
      replies[#replies + 1] = id
    end
  end
end
if written then
  redis.call('XTRIM', KEYS[2], 'MAXLEN', cap_text)
  redis.call('SET', KEYS[1], string.format('%d', seq))
  if new_term then
    redis.call('SET', KEYS[3], new_term)
  end
end
return replies

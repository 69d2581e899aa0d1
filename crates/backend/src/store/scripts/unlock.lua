-- Compare-and-delete: release the lock only if this holder still owns it, so a holder whose
-- lock expired cannot release the lock of the next holder.
-- KEYS[1] lock   ARGV[1] the holder's random token
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0

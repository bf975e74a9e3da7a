-- Drop a rebuild lock only if this process still holds it (it may have expired and moved on).
-- KEYS[1] lock key   ARGV[1] this holder's token
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0

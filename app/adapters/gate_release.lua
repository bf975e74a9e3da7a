-- Undo one reservation, only if it is still the one made by this request id.
-- KEYS[1] holders hash   ARGV[1] user id   ARGV[2] request id
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0

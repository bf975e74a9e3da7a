-- Atomically decide one "get coupon" press at the gate.
-- KEYS[1] meta hash {total, expires_ms}   KEYS[2] users set   KEYS[3] processed counter
-- KEYS[4] "known missing" marker
-- ARGV[1] user id   ARGV[2] now (epoch ms)
-- Returns {code, queue_ahead}: 0 accepted, 1 duplicate, 2 sold out, 3 expired,
-- 4 unknown coupon, -1 gate not loaded (the caller rebuilds it from PostgreSQL and retries).
local meta = redis.call('HMGET', KEYS[1], 'total', 'expires_ms')
if not meta[1] then
  if redis.call('EXISTS', KEYS[4]) == 1 then return {4, 0} end
  return {-1, 0}
end
if tonumber(ARGV[2]) >= tonumber(meta[2]) then return {3, 0} end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return {1, 0} end
local reserved = redis.call('SCARD', KEYS[2])
if reserved >= tonumber(meta[1]) then return {2, 0} end
redis.call('SADD', KEYS[2], ARGV[1])
local processed = tonumber(redis.call('GET', KEYS[3]) or '0')
local ahead = reserved - processed
if ahead < 0 then ahead = 0 end
return {0, ahead}

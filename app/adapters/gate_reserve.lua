-- Atomically decide one "get coupon" press at the gate.
-- KEYS[1] meta hash {total, expires_ms, partition}   KEYS[2] holders hash {user id: request id}
-- KEYS[3] processed counter               KEYS[4] this user's press counter for this second
-- ARGV[1] user id   ARGV[2] now (epoch ms)   ARGV[3] request id   ARGV[4] presses/s allowed (0: off)
-- Returns {code, queue_ahead, partition}: partition is the coupon's request-topic partition (-1: the
-- gate was built without one), code 0 accepted, 1 duplicate, 2 sold out, 3 expired, 5 rate limited,
-- -1 gate not loaded (the caller asks the coupon registry, rebuilds the gate and calls again).
-- The order is the contract:
--  1. an unloaded gate answers before anything is counted (a press on a cold gate runs twice);
--  2. "this request already holds" answers before the rate limit: the retry of a press whose reply
--     was lost gets its reservation back, never a 429 that strands it;
--  3. then the rate limit, expiry, duplicate, stock.
local meta = redis.call('HMGET', KEYS[1], 'total', 'expires_ms', 'partition')
if not meta[1] then return {-1, 0, -1} end
local partition = tonumber(meta[3] or '-1')
local processed = tonumber(redis.call('GET', KEYS[3]) or '0')
local holder = redis.call('HGET', KEYS[2], ARGV[1])
if holder == ARGV[3] then
  return {0, math.max(0, redis.call('HLEN', KEYS[2]) - 1 - processed), partition}
end
local limit = tonumber(ARGV[4])
if limit > 0 then
  local presses = redis.call('INCR', KEYS[4])
  if presses == 1 then redis.call('EXPIRE', KEYS[4], 2) end
  if presses > limit then return {5, 0, partition} end
end
if tonumber(ARGV[2]) >= tonumber(meta[2]) then return {3, 0, partition} end
if holder then return {1, 0, partition} end
local reserved = redis.call('HLEN', KEYS[2])
if reserved >= tonumber(meta[1]) then return {2, 0, partition} end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return {0, math.max(0, reserved - processed), partition}

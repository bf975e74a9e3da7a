-- Atomically decide the "get coupon" presses of one coupon, in order, as if one by one.
-- KEYS[1] meta hash {total, expires_ms, partition}   KEYS[2] holders hash {user id: request id}
-- KEYS[3] processed counter     KEYS[3 + i] press i's user's press counter for this second
-- ARGV[4i-3 .. 4i] press i's: user id, now (epoch ms), request id, presses/s allowed (0: off)
-- Returns one {code, queue_ahead, partition} per press: partition is the coupon's request-topic
-- partition (-1: the gate was built without one), code 0 accepted, 1 duplicate, 2 sold out,
-- 3 expired, 5 rate limited, -1 gate not loaded (the caller asks the coupon registry, rebuilds the
-- gate and calls again), -2 this press failed ({-2, the error, partition}: its caller's error
-- alone, the others are decided). Several presses in one call cost Redis one script run, not one
-- each.
-- The order is the contract, for each press:
--  1. an unloaded gate answers before anything is counted (a press on a cold gate runs twice);
--  2. "this request already holds" answers before the rate limit: the retry of a press whose reply
--     was lost gets its reservation back, never a 429 that strands it;
--  3. then the rate limit, expiry, duplicate, stock.
local presses = #ARGV / 4
local answers = {}
local meta = redis.call('HMGET', KEYS[1], 'total', 'expires_ms', 'partition')
if not meta[1] then
  for i = 1, presses do answers[i] = {-1, 0, -1} end
  return answers
end
local total, expires = tonumber(meta[1]), tonumber(meta[2])
local partition = tonumber(meta[3] or '-1')
-- Neither changes while the script runs but by its own HSETs, which it counts.
local processed = tonumber(redis.call('GET', KEYS[3]) or '0')
local reserved = redis.call('HLEN', KEYS[2])

local function decide(user, now, request, limit, rate_key)
  local holder = redis.call('HGET', KEYS[2], user)
  if holder == request then return 0, math.max(0, reserved - 1 - processed) end
  if limit > 0 then
    local count = redis.call('INCR', rate_key)
    if count == 1 then redis.call('EXPIRE', rate_key, 2) end
    if count > limit then return 5, 0 end
  end
  if now >= expires then return 3, 0 end
  if holder then return 1, 0 end
  if reserved >= total then return 2, 0 end
  redis.call('HSET', KEYS[2], user, request)
  reserved = reserved + 1
  return 0, math.max(0, reserved - 1 - processed)
end

for i = 1, presses do
  local at = 4 * (i - 1)
  local ok, code, ahead = pcall(decide,
    ARGV[at + 1], tonumber(ARGV[at + 2]), ARGV[at + 3], tonumber(ARGV[at + 4]), KEYS[3 + i])
  if ok then
    answers[i] = {code, ahead, partition}
  else  -- a failed redis.call raises a table {err = ...}
    answers[i] = {-2, type(code) == 'table' and code.err or tostring(code), partition}
  end
end
return answers

-- Users' views of one coupon in one run: the status reads of one coupon in one loop tick.
-- KEYS[1] meta   KEYS[2] holders   KEYS[3] outcomes   ARGV[i] a user id
-- Returns one {gate loaded (0/1), holding request id or false, outcome entry or false} per user.
local loaded = redis.call('EXISTS', KEYS[1])
local views = {}
for i, user in ipairs(ARGV) do
  views[i] = {loaded, redis.call('HGET', KEYS[2], user), redis.call('HGET', KEYS[3], user)}
end
return views

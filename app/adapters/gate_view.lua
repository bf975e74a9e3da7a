-- One user's view of a coupon in one round trip (cheaper than a three-command pipeline).
-- KEYS[1] meta   KEYS[2] holders   KEYS[3] outcomes   ARGV[1] user id
-- Returns {gate loaded (0/1), holding request id or false, outcome entry or false}.
return {
  redis.call('EXISTS', KEYS[1]),
  redis.call('HGET', KEYS[2], ARGV[1]),
  redis.call('HGET', KEYS[3], ARGV[1]),
}

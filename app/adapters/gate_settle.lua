-- Settle stranded reservations of one coupon: for each, record its final outcome, then give its
-- reservation back; only while the reservation is still the one this request made (otherwise
-- someone else settled it, and recorded its outcome).
-- KEYS[1] holders hash {user id: request id}   KEYS[2] outcomes hash {user id: entry}
-- ARGV user id, request id, outcome entry, user id, request id, outcome entry, ...
-- Returns one flag per reservation: 1 given back here, 0 not held by this request any more.
-- As gate_outcomes.lua, nothing replaces an ISSUED outcome.
local released = {}
for i = 1, #ARGV, 3 do
  local user, request, entry = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local flag = 0
  if redis.call('HGET', KEYS[1], user) == request then
    local current = redis.call('HGET', KEYS[2], user)
    if not (current and string.sub(current, 1, 7) == 'ISSUED|') then
      redis.call('HSET', KEYS[2], user, entry)
    end
    flag = redis.call('HDEL', KEYS[1], user)
  end
  released[#released + 1] = flag
end
return released

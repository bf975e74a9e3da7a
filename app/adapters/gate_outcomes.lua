-- Record final outcomes in a coupon's outcomes hash; an ISSUED outcome is never replaced.
-- KEYS[1] outcomes hash {user id: "STATUS|reason|epoch ms|request id"}
-- ARGV user id, entry, user id, entry, ...
-- The latest outcome wins (a replayed dead letter's decision replaces its FAILED), except that
-- nothing replaces ISSUED: a later refusal (a duplicate after Redis lost the gate) is not the
-- user's status.
for i = 1, #ARGV, 2 do
  local entry = ARGV[i + 1]
  local keep = false
  if string.sub(entry, 1, 7) ~= 'ISSUED|' then
    local current = redis.call('HGET', KEYS[1], ARGV[i])
    keep = current ~= false and string.sub(current, 1, 7) == 'ISSUED|'
  end
  if not keep then redis.call('HSET', KEYS[1], ARGV[i], entry) end
end
return 0

-- Each coupon's partition of the request topic, fixed when the coupon is created: every press
-- of one coupon is published to it explicitly, so one consumer sees them in press order even
-- after partitions are added to the topic (the key's hash would then pick another partition
-- while earlier presses still wait in the old one). NULL for coupons created before this
-- column: those are hashed over the configured partition count, as they were when published.
ALTER TABLE coupons ADD COLUMN partition integer CHECK (partition >= 0);

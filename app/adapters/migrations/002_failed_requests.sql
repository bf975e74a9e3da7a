-- Accepted requests that ended without an issue decision: dead-lettered by the consumer, or
-- settled by the reconciler after they never reached the queue. Their reservations were given
-- back. Kept apart from issue_requests on purpose: a row there means "already processed", and a
-- replayed dead letter must still be processed.
CREATE TABLE failed_requests (
    request_id uuid        PRIMARY KEY,
    coupon_id  uuid        NOT NULL,
    user_id    text        NOT NULL,
    reason     text        NOT NULL CHECK (reason IN ('DEAD_LETTERED', 'NOT_QUEUED')),
    detail     text        NOT NULL DEFAULT '',
    failed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX failed_requests_coupon_user ON failed_requests (coupon_id, user_id);

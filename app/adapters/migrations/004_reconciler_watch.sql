-- The reconciler tells a stranded request what it knows (app/domain/settlement.py): NOT_QUEUED
-- (no outcome, nothing left queued for it), or a loss of acknowledged messages it saw after the
-- press: TOPIC_RECREATED (the topic's id changed) or LOG_TRUNCATED (a log end went backwards).
ALTER TABLE failed_requests DROP CONSTRAINT failed_requests_reason_check;
ALTER TABLE failed_requests ADD CONSTRAINT failed_requests_reason_check
    CHECK (reason IN ('DEAD_LETTERED', 'NOT_QUEUED', 'TOPIC_RECREATED', 'LOG_TRUNCATED'));

-- What the reconciler remembers of each partition between passes and across restarts: its last
-- look (the topic's id, the log end) and the latest look that saw acknowledged messages lost.
CREATE TABLE reconciler_partitions (
    topic       text        NOT NULL,
    partition   integer     NOT NULL CHECK (partition >= 0),
    topic_id    uuid,
    log_end     bigint      NOT NULL,
    seen_at     timestamptz NOT NULL,
    lost_at     timestamptz,
    lost_reason text        CHECK (lost_reason IN ('TOPIC_RECREATED', 'LOG_TRUNCATED')),
    lost_why    text,
    PRIMARY KEY (topic, partition)
);

-- The reconciler tells a stranded request what it knows (app/domain/settlement.py): NOT_QUEUED
-- (it never reached the queue), QUEUE_LOST (the broker lost queued messages of its partition
-- after it was accepted) or NO_OUTCOME (nothing more is known than that it has none).
ALTER TABLE failed_requests DROP CONSTRAINT failed_requests_reason_check;
ALTER TABLE failed_requests ADD CONSTRAINT failed_requests_reason_check
    CHECK (reason IN ('DEAD_LETTERED', 'NOT_QUEUED', 'QUEUE_LOST', 'NO_OUTCOME'));

-- What the reconciler remembers of each partition between passes and across restarts: its last
-- look (the topic's id, log start and end, the group's position), since when it has watched
-- without a break, and the last look that saw queued messages lost there.
CREATE TABLE reconciler_partitions (
    topic         text        NOT NULL,
    partition     integer     NOT NULL CHECK (partition >= 0),
    topic_id      uuid,
    log_start     bigint      NOT NULL,
    log_end       bigint      NOT NULL,
    position      bigint      NOT NULL,
    seen_at       timestamptz NOT NULL,
    watched_since timestamptz NOT NULL,
    lost_at       timestamptz,
    lost_why      text,
    PRIMARY KEY (topic, partition)
);

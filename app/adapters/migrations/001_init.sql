-- Coupons and the outcome of every processed issue request.
CREATE TABLE coupons (
    id               uuid PRIMARY KEY,
    name             text           NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    discount_type    text           NOT NULL CHECK (discount_type IN ('PERCENT', 'FIXED')),
    discount_value   numeric(12, 2) NOT NULL CHECK (discount_value > 0),
    total_quantity   integer        NOT NULL CHECK (total_quantity BETWEEN 1 AND 10000000),
    -- The last line of defence against over-issue, whatever Redis says.
    issued_quantity  integer        NOT NULL DEFAULT 0
                     CHECK (issued_quantity >= 0 AND issued_quantity <= total_quantity),
    min_order_amount numeric(12, 2) NOT NULL CHECK (min_order_amount >= 0),
    expires_at       timestamptz    NOT NULL,
    created_at       timestamptz    NOT NULL DEFAULT now(),
    CHECK (discount_type <> 'PERCENT' OR discount_value <= 100)
);

-- One row per processed request (request_id makes redelivery a no-op).
CREATE TABLE issue_requests (
    request_id   uuid        PRIMARY KEY,
    coupon_id    uuid        NOT NULL,
    user_id      text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('ISSUED', 'REJECTED')),
    reason       text,
    requested_at timestamptz NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'ISSUED') = (reason IS NULL))
);

-- A user never holds the same coupon twice.
CREATE UNIQUE INDEX issue_requests_one_per_user
    ON issue_requests (coupon_id, user_id) WHERE status = 'ISSUED';
CREATE INDEX issue_requests_coupon_user ON issue_requests (coupon_id, user_id);

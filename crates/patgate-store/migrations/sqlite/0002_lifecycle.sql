-- patgate schema v2: token lifecycle. A rotated token's revoked_at may lie in the future
-- (the end of its grace period); the smallest expiry notice sent is remembered per token;
-- webhook deliveries form a durable outbox; background jobs take a lease.
ALTER TABLE tokens ADD COLUMN last_notice_days INTEGER;
CREATE INDEX tokens_expires ON tokens (expires_at);
CREATE INDEX tokens_family ON tokens (family_id);
CREATE INDEX audit_events_event ON audit_events (event);
CREATE TABLE token_ips (
    token_id    INTEGER NOT NULL REFERENCES tokens (id),
    ip          TEXT   NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    -- Per token, higher is more recent (addresses seen within one second keep their order).
    seen_order  INTEGER NOT NULL,
    PRIMARY KEY (token_id, ip)
);
CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    audit_event_id   INTEGER NOT NULL REFERENCES audit_events (id),
    url              TEXT   NOT NULL,
    event            TEXT   NOT NULL,
    payload          TEXT   NOT NULL,
    created_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    claimed_until    INTEGER,
    delivered_at     INTEGER,
    last_status      INTEGER,
    last_error       TEXT,
    UNIQUE (audit_event_id, url)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (delivered_at, next_attempt_at);
CREATE TABLE jobs (
    name         TEXT    PRIMARY KEY,
    holder       TEXT   NOT NULL,
    lease_until  INTEGER NOT NULL,
    last_run_at  INTEGER
);

-- patgate schema v4: signing in to the web UI. A user may have a password, stored as an
-- argon2id PHC string (a user without one cannot sign in with a password). A session is
-- stored under the SHA-256 of its random id, in hex: the id itself is never stored.
-- `expires_at` is the earlier of the idle and the absolute expiry, slid on activity.
ALTER TABLE users ADD COLUMN password_hash TEXT;
CREATE TABLE sessions (
    id_digest     TEXT    PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    csrf_token    TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

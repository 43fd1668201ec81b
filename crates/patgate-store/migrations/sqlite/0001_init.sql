-- patgate schema v1 (SQLite). Instants are Unix seconds (INTEGER).
CREATE TABLE users (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    username    TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL DEFAULT '',
    state       TEXT    NOT NULL CHECK (state IN ('active', 'blocked', 'deleted')),
    admin       INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
    created_at  INTEGER NOT NULL
);
CREATE TABLE groups (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    full_path   TEXT    NOT NULL UNIQUE,
    visibility  TEXT    NOT NULL CHECK (visibility IN ('private', 'internal', 'public')),
    created_at  INTEGER NOT NULL
);
CREATE TABLE projects (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    full_path   TEXT    NOT NULL UNIQUE,
    visibility  TEXT    NOT NULL CHECK (visibility IN ('private', 'internal', 'public')),
    created_at  INTEGER NOT NULL
);
CREATE TABLE memberships (
    user_id     INTEGER NOT NULL REFERENCES users (id),
    target_kind TEXT    NOT NULL CHECK (target_kind IN ('group', 'project')),
    target_id   INTEGER NOT NULL,
    role        INTEGER NOT NULL,
    PRIMARY KEY (user_id, target_kind, target_id)
);
CREATE TABLE tokens (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id        INTEGER NOT NULL REFERENCES users (id),
    name            TEXT    NOT NULL,
    description     TEXT    NOT NULL DEFAULT '',
    kind            TEXT    NOT NULL CHECK (kind IN ('legacy', 'fine_grained')),
    digest          BLOB    NOT NULL UNIQUE,
    display_prefix  TEXT    NOT NULL,
    scopes          TEXT    NOT NULL DEFAULT '',
    allowed_ips     TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER,
    revoked_at      INTEGER,
    revoke_reason   TEXT,
    family_id       INTEGER,
    previous_id     INTEGER REFERENCES tokens (id),
    last_used_at    INTEGER
);
CREATE INDEX tokens_owner ON tokens (owner_id);
CREATE TABLE token_grants (
    token_id     INTEGER NOT NULL REFERENCES tokens (id),
    position     INTEGER NOT NULL,
    reach        TEXT    NOT NULL,
    project_ids  TEXT    NOT NULL DEFAULT '',
    group_ids    TEXT    NOT NULL DEFAULT '',
    permissions  TEXT    NOT NULL,
    PRIMARY KEY (token_id, position)
);
CREATE TABLE settings (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    document  TEXT    NOT NULL
);
CREATE TABLE audit_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              INTEGER NOT NULL,
    event           TEXT    NOT NULL,
    actor_user_id   INTEGER,
    actor_token_id  INTEGER,
    user_id         INTEGER,
    token_id        INTEGER,
    details         TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_user ON audit_events (user_id);
CREATE INDEX audit_events_token ON audit_events (token_id);
CREATE TABLE changes (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    change  TEXT    NOT NULL
);

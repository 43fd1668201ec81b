-- patgate schema v3: which permissions each token used, where, how often and when (the
-- tokens table's `unused_permissions` flag and the least-privilege suggestion read it).
CREATE TABLE token_permission_uses (
    token_id       BIGINT NOT NULL REFERENCES tokens (id),
    -- `resource:action`, as the catalog names it.
    permission     TEXT   NOT NULL,
    -- project, group, user or instance; the id is 0 for the instance.
    boundary_kind  TEXT   NOT NULL,
    boundary_id    BIGINT NOT NULL,
    uses           BIGINT NOT NULL,
    first_used     BIGINT NOT NULL,
    last_used      BIGINT NOT NULL,
    PRIMARY KEY (token_id, permission, boundary_kind, boundary_id)
);

-- patgate schema v5: the tokens table searches and sorts token names in the database.
-- `name_folded` is the name lowercased as patgate lowercases it (Rust's `str::to_lowercase`,
-- full Unicode), written with every token and filled in for older rows when the store starts,
-- so that a search matches alike on both databases and in memory. Names sort byte-wise
-- (SQLite's BINARY collation, PostgreSQL's "C"), which is code-point order, as in memory.
ALTER TABLE tokens ADD COLUMN name_folded TEXT;
CREATE INDEX tokens_by_name ON tokens (name, id);

//! patgate-store's conformance suite: every test runs against SQLite, and against
//! PostgreSQL when `PATGATE_TEST_POSTGRES_URL` is set (each test in its own database).

#![expect(clippy::unwrap_used, reason = "a test fails by panicking on an unexpected error")]

mod conformance;
mod lifecycle;
mod support;
mod web;

//! In-process integration tests of patgate's HTTP service: the router is driven with
//! `tower::ServiceExt::oneshot`, each test on its own SQLite file and a fixed clock.

#![expect(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]

mod admin;
mod catalogue;
mod decide;
mod errors;
mod forward_auth;
mod health;
mod lifecycle;
mod replicas;
mod support;
mod table;
mod tokens;
mod web;

//! End-to-end tests of `patgate serve` as a real process: behind a real nginx
//! (`auth_request`) and a real Traefik (ForwardAuth), and as two replicas on one PostgreSQL
//! database.
//!
//! `cargo test -p patgate --test it`; set `PATGATE_TEST_POSTGRES_URL` for the replica test.
//! Every child process (patgate, nginx, Traefik) is killed when its test ends, pass or fail.

#![expect(clippy::unwrap_used, clippy::panic, reason = "a test fails loudly on any unexpected error")]

mod bootstrap;
mod cli;
mod crash;
mod nginx;
mod replicas;
mod replies;
mod shutdown;
mod support;
mod traefik;
mod upstream;

//! patgate-core's integration tests: one binary, a module per area.

#![expect(clippy::unwrap_used, reason = "a test fails by panicking on an unexpected error")]

mod endpoints;
mod format;
mod messages;
mod policy;
mod properties;
mod suggest;
mod table;
mod validate;
mod world;

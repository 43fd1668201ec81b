//! patgate-core's integration tests: one binary, a module per area.

mod format;
mod properties;
mod table;
mod validate;

//! The HTTP routes, one module per area.

pub mod admin;
pub mod decision;
pub mod health;
pub mod lifecycle;
pub mod suggestion;
pub mod tokens;

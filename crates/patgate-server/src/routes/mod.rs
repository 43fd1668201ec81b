//! The HTTP routes, one module per area.

pub mod admin;
pub mod catalogue;
pub mod decision;
pub mod health;
pub mod lifecycle;
pub mod session;
pub mod suggestion;
pub mod tokens;
pub mod ui;

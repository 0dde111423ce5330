//! One module per resource; each owns its `router()`.

pub mod auth;
pub mod documents;
pub mod health;

//! One module per resource; each owns its `router()`.

pub mod admin;
pub mod auth;
pub mod documents;
pub mod health;
pub mod job_events;
pub mod jobs;

//! DocFlow's integration tests: one binary (built and linked once), a
//! module per area, driving the real thing (Postgres, Redis, storage,
//! tesseract, `docflow` processes, nginx, Prometheus, Chromium).

mod helpers;

mod auth;
mod browser;
mod documents;
mod extraction;
mod hardening;
mod http_conventions;
mod import_original;
mod jobs;
mod live;
mod observability;
mod openapi;
mod process;
mod queue;
mod schemathesis;
mod stack;
mod worker_crash;

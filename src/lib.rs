//! DocFlow: an asynchronous document-processing backend.
//!
//! This crate is the shared library behind the `docflow` binary: typed
//! configuration, domain types, Postgres access, object storage, the
//! ephemeral (Redis or in-process) store, auth, and the HTTP API. The code
//! that reads untrusted documents lives in the `docflow-worker` crate.

pub mod app;
pub mod auth;
pub mod config;
pub mod db;
pub mod documents;
pub mod domain;
pub mod ephemeral;
pub mod extraction;
pub mod http;
pub mod jobs;
pub mod live;
pub mod metrics;
pub mod queue;
pub mod storage;
pub mod telemetry;
pub mod worker_process;

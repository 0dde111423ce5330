//! DocFlow: an asynchronous document-processing backend.
//!
//! This crate is the shared library behind the `docflow` binary: typed
//! configuration, domain types, Postgres access, object storage, the
//! ephemeral (Redis or in-process) store, auth, the HTTP API, and the worker
//! that consumes the queue. The code that reads untrusted documents lives in
//! the `docflow-extract` crate (`worker/`).

pub mod app;
pub mod auth;
pub mod config;
pub mod db;
pub mod documents;
pub mod domain;
pub mod ephemeral;
pub mod http;
pub mod import_original;
pub mod jobs;
pub mod live;
pub mod metrics;
pub mod storage;
pub mod telemetry;
pub mod worker;

/// Makes ring the process's TLS crypto provider (S3 and OTLP clients use
/// rustls without a bundled one; see Cargo.toml). Safe to call many times.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

//! The `docflow worker` process (also run inside `all-in-one`).
//!
//! It answers liveness on WORKER_METRICS_ADDR and drains on shutdown; the
//! Postgres queue consumer is added by the jobs work (issue #4).

use axum::{Router, routing::get};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

pub async fn run(config: &Config, db: PgPool, shutdown: CancellationToken) -> anyhow::Result<()> {
    let addr = config.worker_metrics_addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("WORKER_METRICS_ADDR: cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, "worker listening for probes");
    let probes = Router::new()
        .route("/health/live", get(|| async { "alive" }))
        .route(
            "/health/ready",
            get(move || {
                let db = db.clone();
                async move {
                    match sqlx::query("SELECT 1").execute(&db).await {
                        Ok(_) => (axum::http::StatusCode::OK, "ready".to_owned()),
                        Err(err) => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            format!("postgres: {err}"),
                        ),
                    }
                }
            }),
        );
    axum::serve(listener, probes)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    tracing::info!("worker stopped");
    Ok(())
}

//! The `docflow worker` process (also run inside `all-in-one`): consumes the
//! Postgres queue through apalis-postgres, runs each job through
//! [`Processor`], prunes finished queue entries, and answers probes on
//! WORKER_METRICS_ADDR.
//!
//! Built around what apalis-postgres 1.0 does (see docs/queue.md):
//! - LISTEN/NOTIFY for immediate pick-up, plus an interval poll for entries
//!   scheduled in the future (retries) and rescued orphans;
//! - claims in batches (WORKER_CLAIM_BATCH), with our own keep-alive of the
//!   worker's `last_seen`: apalis stops heartbeating while claimed entries
//!   wait in its buffer, which would get a live worker's jobs rescued;
//! - handlers that never fail or panic at apalis: a panic is caught here
//!   and fails its job; an infrastructure error is retried after a pause;
//! - a supervisor that restarts the worker loop if apalis stops it.

use std::{path::PathBuf, sync::Arc, time::Duration};

use apalis::prelude::{AbortError, BackendExt, BoxDynError, Data, WorkerBuilder, WorkerBuilderExt};
use apalis_postgres::{Config as QueueConfig, PostgresStorage};
use axum::{Router, routing::get};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    extraction::SandboxLimits,
    jobs::process::{Outcome, Processor},
    live::Publisher,
    queue::{self, ProcessDocument},
    storage::Storage,
};

/// A killed worker's entries are rescued after HEARTBEAT × MISSED_HEARTBEATS.
const HEARTBEAT: Duration = Duration::from_secs(2);
const MISSED_HEARTBEATS: usize = 3;
/// How often scheduled entries (retries) and rescued orphans are looked for;
/// new entries are picked up at once through NOTIFY.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often the queue gauges are refreshed: one cheap query per worker on
/// this clock, however often Prometheus scrapes.
const QUEUE_STATS_EVERY: Duration = Duration::from_secs(5);
/// Pause before apalis re-runs an entry whose run hit a database error.
const INFRASTRUCTURE_PAUSE: Duration = Duration::from_secs(1);

/// Everything a worker needs, built once.
pub struct WorkerSetup {
    pub db: PgPool,
    pub storage: Storage,
    pub concurrency: usize,
    pub claim_batch: usize,
    pub sandbox: SandboxLimits,
    pub queue_retention: Duration,
    pub metrics_addr: std::net::SocketAddr,
    /// Where committed status changes are announced (Off until set).
    pub publisher: Publisher,
}

impl WorkerSetup {
    pub fn from_config(config: &Config, db: PgPool, storage: Storage) -> Self {
        Self {
            db,
            storage,
            concurrency: config.worker_concurrency,
            claim_batch: config.worker_claim_batch,
            sandbox: SandboxLimits {
                ocr: config.tesseract_enabled,
                ocr_timeout: config.ocr_timeout,
                wall_clock: config.extract_timeout,
                ..SandboxLimits::default()
            },
            queue_retention: config.queue_retention,
            metrics_addr: config.worker_metrics_addr,
            publisher: Publisher::Off,
        }
    }
}

/// Fails with a clear message when OCR is on but tesseract or its English
/// data is missing: better to refuse to start than to fail every image.
pub fn check_tesseract(enabled: bool) -> anyhow::Result<()> {
    if !enabled {
        return Ok(());
    }
    let version = tesseract_version().map_err(|e| {
        anyhow::anyhow!(
            "TESSERACT_ENABLED: the `tesseract` binary is not usable ({e}); install tesseract-ocr \
             and tesseract-ocr-eng, or set TESSERACT_ENABLED=false"
        )
    })?;
    let langs = std::process::Command::new("tesseract")
        .arg("--list-langs")
        .output()
        .map_err(|e| anyhow::anyhow!("TESSERACT_ENABLED: cannot list tesseract languages: {e}"))?;
    let listed = String::from_utf8_lossy(&langs.stdout);
    if !listed.lines().any(|l| l.trim() == "eng") {
        anyhow::bail!(
            "TESSERACT_ENABLED: tesseract {version} has no English data (`eng`); install tesseract-ocr-eng"
        );
    }
    tracing::info!(%version, "tesseract available");
    Ok(())
}

fn tesseract_version() -> Result<String, String> {
    let output = std::process::Command::new("tesseract")
        .arg("--version")
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    text.lines()
        .next()
        .map(|l| l.trim().to_owned())
        .filter(|l| l.starts_with("tesseract"))
        .ok_or_else(|| "unexpected `tesseract --version` output".to_owned())
}

pub async fn run(setup: WorkerSetup, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(setup.metrics_addr).await.map_err(|e| {
        anyhow::anyhow!(
            "WORKER_METRICS_ADDR: cannot listen on {}: {e}",
            setup.metrics_addr
        )
    })?;
    let scratch = scratch_dir();
    std::fs::create_dir_all(&scratch).map_err(|e| {
        anyhow::anyhow!("cannot create scratch directory {}: {e}", scratch.display())
    })?;
    let processor = Processor::new(
        setup.db.clone(),
        setup.storage.clone(),
        setup.sandbox.clone(),
        scratch,
        setup.publisher.clone(),
    );

    crate::metrics::handle();
    crate::metrics::register_worker_series();
    let probes = tokio::spawn(serve_probes(listener, setup.db.clone(), shutdown.clone()));
    let gauges = tokio::spawn(refresh_queue_gauges(setup.db.clone(), shutdown.clone()));
    let pruner = tokio::spawn(prune_periodically(
        setup.db.clone(),
        setup.queue_retention,
        shutdown.clone(),
    ));
    supervise(
        processor,
        setup.concurrency,
        setup.claim_batch,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    let _ = tokio::join!(probes, pruner, gauges);
    tracing::info!("worker stopped");
    Ok(())
}

/// Runs the apalis worker until shutdown, restarting it if it stops on its
/// own (a backend error, an undecodable row).
async fn supervise(
    processor: Processor,
    concurrency: usize,
    claim_batch: usize,
    shutdown: CancellationToken,
) {
    let processor = Arc::new(processor);
    let mut restarts: u32 = 0;
    while !shutdown.is_cancelled() {
        let name = format!("docflow-worker-{}", ulid::Ulid::generate());
        let queue_config = QueueConfig::default()
            .queue(queue::QUEUE)
            .batch_size(claim_batch.max(1))
            .heartbeat_interval(HEARTBEAT)
            .missed_heartbeats(MISSED_HEARTBEATS);
        let backend = PostgresStorage::<serde_json::Value>::new(processor.db())
            .with_config(queue_config)
            .with_pubsub()
            .poll_with_interval(POLL_INTERVAL);
        let worker = WorkerBuilder::new(name.clone())
            .backend(backend)
            .data(Arc::clone(&processor))
            .concurrency(concurrency.max(1))
            .build(handle_entry);
        tracing::info!(worker = %name, concurrency, restarts, "worker consuming {}", queue::QUEUE);
        let keep_alive = tokio::spawn(keep_alive(processor.db().clone(), name.clone()));
        let stop = shutdown.clone();
        // On shutdown apalis stops claiming, lets in-flight jobs finish and
        // hands back anything it had claimed but not started.
        let outcome = worker
            .run_until(async move {
                stop.cancelled().await;
                Ok::<(), std::io::Error>(())
            })
            .await;
        keep_alive.abort();
        match outcome {
            Ok(()) => break,
            Err(err) => {
                restarts += 1;
                let pause = Duration::from_millis(500 * u64::from(restarts.min(10)));
                tracing::error!(error = %err, ?pause, "worker loop stopped; restarting");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }
    }
}

/// Keeps this worker's `last_seen` fresh on our own clock. apalis-postgres
/// skips its heartbeat while claimed entries wait in its buffer; without this
/// a busy worker would look dead and its running jobs would be re-run. A
/// killed process stops this too, so orphan rescue still works.
async fn keep_alive(db: PgPool, worker: String) {
    let mut ticker = tokio::time::interval(HEARTBEAT);
    loop {
        ticker.tick().await;
        let beat = queue::mark_worker_alive(&db, &worker).await;
        if let Err(err) = beat {
            tracing::warn!(error = %err, %worker, "worker keep-alive failed");
        }
    }
}

/// The apalis handler. Payloads are decoded here, not by apalis, so one
/// malformed row is killed instead of stopping the worker.
async fn handle_entry(
    raw: serde_json::Value,
    processor: Data<Arc<Processor>>,
) -> Result<(), BoxDynError> {
    let ProcessDocument { job_id } = match serde_json::from_value(raw) {
        Ok(payload) => payload,
        Err(err) => {
            tracing::error!(error = %err, "undecodable queue entry; dropping it");
            return Err(AbortError::new(err).into());
        }
    };
    let processor = Arc::clone(&processor);
    let run = {
        let processor = Arc::clone(&processor);
        async move { processor.process(job_id).await }
    };
    run_guarded(&processor, job_id, run).await
}

/// Runs one job's `run` in its own task, so that a panic anywhere in it is
/// caught here: the job fails as `unhandled` (dead-lettered, its event
/// published) and the worker goes on. An infrastructure error is handed back
/// to apalis after a pause, so the entry is retried as is.
pub async fn run_guarded(
    processor: &Processor,
    job_id: crate::domain::JobId,
    run: impl std::future::Future<Output = Result<Outcome, sqlx::Error>> + Send + 'static,
) -> Result<(), BoxDynError> {
    match tokio::spawn(run).await {
        Ok(Ok(_outcome)) => Ok(()),
        Ok(Err(db_error)) => {
            tracing::error!(%job_id, error = %db_error, "job run hit a database error; will retry");
            tokio::time::sleep(INFRASTRUCTURE_PAUSE).await;
            Err(db_error.into())
        }
        Err(join_error) => {
            let detail = panic_message(join_error);
            tracing::error!(%job_id, panic = %detail, "job run panicked");
            match processor
                .fail_unhandled(job_id, &format!("the worker panicked: {detail}"))
                .await
            {
                Ok(Outcome::Failed { .. } | Outcome::Skipped) => Ok(()),
                Ok(other) => {
                    tracing::error!(%job_id, ?other, "unexpected outcome recording a panic");
                    Ok(())
                }
                Err(err) => {
                    tokio::time::sleep(INFRASTRUCTURE_PAUSE).await;
                    Err(err.into())
                }
            }
        }
    }
}

fn panic_message(err: tokio::task::JoinError) -> String {
    match err.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "non-string panic payload".to_owned()),
        Err(err) => err.to_string(),
    }
}

async fn prune_periodically(db: PgPool, retention: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match queue::prune(&db, retention).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "pruned finished queue entries"),
            Err(err) => tracing::warn!(error = %err, "pruning the queue failed"),
        }
    }
}

async fn refresh_queue_gauges(db: PgPool, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(QUEUE_STATS_EVERY);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match crate::db::jobs::queue_stats(&db).await {
            Ok(stats) => crate::metrics::set_queue(
                stats.queued,
                stats.processing,
                stats.oldest_queued_age_secs,
                stats.dead_letters,
            ),
            Err(err) => tracing::warn!(error = %err, "reading queue gauges failed"),
        }
    }
}

async fn serve_probes(listener: TcpListener, db: PgPool, shutdown: CancellationToken) {
    let probes = Router::new()
        .route("/health/live", get(|| async { "alive" }))
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    crate::metrics::handle().render(),
                )
            }),
        )
        .route(
            "/health/ready",
            get(move || {
                let db = db.clone();
                async move {
                    match crate::db::ping(&db).await {
                        Ok(()) => (axum::http::StatusCode::OK, "ready".to_owned()),
                        Err(err) => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            format!("postgres: {err}"),
                        ),
                    }
                }
            }),
        );
    if let Err(err) = axum::serve(listener, probes)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %err, "worker probe server failed");
    }
}

/// Where job files are downloaded to while they are extracted.
fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join("docflow-worker")
}

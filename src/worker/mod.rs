//! The worker side: the `docflow worker` process (also run inside
//! `all-in-one`), which consumes the Postgres queue. Its parts:
//!
//! | module | what it does |
//! |---|---|
//! | [`producer`] | claims runs into free slots; LISTEN for new jobs and cancels |
//! | [`backend`] | apalis's `Backend` over the claimed runs, and the layer that acknowledges them |
//! | [`run`] | one run: download, extract in the sandbox pool, classify the outcome |
//! | [`completer`] | records outcomes in batches, through the state machine |
//! | [`lease`] | this process's lease; leader election and maintenance (rescue, gauges, pruning) |
//! | [`scratch`] | the per-process scratch directory |
//!
//! The extraction itself happens in child processes of the
//! `docflow-extract` crate (`worker/`), whose pool this process owns.

pub mod backend;
pub mod completer;
pub mod lease;
pub mod producer;
pub mod run;
pub mod scratch;

use std::{convert::Infallible, future::Future, path::PathBuf, sync::Arc};

use apalis::prelude::{Data, WorkerBuilder, WorkerBuilderExt};
use axum::{Router, routing::get};
use docflow_extract::pool::{ExtractorPool, PoolConfig};
use sqlx::PgPool;
use tokio::{net::TcpListener, sync::Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::{
    backend::{JobsBackend, Slots},
    completer::Completer,
    lease::LeaseConfig,
    producer::Producer,
    run::{OcrSettings, RunReport, Runner},
    scratch::Scratch,
};
use crate::{
    config::Config, db::jobs::queue::Claimed, domain::JobId, live::Publisher, storage::Storage,
};

/// Owners one claim looks at: with more owners waiting, each claim starts
/// at a random one, so every owner's turn comes.
const OWNERS_PER_CLAIM: i32 = 64;

/// Everything a worker needs, built once.
pub struct WorkerSetup {
    pub db: PgPool,
    pub storage: Storage,
    /// Runs executing at once.
    pub concurrency: usize,
    /// Runs claimed beyond those executing, so the next is at hand when one
    /// ends. Kept small: what one worker holds, others cannot run.
    pub prefetch: usize,
    pub per_owner_running: i32,
    pub lease: LeaseConfig,
    pub pool: PoolConfig,
    pub ocr: OcrSettings,
    /// Under which this process makes its scratch directory.
    pub scratch_root: PathBuf,
    pub metrics_addr: std::net::SocketAddr,
    /// Where committed status changes are announced (Off until set).
    pub publisher: Publisher,
}

impl WorkerSetup {
    pub fn from_config(config: &Config, db: PgPool, storage: Storage) -> Self {
        Self {
            db,
            storage,
            concurrency: config.worker.concurrency,
            prefetch: config.worker.prefetch,
            per_owner_running: i32::try_from(config.worker.max_running_per_user)
                .unwrap_or(i32::MAX),
            lease: LeaseConfig {
                ttl: config.worker.lease_ttl,
            },
            pool: PoolConfig {
                program: extractor_program(),
                size: config.worker.extractor.processes,
                max_documents: config.worker.extractor.max_documents,
                address_space_bytes: config.worker.extractor.memory_bytes,
                cpu_seconds: config.worker.extractor.cpu_secs,
                wall_clock: config.worker.extractor.timeout,
                scratch: PathBuf::new(),
            },
            ocr: OcrSettings {
                enabled: config.ocr.enabled,
                languages: config.ocr.languages.as_str().to_owned(),
                timeout: config.ocr.timeout,
                max_pages: config.ocr.max_pages,
            },
            scratch_root: std::env::temp_dir().join("docflow-worker"),
            metrics_addr: config.worker.metrics_addr,
            publisher: Publisher::Off,
        }
    }
}

/// The program the extractor processes run: this process's own
/// executable. Through `/proc/self/exe` on Linux, which stays this very
/// binary even after an upgrade replaces the file on disk.
fn extractor_program() -> PathBuf {
    let own = PathBuf::from("/proc/self/exe");
    if own.exists() {
        own
    } else {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("docflow"))
    }
}

/// Fails with a clear message when OCR is on but tesseract, a language's
/// data or the page renderer is missing: better to refuse to start than to
/// fail every image and scan.
pub fn check_tesseract(enabled: bool, languages: &str) -> anyhow::Result<()> {
    if !enabled {
        return Ok(());
    }
    let version = docflow_extract::ocr::check(languages).map_err(|reason| {
        anyhow::anyhow!(
            "OCR_LANGUAGES={languages}: {reason}; install tesseract-ocr and the languages' \
             data (tesseract-ocr-eng, …), change OCR_LANGUAGES, or set TESSERACT_ENABLED=false"
        )
    })?;
    let renderer = docflow_extract::ocr::check_renderer().map_err(|reason| {
        anyhow::anyhow!(
            "{reason}; install poppler-utils (it renders PDF pages without text for OCR), \
             or set TESSERACT_ENABLED=false"
        )
    })?;
    tracing::info!(%version, %renderer, languages, "OCR available");
    Ok(())
}

/// What a worker does with the runs it claims: [`Runner`] in production
/// (download, extract in the sandbox); the queue benchmark plugs in a
/// no-op to measure the queue alone.
pub trait Handler: Send + Sync + 'static {
    fn run(self: Arc<Self>, claimed: Claimed) -> impl Future<Output = RunReport> + Send;
    /// Stops the run of `job` if this process has it; whether it did.
    fn cancel(&self, job: JobId) -> bool;
    /// The jobs whose runs are in progress here.
    fn running_jobs(&self) -> Vec<Uuid>;
}

impl Handler for Runner {
    async fn run(self: Arc<Self>, claimed: Claimed) -> RunReport {
        Runner::run(&self, claimed).await
    }

    fn cancel(&self, job: JobId) -> bool {
        Runner::cancel(self, job)
    }

    fn running_jobs(&self) -> Vec<Uuid> {
        Runner::running_jobs(self)
    }
}

/// Runs the worker until `shutdown`, then drains: running jobs finish and
/// are recorded, claimed ones are handed back, the lease is given up.
pub async fn run(mut setup: WorkerSetup, shutdown: CancellationToken) -> anyhow::Result<()> {
    let worker_id = Uuid::now_v7();
    let scratch = Scratch::create(&setup.scratch_root, &worker_id.to_string())?;
    setup.pool.scratch = scratch.path().to_path_buf();
    let pool = ExtractorPool::new(setup.pool.clone());
    pool.warm_up();
    let runner = Arc::new(Runner::new(
        setup.storage.clone(),
        pool,
        scratch.path().to_path_buf(),
        setup.ocr.clone(),
    ));
    let outcome = consume(setup, worker_id, runner, shutdown).await;
    drop(scratch);
    outcome
}

/// The queue side of a worker, around any [`Handler`]: lease, producer,
/// apalis worker, completer, probes.
pub async fn consume<H: Handler>(
    setup: WorkerSetup,
    worker_id: Uuid,
    handler: Arc<H>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(setup.metrics_addr).await.map_err(|e| {
        anyhow::anyhow!(
            "WORKER_METRICS_ADDR: cannot listen on {}: {e}",
            setup.metrics_addr
        )
    })?;
    crate::metrics::handle();
    crate::metrics::register_worker_series();
    let db = crate::db::queue_pool(&setup.db);
    // The lease exists before the first claim, so no run is ever leased to
    // a worker the queue does not know. (Postgres may be down at start-up:
    // the heartbeat then takes the lease when it can.)
    if let Err(err) = crate::db::queue_workers::register(
        &db,
        worker_id,
        &lease::hostname(),
        i32::try_from(std::process::id()).unwrap_or(i32::MAX),
    )
    .await
    {
        tracing::warn!(error = %err, "cannot take the worker's lease yet");
    }

    // The parts stop in order: the producer first (no new claims), then the
    // apalis worker drains, then the completer writes what is left, and the
    // lease goes last.
    let stop_claiming = shutdown.child_token();
    let stop_lease = CancellationToken::new();
    let probes = tokio::spawn(serve_probes(
        listener,
        db.clone(),
        setup.pool.program.clone(),
        stop_lease.clone(),
    ));
    let lease = tokio::spawn(lease::hold(
        db.clone(),
        worker_id,
        setup.lease.clone(),
        Arc::clone(&handler),
        setup.publisher.clone(),
        stop_lease.clone(),
    ));
    let capacity = setup.concurrency + setup.prefetch;
    let slots = Arc::new(Slots::new(capacity));
    let (completer, completer_task) = Completer::spawn(db.clone(), setup.publisher.clone());
    let (runs, claimed) = tokio::sync::mpsc::channel::<Claimed>(capacity);
    let wake = Arc::new(Notify::new());
    let announced = Arc::new(producer::Announced::default());
    let listen = tokio::spawn(producer::listen(
        db.clone(),
        Arc::clone(&wake),
        Arc::clone(&announced),
        Arc::clone(&handler),
        stop_lease.clone(),
    ));
    let producer = tokio::spawn(
        Producer {
            db: db.clone(),
            worker: worker_id,
            slots: Arc::clone(&slots),
            max_claim: capacity,
            owners_per_claim: OWNERS_PER_CLAIM,
            per_owner_running: setup.per_owner_running,
            announced,
        }
        .run(runs, wake, completer.committed(), stop_claiming.clone()),
    );

    let backend = JobsBackend::new(claimed, completer.clone(), Arc::clone(&slots));
    let apalis = WorkerBuilder::new(format!("docflow-worker-{worker_id}"))
        .backend(backend)
        .data(handler)
        .concurrency(setup.concurrency.max(1))
        .build(run_job::<H>);
    tracing::info!(
        worker = %worker_id,
        concurrency = setup.concurrency,
        prefetch = setup.prefetch,
        extractors = setup.pool.size,
        "worker consuming the jobs queue"
    );
    let stop = stop_claiming.clone();
    let outcome = apalis
        .run_until(async move {
            stop.cancelled().await;
            Ok::<(), std::io::Error>(())
        })
        .await;
    let _ = producer.await;
    drop(completer);
    let _ = completer_task.await;
    stop_lease.cancel();
    let _ = tokio::join!(lease, listen, probes);
    tracing::info!("worker stopped");
    outcome.map_err(|e| anyhow::anyhow!("the worker loop failed: {e}"))
}

/// The apalis task function: one run.
async fn run_job<H: Handler>(
    claimed: Claimed,
    handler: Data<Arc<H>>,
) -> Result<RunReport, Infallible> {
    Ok(Arc::clone(&handler).run(claimed).await)
}

async fn serve_probes(
    listener: TcpListener,
    db: PgPool,
    program: PathBuf,
    shutdown: CancellationToken,
) {
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
                let (db, program) = (db.clone(), program.clone());
                async move { readiness(&db, &program).await }
            }),
        );
    if let Err(err) = axum::serve(listener, probes)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %err, "worker probe server failed");
    }
}

/// Ready when Postgres answers and the extractor program can be started.
/// Details go to the log, not to the (unauthenticated) caller.
async fn readiness(
    db: &PgPool,
    program: &std::path::Path,
) -> (axum::http::StatusCode, &'static str) {
    use axum::http::StatusCode;
    if let Err(err) = crate::db::ping(db).await {
        tracing::warn!(error = %err, "worker not ready: postgres");
        return (StatusCode::SERVICE_UNAVAILABLE, "postgres: failed");
    }
    if std::fs::metadata(program).is_err() {
        tracing::warn!(program = %program.display(), "worker not ready: the extractor program is gone");
        return (StatusCode::SERVICE_UNAVAILABLE, "extractor: failed");
    }
    (StatusCode::OK, "ready")
}

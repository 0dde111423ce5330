//! The queue, measured in one run on one machine against one Postgres,
//! every figure beside a baseline taken in the same run:
//!
//! (d) `pgbench` TPC-B TPS on the same server: what the server does with
//!     one small read-write transaction per client round trip.
//! (p) graphile-worker, the Postgres queue people pick instead, on the same
//!     server: its no-op benchmark, default and tuned
//!     (`benches/peers/graphile-worker`; BENCH_PEERS=0 skips it).
//! (a) enqueue through `POST /jobs` at 64 connections (wrk): rate, p50, p99.
//! (b) a no-op handler through our real worker (lease, producer, apalis
//!     `Worker` over our `Backend`, completer, state machine, events,
//!     results) with the default settings, BENCH_NOOP_JOBS (20,000) jobs.
//! (c) the real pipeline: BENCH_PIPELINE_JOBS (2,000) small text documents,
//!     jobs created with `POST /jobs`, run by `docflow::worker::run` with the
//!     default settings (download, warm extractor processes, results).
//! (e) the PDF pipeline: BENCH_PDF_JOBS (200) one-page PDFs, likewise.
//! (f) fairness: one job of user B while user A has 10,000 queued.
//! (g) growth: `GET /jobs?limit=20` at 64 connections and the no-op drain,
//!     before and after BENCH_HISTORY (1,000,000) finished jobs are added
//!     to the listing user's history.
//!
//! Run: `cargo bench --bench queue` (Postgres on DATABASE_URL, default the
//! local one; `pgbench`, `wrk` and, for (p), Node.js on PATH).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use docflow::{
    app::{Topology, build_state_with_db},
    config::Config,
    db,
    domain::{DocumentId, JobId, UserId},
    http::{self, AppState},
    worker::{
        Handler, WorkerSetup,
        run::{RunOutcome, RunReport},
    },
};
use object_store::ObjectStoreExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

mod support;

use support::ScratchDb;

const SECRET: &str = "bench-secret-bench-secret-bench-secret-00";
const PASSWORD: &str = "bench-password-1";
/// What the no-op handler records as each job's result.
const NOOP_RESULT: &str =
    r#"{"kind":"text","text":"","encoding":"UTF-8","counts":{"chars":0,"words":0,"lines":0}}"#;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn enabled(name: &str) -> bool {
    std::env::var(name).map_or(true, |v| v != "0")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    docflow::install_crypto_provider();
    let scratch = ScratchDb::create("queue", 60).await?;
    let outcome = run(&scratch.pool, &scratch.url).await;
    scratch.drop_after(outcome).await
}

/// The API in this process, on a loopback port, and a signed-in user.
struct Bench {
    state: AppState,
    base: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    _storage: tempfile::TempDir,
}

impl Bench {
    async fn start(pool: &PgPool) -> anyhow::Result<Self> {
        let storage = tempfile::tempdir()?;
        let mut vars: HashMap<String, String> = HashMap::from([
            ("JWT_SECRET".into(), SECRET.into()),
            (
                "STORAGE_URL".into(),
                storage.path().to_string_lossy().into_owned(),
            ),
            ("AUTH_RATE_LIMIT_PER_MINUTE".into(), "100000".into()),
            ("UPLOAD_RATE_LIMIT_PER_MINUTE".into(), "100000".into()),
            ("TESSERACT_ENABLED".into(), "false".into()),
            ("DATABASE_MAX_CONNECTIONS".into(), "40".into()),
        ]);
        // The worker's settings are the shipped defaults unless the
        // environment says otherwise (to compare settings, not to tune the
        // figures: the printed ones use the defaults).
        for var in [
            "WORKER_CONCURRENCY",
            "WORKER_PREFETCH",
            "MAX_RUNNING_PER_USER",
            "EXTRACTOR_PROCESSES",
        ] {
            if let Ok(value) = std::env::var(var) {
                eprintln!("bench: {var}={value} (not the default)");
                vars.insert(var.into(), value);
            }
        }
        let state =
            build_state_with_db(Config::from_map(&vars)?, Topology::SingleNode, pool.clone())
                .await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        tokio::spawn(http::serve(
            listener,
            state.clone(),
            shutdown.clone().cancelled_owned(),
        ));
        Ok(Self {
            state,
            base,
            client: reqwest::Client::new(),
            shutdown,
            _storage: storage,
        })
    }

    async fn sign_in(&self, email: &str) -> anyhow::Result<(String, UserId)> {
        let creds = json!({"email": email, "password": PASSWORD});
        self.client
            .post(format!("{}/api/v1/auth/register", self.base))
            .json(&creds)
            .send()
            .await?;
        let login: Value = self
            .client
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&creds)
            .send()
            .await?
            .json()
            .await?;
        let token = login["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let me: Value = self
            .client
            .get(format!("{}/api/v1/auth/me", self.base))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        let id = me["id"].as_str().unwrap_or_default().parse()?;
        Ok((token, UserId(id)))
    }

    /// Stores `count` documents of the owner directly (object and row): the
    /// pipelines measure the queue and the extraction, not uploads.
    async fn documents(
        &self,
        owner: UserId,
        count: usize,
        content_type: &str,
        body: impl Fn(usize) -> Vec<u8>,
    ) -> anyhow::Result<Vec<DocumentId>> {
        let mut ids = Vec::with_capacity(count);
        for i in 0..count {
            let id = DocumentId::generate();
            let key = id.storage_key(owner);
            let bytes = body(i);
            self.state
                .storage
                .store()
                .put(
                    &object_store::path::Path::from(key.as_str()),
                    bytes.clone().into(),
                )
                .await?;
            db::documents::insert(
                &self.state.db,
                &db::documents::NewDocument {
                    id,
                    owner_id: owner,
                    filename: "doc",
                    content_type,
                    size_bytes: bytes.len() as i64,
                    sha256: &"0".repeat(64),
                    storage_key: &key,
                },
            )
            .await?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// `POST /jobs` for each document, 16 requests at a time.
    async fn create_jobs(&self, token: &str, documents: &[DocumentId]) -> anyhow::Result<()> {
        let chunks: Vec<Vec<DocumentId>> = documents
            .chunks(documents.len().div_ceil(16).max(1))
            .map(<[DocumentId]>::to_vec)
            .collect();
        let mut tasks = Vec::new();
        for chunk in chunks {
            let (client, base, token) = (self.client.clone(), self.base.clone(), token.to_owned());
            tasks.push(tokio::spawn(async move {
                for id in chunk {
                    let response = client
                        .post(format!("{base}/api/v1/jobs"))
                        .bearer_auth(&token)
                        .json(&json!({"document_id": id.0}))
                        .send()
                        .await?;
                    anyhow::ensure!(
                        response.status() == 201,
                        "POST /jobs: {}",
                        response.status()
                    );
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok(())
    }

    /// The worker setup the shipped configuration gives, in this process.
    fn worker_setup(&self) -> anyhow::Result<WorkerSetup> {
        let mut setup = WorkerSetup::from_config(
            &self.state.config,
            self.state.db.clone(),
            self.state.storage.clone(),
        );
        setup.pool.program = env!("CARGO_BIN_EXE_docflow").into();
        setup.metrics_addr = "127.0.0.1:0".parse()?;
        setup.publisher = self.state.publisher.clone();
        Ok(setup)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A handler that does nothing and succeeds: the queue alone.
struct Noop;

impl Handler for Noop {
    async fn run(self: Arc<Self>, _claimed: db::jobs::queue::Claimed) -> RunReport {
        RunReport {
            outcome: RunOutcome::Succeeded(NOOP_RESULT.to_owned()),
            started_at: chrono::Utc::now(),
            elapsed: Duration::ZERO,
        }
    }

    fn cancel(&self, _job: JobId) -> bool {
        false
    }

    fn running_jobs(&self) -> Vec<uuid::Uuid> {
        Vec::new()
    }
}

async fn run(pool: &PgPool, url: &str) -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "machine: {cpus} CPUs; Postgres {}; {}",
        server_version(pool).await?,
        chrono::Utc::now().format("%Y-%m-%d")
    );
    let tps = pgbench(url)?;
    println!("(d) pgbench TPC-B (scale 10, 8 clients, 15 s):      {tps:8.0} TPS  [baseline 1.00]");
    let graphile = if enabled("BENCH_PEERS") {
        graphile_worker()?
    } else {
        None
    };

    let bench = Bench::start(pool).await?;
    let (token, owner) = bench.sign_in("bench@example.com").await?;
    let documents = bench
        .documents(owner, 1, "text/plain", |_| b"x".to_vec())
        .await?;

    if enabled("BENCH_ENQUEUE") {
        let body = json!({"document_id": documents[0].0}).to_string();
        let load = wrk(&bench.base, "/api/v1/jobs", &token, Some(&body), 15)?;
        println!(
            "(a) POST /jobs, 64 connections, 15 s:           {:8.0} req/s  p50 {:.1} ms  p99 {:.1} ms",
            load.rate, load.p50_ms, load.p99_ms
        );
        clear_jobs(pool).await?;
    }

    let n = env_usize("BENCH_NOOP_JOBS", 20_000);
    let noop = noop_throughput(&bench, pool, documents[0], n).await?;
    // Start-up included, as graphile-worker's figure has it.
    let peer = graphile.map_or(String::new(), |g| {
        format!("  [{:.2}× graphile-worker tuned]", noop.wall / g)
    });
    println!(
        "(b) no-op handler, {n} jobs, default settings:  {:8.0} jobs/s  [{:.2}× pgbench]{peer}; steady {:.0} jobs/s, first claim after {} ms",
        noop.wall,
        noop.wall / tps,
        noop.steady,
        noop.start_up.as_millis()
    );

    let n = env_usize("BENCH_PIPELINE_JOBS", 2_000);
    let texts = bench
        .documents(owner, n, "text/plain", |i| {
            format!("Document number {i}.\nThe quick brown fox jumps over the lazy dog.\n")
                .into_bytes()
        })
        .await?;
    let text = pipeline(&bench, pool, &token, &texts).await?;
    println!(
        "(c) real pipeline, {n} text documents:          {:8.0} jobs/s  [{:.2}× pgbench] (start-up included: {:.0} jobs/s, first claim after {} ms)",
        text.steady,
        text.steady / tps,
        text.wall,
        text.start_up.as_millis()
    );

    let n = env_usize("BENCH_PDF_JOBS", 200);
    let pdfs = bench
        .documents(owner, n, "application/pdf", one_page_pdf)
        .await?;
    let pdf = pipeline(&bench, pool, &token, &pdfs).await?;
    println!(
        "(e) PDF pipeline, {n} one-page PDFs:             {:8.0} jobs/s (start-up included: {:.0} jobs/s, first claim after {} ms)",
        pdf.steady,
        pdf.wall,
        pdf.start_up.as_millis()
    );

    if enabled("BENCH_FAIRNESS") {
        let waited = fairness(&bench, pool).await?;
        println!(
            "(f) user B's one job behind user A's 10,000:      {:8.0} ms to succeeded",
            waited.as_secs_f64() * 1e3
        );
    }

    let history = env_usize("BENCH_HISTORY", 1_000_000);
    if history > 0 {
        growth(&bench, pool, &token, documents[0], history).await?;
    }
    Ok(())
}

async fn server_version(pool: &PgPool) -> anyhow::Result<String> {
    Ok(sqlx::query_scalar::<_, String>("SHOW server_version")
        .fetch_one(pool)
        .await?)
}

fn pgbench(url: &str) -> anyhow::Result<f64> {
    let init = std::process::Command::new("pgbench")
        .args(["-i", "-q", "-s", "10", url])
        .output()?;
    anyhow::ensure!(
        init.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let run = std::process::Command::new("pgbench")
        .args(["-c", "8", "-j", "2", "-T", "15", url])
        .output()?;
    anyhow::ensure!(
        run.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = String::from_utf8_lossy(&run.stdout);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        })
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench output: {text}"))
}

/// Runs the graphile-worker peer benchmark; its best tuned rate.
fn graphile_worker() -> anyhow::Result<Option<f64>> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/peers/graphile-worker/run"
    );
    let output = std::process::Command::new(script).output()?;
    if !output.status.success() {
        eprintln!(
            "(p) graphile-worker did not run: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        return Ok(None);
    }
    let mut best_tuned: Option<f64> = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        println!("(p) {line}");
        let rate = line
            .rsplit_once("= ")
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<f64>().ok());
        if line.contains(" tuned")
            && let Some(rate) = rate
        {
            best_tuned = Some(best_tuned.map_or(rate, |best| best.max(rate)));
        }
    }
    Ok(best_tuned)
}

struct Load {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `wrk` against the API: 64 connections, 2 threads, `secs` seconds.
fn wrk(base: &str, path: &str, token: &str, post: Option<&str>, secs: u32) -> anyhow::Result<Load> {
    let script = tempfile::Builder::new().suffix(".lua").tempfile()?;
    let mut lua = format!("wrk.headers[\"Authorization\"] = \"Bearer {token}\"\n");
    if let Some(body) = post {
        lua.push_str(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
        );
        lua.push_str(&format!("wrk.body = '{body}'\n"));
    }
    std::fs::write(script.path(), lua)?;
    let output = std::process::Command::new("wrk")
        .args(["-t2", "-c64", &format!("-d{secs}s"), "--latency", "-s"])
        .arg(script.path())
        .arg(format!("{base}{path}"))
        .output()?;
    anyhow::ensure!(output.status.success(), "wrk failed");
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(!text.contains("Non-2xx"), "wrk saw errors:\n{text}");
    let percentile = |label: &str| {
        text.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(label)
                    .map(|v| parse_duration_ms(v.trim()))
            })
            .flatten()
    };
    let rate = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("Requests/sec:")
                .and_then(|v| v.trim().parse().ok())
        })
        .ok_or_else(|| anyhow::anyhow!("no rate in wrk output:\n{text}"))?;
    Ok(Load {
        rate,
        p50_ms: percentile("50%").unwrap_or(f64::NAN),
        p99_ms: percentile("99%").unwrap_or(f64::NAN),
    })
}

fn parse_duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse().ok()?;
    Some(match unit {
        "us" => value / 1e3,
        "ms" => value,
        "s" => value * 1e3,
        "m" => value * 60e3,
        _ => return None,
    })
}

async fn clear_jobs(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("TRUNCATE jobs CASCADE").execute(pool).await?;
    sqlx::query("VACUUM ANALYZE jobs").execute(pool).await?;
    Ok(())
}

/// Inserts `n` queued jobs of the document (with their first events) in
/// one statement.
async fn backlog(pool: &PgPool, document: DocumentId, n: usize) -> anyhow::Result<()> {
    sqlx::query(
        r#"WITH new AS (
               INSERT INTO jobs (id, owner_id, document_id, status, max_attempts, event_seq)
               SELECT gen_random_uuid(), d.owner_id, d.id, 'queued', 3, 1
               FROM documents d, generate_series(1, $2) WHERE d.id = $1
               RETURNING id, created_at
           )
           INSERT INTO job_events (job_id, seq, status, attempts, created_at)
           SELECT id, 1, 'queued', 0, created_at FROM new"#,
    )
    .bind(document.0)
    .bind(i32::try_from(n)?)
    .execute(pool)
    .await?;
    Ok(())
}

/// How a drain went.
struct Drain {
    /// Jobs per second from starting the worker to the last job's end.
    wall: f64,
    /// Jobs per second from the first claim to the last completion (the
    /// worker's start-up left out), from the rows' own timestamps.
    steady: f64,
    /// From starting the worker to its first claim.
    start_up: Duration,
}

/// Waits until no job is open, checking every 10 ms with [`any_open`];
/// how fast the `n` jobs went.
async fn drained(
    pool: &PgPool,
    n: usize,
    since: Instant,
    limit: Duration,
) -> anyhow::Result<Drain> {
    let started_at = chrono::Utc::now() - chrono::Duration::from_std(since.elapsed())?;
    loop {
        if !any_open(pool).await? {
            let wall = n as f64 / since.elapsed().as_secs_f64();
            let (done, failed, first, last): (
                i64,
                i64,
                Option<chrono::DateTime<chrono::Utc>>,
                Option<chrono::DateTime<chrono::Utc>>,
            ) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE status = 'succeeded'),
                            count(*) FILTER (WHERE status = 'failed'),
                            min(claimed_at), max(completed_at)
                     FROM jobs WHERE claimed_at >= $1",
            )
            .bind(started_at)
            .fetch_one(pool)
            .await?;
            anyhow::ensure!(failed == 0, "{failed} jobs failed");
            anyhow::ensure!(done as usize >= n, "only {done} of {n} jobs succeeded");
            let (first, last) = first
                .zip(last)
                .ok_or_else(|| anyhow::anyhow!("no timestamps"))?;
            let span = (last - first).to_std()?.as_secs_f64().max(1e-6);
            return Ok(Drain {
                wall,
                steady: n as f64 / span,
                start_up: (first - started_at).to_std().unwrap_or_default(),
            });
        }
        anyhow::ensure!(since.elapsed() < limit, "jobs still open after {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether any job waits or runs: a queued one (claimed or not) is the
/// first entry of the claim index, a running one of the processing index.
/// Written as `ORDER BY` the index's columns `LIMIT 1`, so each is one index
/// probe: an `EXISTS` let the planner scan the table, which walked every
/// finished row before the first queued one, 100 times a second, on the
/// server the measured worker shares.
async fn any_open(pool: &PgPool) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT (SELECT id FROM jobs WHERE status = 'queued'
                 ORDER BY owner_id, priority DESC, run_at, id LIMIT 1) IS NOT NULL
             OR (SELECT id FROM jobs WHERE status = 'processing' ORDER BY owner_id LIMIT 1) IS NOT NULL",
    )
    .fetch_one(pool)
    .await?)
}

async fn noop_throughput(
    bench: &Bench,
    pool: &PgPool,
    document: DocumentId,
    n: usize,
) -> anyhow::Result<Drain> {
    clear_jobs(pool).await?;
    backlog(pool, document, n).await?;
    sqlx::query("VACUUM ANALYZE jobs").execute(pool).await?;
    let setup = bench.worker_setup()?;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let worker = tokio::spawn(docflow::worker::consume(
        setup,
        uuid::Uuid::now_v7(),
        Arc::new(Noop),
        shutdown.clone(),
    ));
    let drain = drained(pool, n, started, Duration::from_secs(600)).await;
    shutdown.cancel();
    worker.await??;
    drain
}

/// Jobs for `documents` created through `POST /jobs`, then the real worker
/// started with the default settings; the rate until all are final.
async fn pipeline(
    bench: &Bench,
    pool: &PgPool,
    token: &str,
    documents: &[DocumentId],
) -> anyhow::Result<Drain> {
    clear_jobs(pool).await?;
    bench.create_jobs(token, documents).await?;
    sqlx::query("VACUUM ANALYZE jobs").execute(pool).await?;
    let setup = bench.worker_setup()?;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let worker = tokio::spawn(docflow::worker::run(setup, shutdown.clone()));
    let drain = drained(pool, documents.len(), started, Duration::from_secs(900)).await;
    shutdown.cancel();
    worker.await??;
    drain
}

/// How long user B's single job takes while user A has 10,000 queued and
/// the real worker runs with the default settings.
async fn fairness(bench: &Bench, pool: &PgPool) -> anyhow::Result<Duration> {
    clear_jobs(pool).await?;
    let (_, alice) = bench.sign_in("alice@example.com").await?;
    let (bob_token, bob) = bench.sign_in("bob@example.com").await?;
    let alices = bench
        .documents(alice, 1, "text/plain", |_| b"Alice's backlog.".to_vec())
        .await?;
    let bobs = bench
        .documents(bob, 1, "text/plain", |_| b"Bob's one.".to_vec())
        .await?;
    backlog(pool, alices[0], 10_000).await?;
    let setup = bench.worker_setup()?;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(docflow::worker::run(setup, shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let created: Value = bench
        .client
        .post(format!("{}/api/v1/jobs", bench.base))
        .bearer_auth(&bob_token)
        .json(&json!({"document_id": bobs[0].0}))
        .send()
        .await?
        .json()
        .await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let waited = loop {
        let status: String = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(pool)
            .await?;
        if status == "succeeded" {
            break started.elapsed();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "B's job is still {status}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    shutdown.cancel();
    worker.await??;
    Ok(waited)
}

/// `GET /jobs` latency and the no-op drain, with the listing user's
/// history at 1,000 jobs and then at 1,000 + `history`.
async fn growth(
    bench: &Bench,
    pool: &PgPool,
    token: &str,
    document: DocumentId,
    history: usize,
) -> anyhow::Result<()> {
    let n = env_usize("BENCH_NOOP_JOBS", 20_000);
    clear_jobs(pool).await?;
    finished_history(pool, document, 1_000).await?;
    let small = wrk(&bench.base, "/api/v1/jobs?limit=20", token, None, 15)?;
    let drain_small = noop_after_history(bench, pool, document, n).await?;
    finished_history(pool, document, history).await?;
    let large = wrk(&bench.base, "/api/v1/jobs?limit=20", token, None, 15)?;
    let drain_large = noop_after_history(bench, pool, document, n).await?;
    println!(
        "(g) GET /jobs?limit=20, 64 conns, history 1,000:   {:8.0} req/s  p99 {:.1} ms",
        small.rate, small.p99_ms
    );
    println!(
        "    … with {history} more finished jobs:        {:8.0} req/s  p99 {:.1} ms  [p99 ×{:.2}, rate ×{:.2}]",
        large.rate,
        large.p99_ms,
        large.p99_ms / small.p99_ms,
        large.rate / small.rate
    );
    println!(
        "    no-op drain, {n} jobs: {drain_small:.0} → {drain_large:.0} jobs/s  [×{:.2}]",
        drain_large / drain_small
    );
    Ok(())
}

/// Adds `n` finished (succeeded) jobs to the document's owner's history.
async fn finished_history(pool: &PgPool, document: DocumentId, n: usize) -> anyhow::Result<()> {
    let mut left = n;
    while left > 0 {
        let batch = left.min(100_000);
        sqlx::query(
            r#"INSERT INTO jobs (id, owner_id, document_id, status, attempts, max_attempts, event_seq,
                                 created_at, updated_at, started_at, completed_at)
               SELECT gen_random_uuid(), d.owner_id, d.id, 'succeeded', 1, 3, 3,
                      now() - make_interval(secs => g), now(), now(), now()
               FROM documents d, generate_series(1, $2) AS g WHERE d.id = $1"#,
        )
        .bind(document.0)
        .bind(i32::try_from(batch)?)
        .execute(pool)
        .await?;
        left -= batch;
    }
    sqlx::query("VACUUM ANALYZE jobs").execute(pool).await?;
    Ok(())
}

/// The no-op drain of `n` new jobs on top of the history there is.
async fn noop_after_history(
    bench: &Bench,
    pool: &PgPool,
    document: DocumentId,
    n: usize,
) -> anyhow::Result<f64> {
    let since: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT now()").fetch_one(pool).await?;
    backlog(pool, document, n).await?;
    sqlx::query("VACUUM ANALYZE jobs").execute(pool).await?;
    // Both drains start from a fresh checkpoint: otherwise the one after
    // the bulk insert of the history pays that insert's checkpoint (and
    // the full-page images that follow it), which is not the cost of the
    // history being there.
    sqlx::query("CHECKPOINT").execute(pool).await?;
    let setup = bench.worker_setup()?;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let worker = tokio::spawn(docflow::worker::consume(
        setup,
        uuid::Uuid::now_v7(),
        Arc::new(Noop),
        shutdown.clone(),
    ));
    let rate = loop {
        if !any_open(pool).await? {
            break n as f64 / started.elapsed().as_secs_f64();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "drain too slow"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    shutdown.cancel();
    worker.await??;
    // Back to the history alone for the next measurement.
    sqlx::query("DELETE FROM jobs WHERE created_at >= $1")
        .bind(since)
        .execute(pool)
        .await?;
    Ok(rate)
}

/// A one-page PDF with a line of text that names it.
fn one_page_pdf(i: usize) -> Vec<u8> {
    let content = format!("BT /F1 24 Tf 72 720 Td (Document number {i}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

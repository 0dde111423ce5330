//! Queue throughput, measured in one run on one machine against one Postgres:
//!
//! (a) enqueue rate through `POST /api/v1/jobs` (the API in process, 16
//!     concurrent clients, one transaction per job);
//! (b) worker throughput with a trivial handler on 20,000 entries, through
//!     apalis-postgres configured as the worker configures it, with claim
//!     batches of 1, 10 (the default) and 100 (BENCH_BATCHES);
//! (c) the real pipeline on 2,000 small text documents (child-process
//!     extraction, result and status written per job);
//! (d) `pgbench` TPC-B TPS on the same server, as the ceiling.
//!
//! Each figure is printed as jobs/s and as a ratio to (d).
//! Run: `cargo bench --bench queue` (needs Postgres on DATABASE_URL, default
//! the local one, and `pgbench`). Sizes: BENCH_NOOP_JOBS, BENCH_PIPELINE_JOBS.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use apalis::prelude::{
    BackendExt, BoxDynError, TaskBuilder, TaskId, WorkerBuilder, WorkerBuilderExt,
};
use apalis_postgres::{Config as QueueConfig, PostgresStorage};
use docflow::{
    app::{Topology, build_state_with_db},
    config::Config,
    db,
    domain::{DocumentId, UserId},
    http,
};
use object_store::ObjectStoreExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "bench-secret-bench-secret-bench-secret-00";
const NOOP_QUEUE: &str = "docflow.bench.noop";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

mod support;

use support::ScratchDb;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scratch = ScratchDb::create("queue", 40).await?;
    let outcome = run(&scratch.pool, &scratch.url).await;
    scratch.drop_after(outcome).await
}

async fn run(pool: &PgPool, url: &str) -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "machine: {cpus} CPUs; Postgres: {}",
        server_version(pool).await?
    );
    let tps = pgbench(url)?;
    println!("(d) pgbench TPC-B (scale 10, 8 clients, 15 s): {tps:.0} TPS  [ceiling, ratio 1.00]");

    let enqueue = enqueue_through_api(pool, env_usize("BENCH_ENQUEUE_JOBS", 5_000)).await?;
    println!(
        "(a) enqueue via POST /jobs, 16 clients:        {enqueue:8.0} jobs/s  [{:.2} of pgbench]",
        enqueue / tps
    );

    let n = env_usize("BENCH_NOOP_JOBS", 20_000);
    let batches = std::env::var("BENCH_BATCHES").unwrap_or_else(|_| "1,10,100".into());
    for batch in batches
        .split(',')
        .filter_map(|b| b.trim().parse::<usize>().ok())
    {
        let rate = noop_throughput(pool, n, batch, 2.max(cpus)).await?;
        let note = if batch == 10 {
            " (the worker's default)"
        } else {
            ""
        };
        println!(
            "(b) trivial handler, {n} jobs, claim batch {batch:3}{note}: {rate:8.0} jobs/s  [{:.2} of pgbench]",
            rate / tps
        );
    }

    let n = env_usize("BENCH_PIPELINE_JOBS", 2_000);
    let rate = pipeline_throughput(pool, n).await?;
    println!(
        "(c) real pipeline, {n} small text documents:   {rate:8.0} jobs/s  [{:.2} of pgbench]",
        rate / tps
    );
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

async fn enqueue_through_api(pool: &PgPool, n: usize) -> anyhow::Result<f64> {
    let storage = tempfile::tempdir()?;
    let vars: HashMap<String, String> = HashMap::from([
        ("JWT_SECRET".into(), SECRET.into()),
        (
            "STORAGE_URL".into(),
            storage.path().to_string_lossy().into_owned(),
        ),
        ("AUTH_RATE_LIMIT_PER_MINUTE".into(), "100000".into()),
    ]);
    let state =
        build_state_with_db(Config::from_map(&vars)?, Topology::SingleNode, pool.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    tokio::spawn(http::serve(
        listener,
        state,
        shutdown.clone().cancelled_owned(),
    ));

    let client = reqwest::Client::new();
    let creds = json!({"email": "bench@example.com", "password": "bench-password-1"});
    client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&creds)
        .send()
        .await?;
    let login: Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&creds)
        .send()
        .await?
        .json()
        .await?;
    let token = login["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"bench".to_vec())
            .file_name("b.txt")
            .mime_str("text/plain")?,
    );
    let document: Value = client
        .post(format!("{base}/api/v1/documents/upload"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await?
        .json()
        .await?;
    let document_id = document["id"].as_str().unwrap_or_default().to_owned();

    let started = Instant::now();
    let per_client = n / 16;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, base, token, document_id) = (
            client.clone(),
            base.clone(),
            token.clone(),
            document_id.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_client {
                let response = client
                    .post(format!("{base}/api/v1/jobs"))
                    .bearer_auth(&token)
                    .json(&json!({"document_id": document_id}))
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status() == 201,
                    "POST /jobs answered {}",
                    response.status()
                );
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let rate = (per_client * 16) as f64 / started.elapsed().as_secs_f64();
    shutdown.cancel();
    // Leave no queued entries for the later measurements.
    sqlx::query("DELETE FROM apalis.jobs").execute(pool).await?;
    Ok(rate)
}

async fn noop_throughput(
    pool: &PgPool,
    n: usize,
    batch: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    sqlx::query("DELETE FROM apalis.jobs WHERE job_type = $1")
        .bind(NOOP_QUEUE)
        .execute(pool)
        .await?;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
        let tasks = chunk
            .iter()
            .map(|i| {
                TaskBuilder::new(serde_json::to_vec(&json!({ "n": i })).unwrap_or_default())
                    .task_id(TaskId::from_ulid(ulid::Ulid::generate()))
                    .build()
            })
            .collect();
        let mut conn = pool.acquire().await?;
        apalis_postgres::queries::push_tasks(&mut *conn, NOOP_QUEUE, tasks).await?;
    }

    async fn noop(_: Value) -> Result<(), BoxDynError> {
        Ok(())
    }
    let config = QueueConfig::default()
        .queue(NOOP_QUEUE)
        .batch_size(batch)
        .heartbeat_interval(Duration::from_secs(2))
        .missed_heartbeats(3);
    let backend = PostgresStorage::<Value>::new(pool)
        .with_config(config)
        .with_pubsub()
        .poll_with_interval(Duration::from_millis(100));
    let worker = WorkerBuilder::new(format!("bench-{}", ulid::Ulid::generate()))
        .backend(backend)
        .concurrency(concurrency)
        .build(noop);
    let stop = CancellationToken::new();
    let started = Instant::now();
    let handle = tokio::spawn({
        let stop = stop.clone();
        async move {
            worker
                .run_until(async move {
                    stop.cancelled().await;
                    Ok::<(), std::io::Error>(())
                })
                .await
        }
    });
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'",
        )
        .bind(NOOP_QUEUE)
        .fetch_one(pool)
        .await?;
        if done as usize >= n {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "only {done} of {n} done after 10 min"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = handle.await;
    Ok(rate)
}

async fn pipeline_throughput(pool: &PgPool, n: usize) -> anyhow::Result<f64> {
    let storage_dir = tempfile::tempdir()?;
    let vars: HashMap<String, String> = HashMap::from([
        ("JWT_SECRET".into(), SECRET.into()),
        (
            "STORAGE_URL".into(),
            storage_dir.path().to_string_lossy().into_owned(),
        ),
        ("TESSERACT_ENABLED".into(), "false".into()),
    ]);
    let state =
        build_state_with_db(Config::from_map(&vars)?, Topology::SingleNode, pool.clone()).await?;
    let owner: UserId = sqlx::query_scalar("SELECT id FROM users LIMIT 1")
        .fetch_one(pool)
        .await
        .map(UserId)?;

    // Documents and their objects, written directly: this measures the queue
    // and the pipeline, not uploads.
    let mut document_ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = DocumentId::generate();
        let key = id.storage_key(owner);
        let text = format!("Document number {i}.\nThe quick brown fox jumps over the lazy dog.\n");
        state
            .storage
            .store()
            .put(
                &object_store::path::Path::from(key.as_str()),
                text.clone().into_bytes().into(),
            )
            .await?;
        db::documents::insert(
            pool,
            &db::documents::NewDocument {
                id,
                owner_id: owner,
                filename: "doc.txt",
                content_type: "text/plain",
                size_bytes: text.len() as i64,
                sha256: &"0".repeat(64),
                storage_key: &key,
            },
        )
        .await?;
        document_ids.push(id);
    }
    for id in &document_ids {
        state.jobs.create(owner, *id, None, None).await?;
    }

    let mut setup = docflow::worker_process::WorkerSetup::from_config(
        &state.config,
        pool.clone(),
        state.storage.clone(),
    );
    setup.sandbox.program = Some(env!("CARGO_BIN_EXE_docflow").into());
    setup.metrics_addr = "127.0.0.1:0".parse()?;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let worker = tokio::spawn(docflow::worker_process::run(setup, shutdown.clone()));
    loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status IN ('succeeded', 'failed')")
                .fetch_one(pool)
                .await?;
        if done as usize >= n {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "only {done} of {n} done after 15 min"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    shutdown.cancel();
    let _ = worker.await;
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'failed'")
        .fetch_one(pool)
        .await?;
    anyhow::ensure!(failed == 0, "{failed} pipeline jobs failed");
    Ok(rate)
}

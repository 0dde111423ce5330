//! Live status streams at scale, measured in one run on one machine:
//!
//! - one `docflow api` process (the release binary, with Redis), N
//!   concurrent SSE streams (BENCH_SSE_STREAMS, default 1000,10000), ten
//!   streams per job;
//! - the bench plays the worker: for each job it commits a status event in
//!   Postgres exactly as the worker does, then publishes it through the same
//!   `Publisher`; every stream records when the event reached it;
//! - printed: the API's RSS idle and with N streams open, and the p50/p99/max
//!   delay from the commit to each client's receipt;
//! - baseline, same run: a bare Redis PUBLISH → SUBSCRIBE round trip (one
//!   subscriber), so the delivery figures read as a ratio to Redis itself;
//! - each size twice, on a fresh API process: with glibc's default malloc
//!   settings, and with the ones the container image sets (MALLOC_ARENA_MAX=2,
//!   MALLOC_TRIM_THRESHOLD_=131072; BENCH_API_ENV overrides, K=V,K=V).
//!
//! Run: `cargo bench --bench sse` (Postgres on DATABASE_URL, default the
//! local one; Redis on BENCH_REDIS_URL, default the local one). The file
//! descriptor limit is raised to the hard limit; 10,000 streams need about
//! 10,100 descriptors in each process.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use docflow::{
    db,
    domain::{JobEventKind, JobId},
    ephemeral::{Ephemeral, redis_client},
    live::Publisher,
};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc};

const SECRET: &str = "bench-secret-bench-secret-bench-secret-00";
const STREAMS_PER_JOB: usize = 10;
/// Concurrent stream opens (the rest queue up client-side).
const OPENING_CONCURRENCY: usize = 200;

struct Api {
    child: std::process::Child,
    base: String,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Api {
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

mod support;

use support::ScratchDb;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a bundled TLS provider (see Cargo.toml).
    docflow::install_crypto_provider();
    let limit = rlimit::increase_nofile_limit(u64::MAX)?;
    let sizes: Vec<usize> = std::env::var("BENCH_SSE_STREAMS")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let redis_url =
        std::env::var("BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let scratch = ScratchDb::create("sse", 10).await?;

    let image_env = std::env::var("BENCH_API_ENV")
        .unwrap_or_else(|_| "MALLOC_ARENA_MAX=2,MALLOC_TRIM_THRESHOLD_=131072".into());
    let mut outcome = Ok(());
    for (label, env) in [
        ("glibc defaults", String::new()),
        ("image settings", image_env),
    ] {
        println!("\n== API with {label} {env}");
        outcome = run(&scratch.pool, &scratch.url, &redis_url, &sizes, limit, &env).await;
        if outcome.is_err() {
            break;
        }
    }
    scratch.drop_after(outcome).await
}

async fn run(
    pool: &PgPool,
    database_url: &str,
    redis_url: &str,
    sizes: &[usize],
    fd_limit: u64,
    api_env: &str,
) -> anyhow::Result<()> {
    let prefix = format!(
        "docflow-bench-sse:{}:{}:",
        std::process::id(),
        uuid::Uuid::new_v4()
    );
    let storage = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_docflow"))
        .arg("api")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("JWT_SECRET", SECRET)
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", redis_url)
        .env("REDIS_KEY_PREFIX", &prefix)
        .env("STORAGE_URL", storage.path())
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("AUTH_RATE_LIMIT_PER_MINUTE", "100000")
        // One user on one address holds every stream here: lift the
        // per-user, per-address and per-process caps (32, 256 and
        // 10,000 by default) above the largest size measured.
        .env("SSE_MAX_STREAMS_PER_USER", "100000")
        .env("SSE_MAX_STREAMS", "100000")
        .env("HTTP_MAX_CONNECTIONS_PER_IP", "100000")
        .env("HTTP_MAX_CONNECTIONS", "100000")
        .env("RUST_LOG", "warn")
        // Extra variables for the API (allocator tuning), K=V,K=V.
        .envs(
            api_env
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let api = Api {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let started = Instant::now();
    while client
        .get(format!("{}/api/v1/health/live", api.base))
        .send()
        .await
        .is_err()
    {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "API did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    let credentials = json!({"email": email, "password": "bench-password-1"});
    client
        .post(format!("{}/api/v1/auth/register", api.base))
        .json(&credentials)
        .send()
        .await?
        .error_for_status()?;
    let login: Value = client
        .post(format!("{}/api/v1/auth/login", api.base))
        .json(&credentials)
        .send()
        .await?
        .json()
        .await?;
    let access = login["access_token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no access token"))?
        .to_owned();
    let part = reqwest::multipart::Part::bytes(b"bench".to_vec())
        .file_name("bench.txt")
        .mime_str("text/plain")?;
    let document: Value = client
        .post(format!("{}/api/v1/documents/upload", api.base))
        .bearer_auth(&access)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await?
        .json()
        .await?;
    let document_id = document["id"].as_str().unwrap_or_default().to_owned();

    let publisher = match Ephemeral::redis(redis_url, prefix.clone()).await? {
        Ephemeral::Redis(redis) => Publisher::Redis(redis),
        Ephemeral::InProcess(_) => anyhow::bail!("expected Redis"),
    };

    println!(
        "SSE fan-out: 1 API process (release), {STREAMS_PER_JOB} streams per job, \
         fd limit {fd_limit}; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let baseline = redis_round_trip(redis_url, &prefix).await?;
    println!(
        "baseline  Redis PUBLISH -> SUBSCRIBE, 1 subscriber, 1000 msgs: p50 {}  p99 {}",
        ms(baseline.0),
        ms(baseline.1)
    );
    for &n in sizes {
        measure(
            &api,
            &client,
            pool,
            &publisher,
            &access,
            &document_id,
            n,
            baseline,
        )
        .await?;
    }
    Ok(())
}

/// p50 and p99 of a bare publish → receive on one subscriber connection.
async fn redis_round_trip(url: &str, prefix: &str) -> anyhow::Result<(Duration, Duration)> {
    let subscriber = redis_client(url, docflow::ephemeral::DEFAULT_BROADCAST_BUFFER)?;
    let publisher = redis_client(url, docflow::ephemeral::DEFAULT_BROADCAST_BUFFER)?;
    subscriber.init().await?;
    publisher.init().await?;
    let channel = format!("{prefix}baseline");
    let mut messages = subscriber.message_rx();
    subscriber.subscribe(channel.as_str()).await?;
    // Until Redis counts the subscriber (a fresh client may still be
    // settling its connection right after another API process's teardown).
    let settled = Instant::now() + Duration::from_secs(5);
    while publisher
        .publish::<i64, _, _>(channel.as_str(), "warm-up")
        .await?
        != 1
    {
        anyhow::ensure!(
            Instant::now() < settled,
            "the baseline subscriber is not subscribed"
        );
        subscriber.subscribe(channel.as_str()).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::timeout(Duration::from_secs(5), messages.recv()).await??;
    let mut delays = Vec::with_capacity(1000);
    for i in 0..1000 {
        let sent = Instant::now();
        let receivers: i64 = publisher.publish(channel.as_str(), i.to_string()).await?;
        anyhow::ensure!(receivers == 1, "the baseline subscriber is not subscribed");
        tokio::time::timeout(Duration::from_secs(5), messages.recv())
            .await
            .map_err(|_| anyhow::anyhow!("baseline message {i} lost"))??;
        delays.push(sent.elapsed());
    }
    delays.sort();
    let _ = subscriber.quit().await;
    let _ = publisher.quit().await;
    Ok((percentile(&delays, 50.0), percentile(&delays, 99.0)))
}

/// One stream's receipt of a job's `processing` event.
struct Receipt {
    job: usize,
    at: Instant,
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    api: &Api,
    client: &reqwest::Client,
    pool: &PgPool,
    publisher: &Publisher,
    access: &str,
    document_id: &str,
    streams: usize,
    baseline: (Duration, Duration),
) -> anyhow::Result<()> {
    let jobs_count = streams.div_ceil(STREAMS_PER_JOB);
    let mut jobs = Vec::with_capacity(jobs_count);
    for _ in 0..jobs_count {
        let job: Value = client
            .post(format!("{}/api/v1/jobs", api.base))
            .bearer_auth(access)
            .json(&json!({ "document_id": document_id }))
            .send()
            .await?
            .json()
            .await?;
        let id: uuid::Uuid = job["id"].as_str().unwrap_or_default().parse()?;
        jobs.push(JobId(id));
    }
    let rss_idle = api.rss_mib();

    // Open every stream; each reports once its snapshot arrived.
    let opened = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(OPENING_CONCURRENCY));
    let (receipts_tx, mut receipts) = mpsc::unbounded_channel::<Receipt>();
    let open_started = Instant::now();
    let mut tasks = Vec::with_capacity(streams);
    for i in 0..streams {
        let job_index = i % jobs_count;
        let url = format!("{}/api/v1/jobs/{}/events", api.base, jobs[job_index]);
        let (client, access) = (client.clone(), access.to_owned());
        let (opened, failed, gate, receipts_tx) = (
            Arc::clone(&opened),
            Arc::clone(&failed),
            Arc::clone(&gate),
            receipts_tx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut permit = Some(gate.acquire_owned().await);
            let response = match client.get(&url).bearer_auth(&access).send().await {
                Ok(response) if response.status().is_success() => response,
                _ => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let mut body = response.bytes_stream();
            let mut buffer = String::new();
            let mut seen_snapshot = false;
            while let Some(Ok(chunk)) = body.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else {
                        continue;
                    };
                    let status = serde_json::from_str::<Value>(data)
                        .ok()
                        .and_then(|v| v["status"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    if !seen_snapshot {
                        seen_snapshot = true;
                        opened.fetch_add(1, Ordering::Relaxed);
                        permit.take();
                    }
                    if status == "processing" {
                        let _ = receipts_tx.send(Receipt {
                            job: job_index,
                            at: Instant::now(),
                        });
                    }
                }
            }
        }));
    }
    drop(receipts_tx);
    while opened.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < streams {
        anyhow::ensure!(
            open_started.elapsed() < Duration::from_secs(300),
            "streams did not open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_time = open_started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_open = api.rss_mib();

    // Play the worker: claim the jobs one by one (each claim commits its
    // `processing` event), publishing each.
    let index_of: HashMap<JobId, usize> = jobs.iter().enumerate().map(|(i, j)| (*j, i)).collect();
    let worker = uuid::Uuid::now_v7();
    let mut runs = Vec::with_capacity(jobs_count);
    let mut committed_at: HashMap<usize, Instant> = HashMap::with_capacity(jobs_count);
    for index in 0..jobs_count {
        let limits = db::jobs::queue::ClaimLimits {
            jobs: 1,
            per_owner_running: i32::MAX,
        };
        let claimed = db::jobs::queue::claim_next(pool, worker, limits)
            .await?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("nothing left to claim"))?;
        let start = db::jobs::queue::Started {
            job: claimed.id,
            run: claimed.run_id,
            at: chrono::Utc::now(),
        };
        let events = db::jobs::queue::apply(pool, &[], &[start]).await?;
        committed_at.insert(index_of[&claimed.id], Instant::now());
        runs.push((claimed.id, claimed.run_id));
        publisher.publish(events).await;
        // Paced like a busy worker pool, not a single burst.
        if index % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut delays = Vec::with_capacity(streams);
    let deadline = Instant::now() + Duration::from_secs(60);
    while delays.len() < opened.load(Ordering::Relaxed) {
        let Ok(Some(receipt)) = tokio::time::timeout_at(deadline.into(), receipts.recv()).await
        else {
            break;
        };
        if let Some(at) = committed_at.get(&receipt.job) {
            delays.push(receipt.at.saturating_duration_since(*at));
        }
    }
    delays.sort();

    // End the streams: the terminal event closes each one.
    for (job, run) in runs {
        let success = db::jobs::queue::Move {
            job,
            run,
            status: docflow::domain::JobStatus::Succeeded,
            event: Some(JobEventKind::Succeeded),
            delay_secs: 0.0,
            attempt_delta: 0,
            error: None,
            dead_letter: None,
            result: Some(r#"{"kind":"text","text":"","encoding":"UTF-8","counts":{"chars":0,"words":0,"lines":0}}"#.into()),
            started_at: Some(chrono::Utc::now()),
            start_recorded: true,
        };
        let events = db::jobs::queue::apply(pool, &[success], &[]).await?;
        publisher.publish(events).await;
    }
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
    }

    let (p50, p99) = (percentile(&delays, 50.0), percentile(&delays, 99.0));
    println!(
        "{streams:>6} streams ({jobs_count} jobs): opened in {:.1} s ({} refused); \
         API RSS {rss_idle:.1} MiB idle -> {rss_open:.1} MiB open ({:.1} KiB/stream); \
         delivered {}/{}; commit->client p50 {} p99 {} max {} \
         (x{:.1} / x{:.1} the Redis baseline)",
        open_time.as_secs_f64(),
        failed.load(Ordering::Relaxed),
        (rss_open - rss_idle) * 1024.0 / streams as f64,
        delays.len(),
        opened.load(Ordering::Relaxed),
        ms(p50),
        ms(p99),
        ms(delays.last().copied().unwrap_or_default()),
        p50.as_secs_f64() / baseline.0.as_secs_f64().max(1e-9),
        p99.as_secs_f64() / baseline.1.as_secs_f64().max(1e-9),
    );
    Ok(())
}

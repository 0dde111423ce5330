//! The worker as separate `docflow worker` processes: a worker killed with
//! SIGKILL mid-job loses nothing (another finishes the job, writing its result
//! once), and SIGTERM drains (the running job finishes, nothing new starts).

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::helpers::{
    TestApp, Tokens, database_url, event_kinds, free_port, get_json, noise_png, upload,
};
use serde_json::{Value, json};
use sqlx::PgPool;

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn spawn_worker(app: &TestApp) -> Worker {
    let child = Command::new(env!("CARGO_BIN_EXE_docflow"))
        .arg("worker")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("JWT_SECRET", crate::helpers::JWT_SECRET)
        .env("DATABASE_URL", database_url(&app.db).await)
        .env("STORAGE_URL", &app.storage_dir)
        .env("WORKER_METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("WORKER_CONCURRENCY", "1")
        .env("OCR_TIMEOUT_SECS", "120")
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker");
    Worker(child)
}

async fn create_job(app: &TestApp, tokens: &Tokens, document_id: &str) -> String {
    let job: Value = app
        .client
        .post(app.url("/api/v1/jobs"))
        .bearer_auth(&tokens.access)
        .json(&json!({ "document_id": document_id }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    job["id"].as_str().expect("id").to_owned()
}

async fn job(app: &TestApp, tokens: &Tokens, id: &str) -> Value {
    get_json(app, tokens, &format!("/api/v1/jobs/{id}")).await
}

async fn wait_for(
    app: &TestApp,
    tokens: &Tokens,
    id: &str,
    status: &str,
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let current = job(app, tokens, id).await;
        if current["status"] == status {
            return current;
        }
        assert!(
            Instant::now() < deadline,
            "job not {status} after {within:?}: {current}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn upload_slow(app: &TestApp, tokens: &Tokens) -> String {
    let document: Value = upload(
        app,
        tokens,
        noise_png(1800, 0x9e37_79b9),
        "slow.png",
        "image/png",
    )
    .await
    .json()
    .await
    .expect("json");
    document["id"].as_str().expect("id").to_owned()
}

/// The pids of `parent`'s child processes.
fn children(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // /proc/PID/stat: "pid (comm) state ppid ...": the ppid is the
            // second field after the closing parenthesis.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let after = stat.rsplit_once(')')?.1.to_owned();
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Whether `pid` runs (a zombie, dead but not yet reaped, does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, after)| after.split_whitespace().next().map(|state| state != "Z"))
            .unwrap_or(false)
    })
}

#[sqlx::test]
async fn a_killed_worker_loses_nothing(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("alice@example.com").await;
    let doc = upload_slow(&app, &tokens).await;

    let mut first = spawn_worker(&app).await;
    let id = create_job(&app, &tokens, &doc).await;
    wait_for(&app, &tokens, &id, "processing", Duration::from_secs(20)).await;
    let extractors = children(first.0.id());
    assert!(
        !extractors.is_empty(),
        "the worker runs extractor processes"
    );
    first.0.kill().expect("SIGKILL");
    first.0.wait().expect("reaped");
    // Its extractors (one is mid-document) end themselves within moments:
    // they watch their parent, which is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while extractors.iter().any(|pid| alive(*pid)) {
        assert!(
            std::time::Instant::now() < deadline,
            "extractors of a killed worker still run: {extractors:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let _second = spawn_worker(&app).await;
    let done = wait_for(&app, &tokens, &id, "succeeded", Duration::from_secs(90)).await;
    assert_eq!(done["attempts"], 2, "the killed attempt counts: {done}");
    let results: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE id = $1::uuid AND result IS NOT NULL")
            .bind(&id)
            .fetch_one(&app.db)
            .await
            .expect("count");
    assert_eq!(results, 1);
}

#[sqlx::test]
async fn sigterm_drains_the_running_job_and_claims_no_more(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("bob@example.com").await;
    let doc = upload_slow(&app, &tokens).await;

    let mut worker = spawn_worker(&app).await;
    let running = create_job(&app, &tokens, &doc).await;
    wait_for(
        &app,
        &tokens,
        &running,
        "processing",
        Duration::from_secs(20),
    )
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &worker.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = create_job(&app, &tokens, &doc).await;

    let deadline = Instant::now() + Duration::from_secs(90);
    let exit = loop {
        if let Some(exit) = worker.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "worker did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exit.success(), "{exit:?}");
    assert_eq!(job(&app, &tokens, &running).await["status"], "succeeded");
    let untouched = job(&app, &tokens, &later).await;
    assert_eq!(untouched["status"], "queued", "{untouched}");
    assert_eq!(untouched["attempts"], 0);
}

#[sqlx::test]
async fn a_busy_worker_is_not_mistaken_for_a_dead_one(db: PgPool) {
    // One slot, claim batch 10: jobs wait claimed in the worker's buffer for
    // longer than the 6 s orphan window. A second live worker must not
    // rescue them from the first (which would run them twice).
    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("carol@example.com").await;
    let doc = upload_slow(&app, &tokens).await;
    let _busy = spawn_worker(&app).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(create_job(&app, &tokens, &doc).await);
    }
    wait_for(
        &app,
        &tokens,
        &ids[0],
        "processing",
        Duration::from_secs(20),
    )
    .await;
    let _other = spawn_worker(&app).await;
    for id in &ids {
        wait_for(&app, &tokens, id, "succeeded", Duration::from_secs(120)).await;
    }
    for id in &ids {
        let starts = event_kinds(&app.db, id)
            .await
            .iter()
            .filter(|kind| *kind == "processing")
            .count();
        assert_eq!(starts, 1, "job {id} ran {starts} times");
    }
}

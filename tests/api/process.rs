//! The `docflow` binary as an operator runs it: start-up checks, JSON logs
//! carrying the request id, graceful shutdown on SIGTERM.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::helpers::{
    Deployment, Running, database_url, docflow_command as docflow, free_port, wait_until_live,
};
use serde_json::Value;
use sqlx::PgPool;

const SECRET: &str = "process-test-secret-process-test-secret";

#[test]
fn missing_or_bad_configuration_stops_start_up_with_one_clear_line() {
    let output = docflow().arg("api").output().expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("JWT_SECRET"), "{stderr}");

    let output = docflow()
        .arg("api")
        .env("JWT_SECRET", SECRET)
        .env("MAX_UPLOAD_BYTES", "lots")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr.contains("MAX_UPLOAD_BYTES"), "{stderr}");
    assert!(!stderr.contains(SECRET), "secret leaked: {stderr}");
}

#[test]
fn api_replicas_refuse_to_start_without_redis() {
    let output = docflow()
        .arg("api")
        .env("JWT_SECRET", SECRET)
        .env("BIND_ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("REDIS_URL"), "{stderr}");
    assert!(stderr.contains("all-in-one"), "{stderr}");
}

/// A worker whose OCR languages tesseract lacks refuses to start, naming
/// the setting and the language, instead of failing every image later.
#[test]
fn a_worker_refuses_ocr_languages_tesseract_lacks() {
    let output = docflow()
        .arg("worker")
        .env("JWT_SECRET", SECRET)
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .env("TESSERACT_ENABLED", "true")
        .env("OCR_LANGUAGES", "eng+zzz")
        .env("WORKER_METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .expect("run");
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("OCR_LANGUAGES=eng+zzz"), "{said}");
    assert!(said.contains("no data for zzz"), "{said}");
}

#[sqlx::test]
async fn all_in_one_logs_json_with_request_ids_and_drains_on_sigterm(db: PgPool) {
    let port = free_port();
    let storage = tempfile::tempdir().expect("tempdir");
    let child = docflow()
        .arg("all-in-one")
        .env("JWT_SECRET", SECRET)
        .env("DATABASE_URL", database_url(&db).await)
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("WORKER_METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("STORAGE_URL", storage.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut running = Running(child);
    wait_until_live(port);

    let client = crate::helpers::client();
    let base = format!("http://127.0.0.1:{port}");
    let response = client
        .post(format!("{base}/api/v1/auth/register"))
        .header("x-request-id", "process-test-1")
        .json(&serde_json::json!({"email": "ops@example.com", "password": "weak"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 422);
    let ready = client
        .get(format!("{base}/api/v1/health/ready"))
        .send()
        .await
        .expect("request");
    assert_eq!(ready.status(), 200, "in-process mode needs no Redis");

    let pid = running.0.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = running.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit:?}");

    let stdout = running.0.stdout.take().expect("stdout");
    let lines: Vec<Value> = BufReader::new(stdout)
        .lines()
        .map(|line| {
            let line = line.expect("read");
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
        })
        .collect();
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line.get(key).is_some(), "{key} missing in {line}");
        }
    }
    let of_request: Vec<&Value> = lines
        .iter()
        .filter(|line| line["request_id"] == "process-test-1")
        .collect();
    assert!(
        !of_request.is_empty(),
        "no line carries the request id: {lines:#?}"
    );
    let completed = of_request
        .iter()
        .find(|line| line["message"] == "request completed")
        .expect("access log line");
    assert_eq!(completed["fields"]["status"], 422);
    assert_eq!(completed["fields"]["route"], "/api/v1/auth/register");
    // Lines written inside a span carry its trace id, to jump to the trace.
    let trace_id = completed["trace_id"].as_str().expect("trace_id");
    assert!(
        trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{completed}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line["message"] == "shutdown requested; draining"),
        "{lines:#?}"
    );
    let everything = serde_json::to_string(&lines).expect("json");
    assert!(
        !everything.contains(SECRET),
        "the JWT secret reached the logs"
    );
}

#[sqlx::test]
async fn stream_tokens_stay_out_of_logs_and_open_streams_end_on_sigterm(db: PgPool) {
    let deployment = Deployment::new(&db).await;
    let port = free_port();
    // An API replica and no worker: the job stays queued, the stream open.
    let child = deployment
        .command("api", port)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut running = Running(child);
    wait_until_live(port);
    let client = crate::helpers::client();
    let base = format!("http://127.0.0.1:{port}");
    let tokens = crate::helpers::sign_in_at(&client, &base, "ops@example.com", None).await;
    let access = tokens.access.as_str();
    let job = crate::helpers::start_text_job(&client, &base, &tokens, "Queued forever.").await;
    let minted: Value = client
        .post(format!("{base}/api/v1/jobs/{job}/stream-token"))
        .bearer_auth(access)
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let token = minted["token"].as_str().expect("token").to_owned();
    let events_url = format!("{base}{}", minted["events_url"].as_str().expect("url"));
    let mut stream =
        crate::helpers::SseReader::new(client.get(&events_url).send().await.expect("stream"));
    let snapshot = stream
        .next(Duration::from_secs(10))
        .await
        .expect("snapshot");
    assert_eq!(snapshot.data["status"], "queued");

    let sent_at = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &running.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // The open stream ends instead of holding the drain open.
    assert!(stream.next(Duration::from_secs(5)).await.is_none());
    let exit = loop {
        if let Some(exit) = running.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(sent_at.elapsed() < Duration::from_secs(10), "did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit:?}");

    let mut logs = String::new();
    for pipe in [
        Box::new(running.0.stdout.take().expect("stdout")) as Box<dyn std::io::Read>,
        Box::new(running.0.stderr.take().expect("stderr")),
    ] {
        std::io::Read::read_to_string(&mut BufReader::new(pipe), &mut logs).expect("read");
    }
    assert!(
        logs.contains("/api/v1/jobs/{id}/events"),
        "the stream request was logged (by route): {logs}"
    );
    assert!(!logs.contains(&token), "a stream token reached the logs");
    assert!(!logs.contains(access), "an access token reached the logs");
}

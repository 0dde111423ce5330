//! The `docflow` binary as an operator runs it: start-up checks, JSON logs
//! carrying the request id, graceful shutdown on SIGTERM.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{database_url, free_port};
use serde_json::Value;
use sqlx::PgPool;

const SECRET: &str = "process-test-secret-process-test-secret";

fn docflow() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_docflow"));
    // Only what each test sets: no .env, no inherited configuration.
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command.current_dir(std::env::temp_dir());
    command
}

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

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until_live(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("docflow did not start listening on {port}");
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

    let client = reqwest::Client::new();
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

//! The deployable stack's parts, run for real around real `docflow`
//! processes: Debian's nginx in front of the API (infra/nginx.conf, rendered
//! by infra/nginx-render with local ports), and Debian's Prometheus scraping
//! an API and a worker (infra/prometheus/). `scripts/test` installs both;
//! `scripts/check-stack` checks the files themselves (nginx -t, promtool,
//! docker compose config).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::helpers::{
    Deployment, Running, SseReader, free_port, sign_in_at, start_text_job, wait_until_live,
};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read_logs(running: &mut Running) -> String {
    let _ = running.0.kill();
    let _ = running.0.wait();
    let mut logs = String::new();
    if let Some(mut stdout) = running.0.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut stdout, &mut logs);
    }
    logs
}

struct Nginx {
    process: std::process::Child,
    _dir: tempfile::TempDir,
    base: String,
}

impl Drop for Nginx {
    /// SIGTERM, not SIGKILL: the master then stops its workers, which would
    /// otherwise outlive it (holding the test's pipes open).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.process.id().to_string()])
            .status();
        let _ = self.process.wait();
    }
}

fn start_nginx(upstream_port: u16) -> Nginx {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let rendered = Command::new(repo().join("infra/nginx-render"))
        .args(["--upstream", &format!("127.0.0.1:{upstream_port}")])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .output()
        .expect("infra/nginx-render");
    assert!(rendered.status.success(), "{rendered:?}");
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, &rendered.stdout).expect("write");
    let prefix = format!("{}/", dir.path().display());
    let child = Command::new("nginx")
        .args(["-p", &prefix, "-e", &format!("{prefix}error.log")])
        .args(["-c", &conf.to_string_lossy()])
        .args(["-g", &format!("daemon off; pid {prefix}nginx.pid;")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (apt-get install nginx)");
    wait_until_live(port);
    Nginx {
        process: child,
        _dir: dir,
        base: format!("http://127.0.0.1:{port}"),
    }
}

#[sqlx::test]
async fn nginx_passes_uploads_request_ids_and_unbuffered_event_streams(db: PgPool) {
    let deployment = Deployment::new(&db).await;
    let api_port = free_port();
    let mut api = deployment.start_logged("api", api_port);
    let nginx = start_nginx(api_port);
    let client = crate::helpers::client();

    // The client's X-Request-ID travels through nginx into the API's log.
    let tokens = sign_in_at(
        &client,
        &nginx.base,
        "stack@example.com",
        Some("via-nginx-0001"),
    )
    .await;
    // Without one, nginx makes one, and the API uses it.
    let response = client
        .get(format!("{}/api/v1/auth/me", nginx.base))
        .bearer_auth(&tokens.access)
        .send()
        .await
        .expect("me");
    assert_eq!(response.status(), StatusCode::OK);
    let generated = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(generated.len(), 32, "nginx's $request_id: {generated}");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");

    // An upload and a job through nginx; no worker yet, so it stays queued.
    let job = start_text_job(&client, &nginx.base, &tokens, "Through nginx.").await;
    let stream = client
        .get(format!("{}/api/v1/jobs/{job}/events", nginx.base))
        .bearer_auth(&tokens.access)
        .send()
        .await
        .expect("stream");
    let mut stream = SseReader::new(stream);
    // A buffering proxy would hold this small first event back while the
    // stream stays open; it must arrive on its own, at once.
    let opened = Instant::now();
    let snapshot = stream.next(Duration::from_secs(5)).await.expect("snapshot");
    assert_eq!(snapshot.data["status"], "queued");
    assert!(
        opened.elapsed() < Duration::from_secs(2),
        "{:?}",
        opened.elapsed()
    );

    // Then each change as the worker makes it, one event at a time.
    let _worker = deployment.start("worker", free_port());
    let mut statuses = Vec::new();
    while let Some(event) = stream.next(Duration::from_secs(30)).await {
        statuses.push(event.data["status"].as_str().expect("status").to_owned());
    }
    assert_eq!(statuses, ["processing", "succeeded"]);

    // The page, the docs and the spec are served; /metrics is not public.
    for (path, expected) in [
        ("/", StatusCode::OK),
        ("/docs", StatusCode::OK),
        ("/openapi.json", StatusCode::OK),
        ("/metrics", StatusCode::NOT_FOUND),
    ] {
        let response = client
            .get(format!("{}{path}", nginx.base))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), expected, "{path}");
    }

    let logs = read_logs(&mut api);
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    for id in ["via-nginx-0001", generated.as_str()] {
        assert!(
            lines
                .iter()
                .any(|line| line["request_id"] == id && line["message"] == "request completed"),
            "{id} is not in the API's log"
        );
    }
}

/// The result vector of a PromQL instant query (empty while unreachable).
async fn query(client: &reqwest::Client, base: &str, promql: &str) -> Vec<Value> {
    let response = client
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", promql)])
        .send()
        .await;
    let Ok(response) = response else {
        return Vec::new();
    };
    let body: Value = response.json().await.unwrap_or_default();
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[sqlx::test]
async fn prometheus_scrapes_the_api_and_the_worker(db: PgPool) {
    let deployment = Deployment::new(&db).await;
    let (api_port, worker_port) = (free_port(), free_port());
    let _api = deployment.start("api", api_port);
    let _worker = deployment.start("worker", worker_port);
    let client = crate::helpers::client();
    let base = format!("http://127.0.0.1:{api_port}");
    let tokens = sign_in_at(&client, &base, "stack@example.com", Some("prometheus-0001")).await;
    let job = start_text_job(&client, &base, &tokens, "Counted.").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: Value = client
            .get(format!("{base}/api/v1/jobs/{job}"))
            .bearer_auth(&tokens.access)
            .send()
            .await
            .expect("job")
            .json()
            .await
            .expect("json");
        if status["status"] == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // infra/prometheus as deployed, pointed at these ports and scraping
    // every second.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = std::fs::read_to_string(repo().join("infra/prometheus/prometheus.yml"))
        .expect("prometheus.yml")
        .replace("api:8000", &format!("127.0.0.1:{api_port}"))
        .replace("worker:9100", &format!("127.0.0.1:{worker_port}"))
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("scrape_timeout: 10s", "scrape_timeout: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("write");
    for rules in ["alerts.yml", "compat.yml"] {
        std::fs::copy(
            repo().join("infra/prometheus").join(rules),
            dir.path().join(rules),
        )
        .expect(rules);
    }
    let port = free_port();
    let prometheus: PathBuf = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("prometheus (apt-get install prometheus)");
    let child = Command::new(prometheus)
        .arg(format!(
            "--config.file={}/prometheus.yml",
            dir.path().display()
        ))
        .arg(format!("--storage.tsdb.path={}/data", dir.path().display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus");
    let _prometheus = Running(child);
    wait_until_live(port);
    let prom = format!("http://127.0.0.1:{port}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let (up, succeeded) = loop {
        let up = query(&client, &prom, "up == 1").await;
        let succeeded = query(&client, &prom, "jobs_succeeded_total").await;
        let jobs: Vec<String> = up
            .iter()
            .filter_map(|r| r["metric"]["job"].as_str().map(str::to_owned))
            .collect();
        let ready = jobs.iter().any(|j| j == "docflow-api")
            && jobs.iter().any(|j| j == "docflow-worker")
            && !succeeded.is_empty();
        if ready || Instant::now() > deadline {
            break (jobs, succeeded);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(up.contains(&"docflow-api".to_owned()), "up: {up:?}");
    assert!(up.contains(&"docflow-worker".to_owned()), "up: {up:?}");
    let value: f64 = succeeded[0]["value"][1]
        .as_str()
        .expect("value")
        .parse()
        .expect("number");
    assert!(value >= 1.0, "{succeeded:?}");
    assert_eq!(succeeded[0]["metric"]["job"], "docflow-worker");
}

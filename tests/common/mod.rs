//! The test harness: a real API server on a loopback port, over a fresh
//! Postgres database (from `#[sqlx::test]`), the real Redis (under a key
//! prefix of its own, so tests never see each other's counters), and a real
//! local-filesystem store in a temporary directory.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::{collections::HashMap, net::SocketAddr};

use docflow::{
    app::{Topology, build_state_with_db},
    config::Config,
    http,
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";
pub const PASSWORD: &str = "supersecret1";

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub db: PgPool,
    /// The local store's root (when the app uses the local store).
    pub storage_dir: std::path::PathBuf,
    pub state: docflow::http::AppState,
    shutdown: CancellationToken,
    _storage_dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    pub async fn spawn(db: PgPool) -> Self {
        Self::spawn_with(db, &[]).await
    }

    /// Starts the API with the default test configuration plus `overrides`
    /// (an empty value removes a variable).
    pub async fn spawn_with(db: PgPool, overrides: &[(&str, &str)]) -> Self {
        let storage_dir = tempfile::tempdir().expect("temp dir");
        let mut vars: HashMap<String, String> = HashMap::from([
            ("JWT_SECRET".into(), JWT_SECRET.into()),
            ("REDIS_URL".into(), redis_url()),
            (
                "REDIS_KEY_PREFIX".into(),
                format!("docflow-test:{}:", uuid::Uuid::new_v4()),
            ),
            (
                "STORAGE_URL".into(),
                storage_dir.path().to_string_lossy().into_owned(),
            ),
        ]);
        for (key, value) in overrides {
            if value.is_empty() {
                vars.remove(*key);
            } else {
                vars.insert((*key).to_owned(), (*value).to_owned());
            }
        }
        let config = Config::from_map(&vars).expect("test config");
        // #[sqlx::test] applied our migrations; the queue's are apalis's own.
        apalis_postgres::PostgresStorage::<()>::setup(&db)
            .await
            .expect("apalis-postgres migrations");
        let state = build_state_with_db(config, Topology::Replicated, db.clone())
            .await
            .expect("state");

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        tokio::spawn(http::serve(
            listener,
            state.clone(),
            shutdown.clone().cancelled_owned(),
        ));

        Self {
            addr,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            db,
            storage_dir: storage_dir.path().to_path_buf(),
            state,
            shutdown,
            _storage_dir: storage_dir,
        }
    }

    /// Runs a worker in this process (extracting in real `docflow extract`
    /// children) until the app is dropped. Returns its probe and metrics
    /// address.
    pub fn start_worker(&self) -> SocketAddr {
        let config = &self.state.config;
        let mut setup = docflow::worker_process::WorkerSetup::from_config(
            config,
            self.db.clone(),
            self.state.storage.clone(),
        );
        setup.sandbox.program = Some(env!("CARGO_BIN_EXE_docflow").into());
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        setup.metrics_addr = metrics_addr;
        setup.publisher = self.state.publisher.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            if let Err(err) = docflow::worker_process::run(setup, shutdown).await {
                panic!("worker failed: {err:#}");
            }
        });
        metrics_addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn register(&self, email: &str) -> Response {
        self.post_json(
            "/api/v1/auth/register",
            &json!({"email": email, "password": PASSWORD}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/api/v1/auth/login",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    /// Registers `email` and returns its token pair.
    pub async fn signed_in(&self, email: &str) -> Tokens {
        assert_eq!(self.register(email).await.status(), StatusCode::CREATED);
        let response = self.login(email, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        Tokens {
            access: body["access_token"].as_str().expect("access").to_owned(),
            refresh: body["refresh_token"].as_str().expect("refresh").to_owned(),
        }
    }

    pub async fn me(&self, access: &str) -> Response {
        self.client
            .get(self.url("/api/v1/auth/me"))
            .bearer_auth(access)
            .send()
            .await
            .expect("request")
    }
}

/// A port nothing listens on right now, for a server a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The URL of the database `#[sqlx::test]` made for this test, for a
/// `docflow` process the test starts.
pub async fn database_url(db: &PgPool) -> String {
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(db)
        .await
        .expect("db name");
    let mut url = url::Url::parse(&std::env::var("DATABASE_URL").expect("DATABASE_URL"))
        .expect("DATABASE_URL");
    url.set_path(&name);
    url.to_string()
}

/// A grey-noise PNG: tesseract spends seconds on it, which makes it the
/// slow job of the retry and crash tests.
pub fn noise_png(side: u32, seed: u32) -> Vec<u8> {
    let mut state = seed.max(1);
    let img = image::GrayImage::from_fn(side, side, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        image::Luma([(state & 0xff) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("png");
    out.into_inner()
}

/// Every regular file under `dir`, as paths relative to it.
pub fn files_under(dir: &std::path::Path) -> Vec<String> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .expect("under root")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A real S3-compatible server (s3s-fs, which checks SigV4 signatures and
/// presigned-URL expiry) on a loopback port, storing into a temp directory.
pub struct S3Server {
    child: std::process::Child,
    pub root: tempfile::TempDir,
    pub endpoint: String,
}

pub const S3_BUCKET: &str = "docflow-test";
pub const S3_ACCESS_KEY: &str = "docflowtestkey";
pub const S3_SECRET_KEY: &str = "docflowtestsecret0123456789";

impl S3Server {
    pub fn start() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join(S3_BUCKET)).expect("bucket dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let binary = std::env::var("S3S_FS_BIN").unwrap_or_else(|_| "s3s-fs".to_owned());
        let child = std::process::Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(root.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} (cargo install s3s-fs@0.14.1 --locked --features binary): {e}")
            });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Self {
            child,
            root,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Overrides that point an app at this server.
    pub fn app_config(&self) -> Vec<(&'static str, String)> {
        vec![
            ("STORAGE_URL", format!("s3://{S3_BUCKET}")),
            ("S3_ENDPOINT_URL", self.endpoint.clone()),
            ("S3_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_owned()),
        ]
    }

    /// The bucket's objects, as s3s-fs keeps them on disk.
    pub fn objects(&self) -> Vec<String> {
        files_under(&self.root.path().join(S3_BUCKET))
            .into_iter()
            // s3s-fs keeps metadata and in-progress uploads beside objects.
            .filter(|path| path.starts_with("documents/") && !path.contains(".s3s"))
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- fixtures and request helpers shared by the document and job tests ----

use std::io::Cursor;

use reqwest::multipart;
use sha2::{Digest, Sha256};

pub fn png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 128]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("png");
    out.into_inner()
}

pub fn jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([200, x as u8 * 3, y as u8 * 2]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("jpeg");
    out.into_inner()
}

/// A small, valid one-page PDF with a text layer.
pub fn pdf() -> Vec<u8> {
    let content = "BT /F1 24 Tf 72 720 Td (Hello DocFlow) Tj ET";
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

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub async fn upload(
    app: &TestApp,
    tokens: &Tokens,
    bytes: Vec<u8>,
    filename: &str,
    declared: &str,
) -> reqwest::Response {
    let part = multipart::Part::bytes(bytes)
        .file_name(filename.to_owned())
        .mime_str(declared)
        .expect("mime");
    app.client
        .post(app.url("/api/v1/documents/upload"))
        .bearer_auth(&tokens.access)
        .multipart(multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("request")
}

pub async fn get(app: &TestApp, tokens: &Tokens, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(&tokens.access)
        .send()
        .await
        .expect("request")
}

pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

/// Asserts the response is an error envelope with this status and code, and
/// that its request id matches the X-Request-ID header. Returns the body.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let header_id = response
        .headers()
        .get("x-request-id")
        .expect("x-request-id header")
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: Value = response.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "message missing: {body}"
    );
    assert_eq!(
        body["error"]["request_id"],
        header_id.as_str(),
        "body: {body}"
    );
    body
}

/// One Server-Sent Event as a client sees it.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

/// Reads an `text/event-stream` response frame by frame, as EventSource
/// would (comments are counted, not returned).
pub struct SseReader {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
    pub comments: usize,
}

impl SseReader {
    pub fn new(response: Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK, "stream refused");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "content type"
        );
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
            comments: 0,
        }
    }

    /// The next event, or `None` once the server ends the stream. Panics if
    /// nothing arrives `within`.
    pub async fn next(&mut self, within: std::time::Duration) -> Option<SseEvent> {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = self.parse(&frame) {
                    return Some(event);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("no event within {within:?}"));
            match chunk {
                Some(Ok(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Some(Err(err)) => panic!("stream broke: {err}"),
                None => return None,
            }
        }
    }

    /// Every remaining event until the server ends the stream.
    pub async fn rest(&mut self, within: std::time::Duration) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next(within).await {
            events.push(event);
        }
        events
    }

    fn parse(&mut self, frame: &str) -> Option<SseEvent> {
        let (mut event, mut id, mut data) = (String::from("message"), None, None::<String>);
        for line in frame.lines() {
            if line.starts_with(':') {
                self.comments += 1;
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event = value.to_owned(),
                "id" => id = Some(value.to_owned()),
                "data" => data = Some(value.to_owned()),
                _ => {}
            }
        }
        let data = data?;
        Some(SseEvent {
            event,
            id,
            data: serde_json::from_str(&data).expect("event data is JSON"),
        })
    }
}

/// The `docflow` binary with a clean environment: only what the caller sets.
pub fn docflow_command() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_docflow"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command.current_dir(std::env::temp_dir());
    command
}

/// A child process killed when the test ends, however it ends.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something accepts connections on `port`.
pub fn wait_until_live(port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("nothing started listening on {port}");
}

/// A deployment of real `docflow` processes on loopback: a migrated
/// database, storage and a Redis key prefix they share, and processes
/// started on demand (killed when their `Running` drops).
pub struct Deployment {
    database: String,
    storage: tempfile::TempDir,
    prefix: String,
}

impl Deployment {
    pub async fn new(db: &PgPool) -> Self {
        let deployment = Self {
            database: database_url(db).await,
            storage: tempfile::tempdir().expect("tempdir"),
            prefix: format!("docflow-test:{}:", uuid::Uuid::new_v4()),
        };
        // #[sqlx::test] applied our schema; `docflow migrate` adds the queue's.
        let status = deployment
            .command("migrate", free_port())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("migrate");
        assert!(status.success());
        deployment
    }

    /// `docflow <role>` configured for this deployment, listening on `port`
    /// (the API's address, or the worker's probes and metrics).
    pub fn command(&self, role: &str, port: u16) -> std::process::Command {
        let mut command = docflow_command();
        command
            .arg(role)
            .env("JWT_SECRET", JWT_SECRET)
            .env("DATABASE_URL", &self.database)
            .env("REDIS_URL", redis_url())
            .env("REDIS_KEY_PREFIX", &self.prefix)
            .env("STORAGE_URL", self.storage.path())
            .env("TESSERACT_ENABLED", "false")
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("WORKER_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("TRUSTED_PROXIES", "127.0.0.1/32");
        command
    }

    /// Starts `role` on `port` and waits until it listens; its logs are
    /// discarded.
    pub fn start(&self, role: &str, port: u16) -> Running {
        self.spawn(role, port, std::process::Stdio::null())
    }

    /// As `start`, with its stdout (JSON logs) piped for the test to read
    /// once it has stopped it: keep such runs short, a full pipe blocks it.
    pub fn start_logged(&self, role: &str, port: u16) -> Running {
        self.spawn(role, port, std::process::Stdio::piped())
    }

    fn spawn(&self, role: &str, port: u16, stdout: std::process::Stdio) -> Running {
        let child = self
            .command(role, port)
            .stdout(stdout)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn docflow");
        wait_until_live(port);
        Running(child)
    }
}

/// Registers `email` on the API at `base` and signs in. With `request_id`,
/// the registration carries it and must echo it.
pub async fn sign_in_at(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    request_id: Option<&str>,
) -> Tokens {
    let credentials = json!({"email": email, "password": PASSWORD});
    let mut register = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&credentials);
    if let Some(id) = request_id {
        register = register.header("x-request-id", id);
    }
    let registered = register.send().await.expect("register");
    assert_eq!(registered.status(), StatusCode::CREATED);
    if let Some(id) = request_id {
        assert_eq!(registered.headers()["x-request-id"], id);
    }
    let login: Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&credentials)
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    Tokens {
        access: login["access_token"].as_str().expect("access").to_owned(),
        refresh: login["refresh_token"].as_str().expect("refresh").to_owned(),
    }
}

/// Uploads `text` as a text file to the API at `base` and starts a job for
/// it; returns the job id.
pub async fn start_text_job(
    client: &reqwest::Client,
    base: &str,
    tokens: &Tokens,
    text: &str,
) -> String {
    let part = multipart::Part::bytes(text.as_bytes().to_vec())
        .file_name("note.txt")
        .mime_str("text/plain")
        .expect("mime");
    let uploaded = client
        .post(format!("{base}/api/v1/documents/upload"))
        .bearer_auth(&tokens.access)
        .multipart(multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("upload");
    assert_eq!(uploaded.status(), StatusCode::CREATED);
    let document: Value = uploaded.json().await.expect("json");
    let created = client
        .post(format!("{base}/api/v1/jobs"))
        .bearer_auth(&tokens.access)
        .json(&json!({"document_id": document["id"]}))
        .send()
        .await
        .expect("job");
    assert_eq!(created.status(), StatusCode::CREATED);
    let job: Value = created.json().await.expect("json");
    job["id"].as_str().expect("id").to_owned()
}

/// GETs `path` with the caller's token and decodes the JSON body.
pub async fn get_json(app: &TestApp, tokens: &Tokens, path: &str) -> Value {
    get(app, tokens, path).await.json().await.expect("json")
}

//! The API under test: a real server on a loopback port, over a fresh
//! Postgres database (from `#[sqlx::test]`), the real Redis (under a key
//! prefix of its own, so tests never see each other's counters), and a real
//! local-filesystem store in a temporary directory; and one helper per
//! action a user takes through it.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use docflow::{
    app::{Topology, build_state_with_db},
    config::Config,
    http,
    worker::WorkerSetup,
};
use reqwest::{Response, StatusCode, multipart};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::process::free_port;

pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";
pub const PASSWORD: &str = "supersecret1";

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// An HTTP client for tests (TLS through the same provider as the app).
pub fn client() -> reqwest::Client {
    docflow::install_crypto_provider();
    reqwest::Client::new()
}

pub struct TestApp {
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
            base: format!("http://{addr}"),
            client: client(),
            db,
            storage_dir: storage_dir.path().to_path_buf(),
            state,
            shutdown,
            _storage_dir: storage_dir,
        }
    }

    /// Runs a worker in this process (extracting in real `docflow extract`
    /// processes) until the app is dropped. Returns its probe and metrics
    /// address.
    pub fn start_worker(&self) -> SocketAddr {
        self.start_worker_with(|_| {})
    }

    /// As `start_worker`, with the setup adjusted first.
    pub fn start_worker_with(&self, adjust: impl FnOnce(&mut WorkerSetup)) -> SocketAddr {
        let mut setup = WorkerSetup::from_config(
            &self.state.config,
            self.db.clone(),
            self.state.storage.clone(),
        );
        // The test binary is not `docflow`: point the pool at the real one.
        setup.pool.program = env!("CARGO_BIN_EXE_docflow").into();
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        setup.metrics_addr = metrics_addr;
        setup.publisher = self.state.publisher.clone();
        adjust(&mut setup);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            if let Err(err) = docflow::worker::run(setup, shutdown).await {
                panic!("worker failed: {err:#}");
            }
        });
        metrics_addr
    }

    /// Runs a worker until `stop` (or the app's end); the handle resolves
    /// once it has drained.
    pub fn start_worker_until(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let mut setup = WorkerSetup::from_config(
            &self.state.config,
            self.db.clone(),
            self.state.storage.clone(),
        );
        setup.pool.program = env!("CARGO_BIN_EXE_docflow").into();
        setup.metrics_addr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        setup.publisher = self.state.publisher.clone();
        let app_stopped = self.shutdown.clone();
        tokio::spawn(async move {
            let either = CancellationToken::new();
            let (a, b, e) = (stop.clone(), app_stopped.clone(), either.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = a.cancelled() => {}
                    () = b.cancelled() => {}
                }
                e.cancel();
            });
            if let Err(err) = docflow::worker::run(setup, either).await {
                panic!("worker failed: {err:#}");
            }
        })
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

    /// A signed-in account with the admin role (as `docflow user create
    /// --admin` makes one).
    pub async fn signed_in_admin(&self, email: &str) -> Tokens {
        let tokens = self.signed_in(email).await;
        self.make_admin(email).await;
        tokens
    }

    /// Gives an existing account the admin role (its tokens carry no role:
    /// it applies to them at once).
    pub async fn make_admin(&self, email: &str) {
        docflow::db::users::set_role(
            &self.db,
            &docflow::domain::Email::parse(email).expect("email"),
            docflow::domain::Role::Admin,
        )
        .await
        .expect("promote");
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

pub struct Tokens {
    pub access: String,
    pub refresh: String,
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

/// GETs `path` with the caller's token and decodes the JSON body.
pub async fn get_json(app: &TestApp, tokens: &Tokens, path: &str) -> Value {
    get(app, tokens, path).await.json().await.expect("json")
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
    log_in_at(client, base, email, PASSWORD).await
}

/// Signs in to the API at `base` (asserting 200): a new session.
pub async fn log_in_at(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> Tokens {
    let response = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), StatusCode::OK, "login as {email}");
    let login: Value = response.json().await.expect("json");
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

/// Uploads `bytes` (asserting 201) and returns the document id.
pub async fn upload_id(
    app: &TestApp,
    tokens: &Tokens,
    bytes: Vec<u8>,
    name: &str,
    content_type: &str,
) -> String {
    let response = upload(app, tokens, bytes, name, content_type).await;
    assert_eq!(response.status(), StatusCode::CREATED, "{name}");
    let document: Value = response.json().await.expect("json");
    document["id"].as_str().expect("id").to_owned()
}

/// `POST /jobs` for the document, with an Idempotency-Key if given.
pub async fn create_job(
    app: &TestApp,
    tokens: &Tokens,
    document_id: &str,
    key: Option<&str>,
) -> Response {
    let mut request = app
        .client
        .post(app.url("/api/v1/jobs"))
        .bearer_auth(&tokens.access)
        .json(&json!({ "document_id": document_id }));
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.expect("request")
}

/// Creates a job (asserting 201) and returns its id.
pub async fn start_job(app: &TestApp, tokens: &Tokens, document_id: &str) -> String {
    let created = create_job(app, tokens, document_id, None).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let job: Value = created.json().await.expect("json");
    job["id"].as_str().expect("id").to_owned()
}

/// Polls `GET /jobs/{id}` until `done` says so (or the deadline passes);
/// returns the job as it was then.
pub async fn wait_for_job(
    app: &TestApp,
    tokens: &Tokens,
    job_id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let job = get_json(app, tokens, &format!("/api/v1/jobs/{job_id}")).await;
        if done(&job) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job still {} after {within:?}: {job}",
            job["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a job (as the API shows it) is finished.
pub fn is_terminal(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

/// Creates a job for the document (asserting 201) and waits until it is
/// terminal; returns the job as `GET /jobs/{id}` shows it.
pub async fn run_job(app: &TestApp, tokens: &Tokens, document_id: &str, within: Duration) -> Value {
    let id = start_job(app, tokens, document_id).await;
    wait_for_job(app, tokens, &id, within, is_terminal).await
}

/// The job's events as the product reads them back (a row that records a
/// run's start and end is two events): (status, attempts, error, time), in
/// order.
pub async fn job_events(
    db: &PgPool,
    job_id: &str,
) -> Vec<(String, i32, Option<String>, chrono::DateTime<chrono::Utc>)> {
    let id = docflow::domain::JobId(job_id.parse().expect("a job id"));
    docflow::db::job_events::list_after(db, id, 0)
        .await
        .expect("events")
        .into_iter()
        .map(|e| {
            (
                e.status.as_str().to_owned(),
                e.attempts,
                e.error,
                e.created_at,
            )
        })
        .collect()
}

/// The statuses of a job's events, in order.
pub async fn event_kinds(db: &PgPool, job_id: &str) -> Vec<String> {
    job_events(db, job_id)
        .await
        .into_iter()
        .map(|(kind, ..)| kind)
        .collect()
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

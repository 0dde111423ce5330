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
        let router = http::router(state);
        tokio::spawn(http::serve(
            listener,
            router,
            shutdown.clone().cancelled_owned(),
        ));

        Self {
            addr,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            db,
            shutdown,
            _storage_dir: storage_dir,
        }
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

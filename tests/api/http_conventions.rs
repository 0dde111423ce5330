//! Cross-cutting HTTP behaviour: the error envelope on every failure path,
//! request ids, health probes.

use crate::helpers::{TestApp, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

#[sqlx::test]
async fn request_id_is_echoed_when_sane_and_generated_otherwise(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let live = app.url("/api/v1/health/live");

    let response = app
        .client
        .get(&live)
        .header("x-request-id", "client-chosen.id:42")
        .send()
        .await
        .expect("request");
    assert_eq!(response.headers()["x-request-id"], "client-chosen.id:42");

    for insane in ["has spaces", "quote\"inject", &"x".repeat(200)] {
        let response = app
            .client
            .get(&live)
            .header("x-request-id", insane)
            .send()
            .await
            .expect("request");
        let id = response.headers()["x-request-id"].to_str().expect("ascii");
        assert_ne!(id, insane);
        assert!(uuid::Uuid::parse_str(id).is_ok(), "generated id {id:?}");
    }

    let a = app.client.get(&live).send().await.expect("request");
    let b = app.client.get(&live).send().await.expect("request");
    assert_ne!(a.headers()["x-request-id"], b.headers()["x-request-id"]);

    // Errors carry the same id in the body.
    let response = app
        .client
        .get(app.url("/no/such/route"))
        .header("x-request-id", "trace-me")
        .send()
        .await
        .expect("request");
    let body = assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(body["error"]["request_id"], "trace-me");
}

#[sqlx::test]
async fn every_error_path_uses_the_envelope(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let login = app.url("/api/v1/auth/login");

    let unknown = app
        .client
        .get(app.url("/api/v2/whatever"))
        .send()
        .await
        .expect("request");
    assert_error(unknown, StatusCode::NOT_FOUND, "not_found").await;

    let wrong_method = app.client.delete(&login).send().await.expect("request");
    assert_error(
        wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;

    let bad_json = app
        .client
        .post(&login)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_error(bad_json, StatusCode::BAD_REQUEST, "malformed_json").await;

    let wrong_type = app
        .client
        .post(&login)
        .header("content-type", "text/plain")
        .body(r#"{"email":"a@b.co","password":"x"}"#)
        .send()
        .await
        .expect("request");
    assert_error(
        wrong_type,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    let missing_field = app
        .post_json("/api/v1/auth/login", &json!({"email": "a@b.co"}))
        .await;
    let body = assert_error(
        missing_field,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_error",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("password")
    );

    let wrong_shape = app.post_json("/api/v1/auth/login", &json!([1, 2, 3])).await;
    assert_error(
        wrong_shape,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_error",
    )
    .await;

    let huge = json!({"email": "a@b.co", "password": "x".repeat(200 * 1024)});
    let too_large = app.post_json("/api/v1/auth/login", &huge).await;
    assert_error(
        too_large,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;

    let unauthenticated = app
        .client
        .get(app.url("/api/v1/auth/me"))
        .send()
        .await
        .expect("request");
    assert_error(unauthenticated, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

#[sqlx::test]
async fn an_unreachable_database_is_503_not_500(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("outage@example.com").await;
    // The pool the API uses, closed: every query now fails to connect, as
    // with Postgres down or every connection taken.
    app.db.close().await;
    for path in ["/api/v1/jobs", "/api/v1/documents", "/api/v1/auth/me"] {
        let response = app
            .client
            .get(app.url(path))
            .bearer_auth(&tokens.access)
            .send()
            .await
            .expect("request");
        assert_error(
            response,
            StatusCode::SERVICE_UNAVAILABLE,
            "dependency_unavailable",
        )
        .await;
    }
    let login = app
        .login("outage@example.com", crate::helpers::PASSWORD)
        .await;
    assert_error(
        login,
        StatusCode::SERVICE_UNAVAILABLE,
        "dependency_unavailable",
    )
    .await;
}

#[sqlx::test]
async fn readiness_reports_each_dependency(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let response = app
        .client
        .get(app.url("/api/v1/health/ready"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    for check in ["postgres", "redis", "storage"] {
        assert_eq!(body["checks"][check]["ok"], true, "{check}: {body}");
    }

    let live = app
        .client
        .get(app.url("/api/v1/health/live"))
        .send()
        .await
        .expect("request");
    assert_eq!(live.status(), StatusCode::OK);
}

#[sqlx::test]
async fn redis_down_is_degraded_not_unready(db: PgPool) {
    let app = TestApp::spawn_with(db, &[("REDIS_URL", "redis://127.0.0.1:1")]).await;
    let response = app
        .client
        .get(app.url("/api/v1/health/ready"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["degraded"], json!(["redis"]), "{body}");
    assert_eq!(body["checks"]["redis"]["ok"], false);
    assert_eq!(body["checks"]["postgres"]["ok"], true);
    assert_eq!(body["checks"]["storage"]["ok"], true);
    // Why a check failed is for the log, not for anonymous callers.
    assert_eq!(
        body["checks"]["redis"].as_object().map(|check| check.len()),
        Some(2),
        "only ok and latency_ms: {body}"
    );
    // (The `redis_connected` gauge is process-wide, shared by every test
    // app in this binary: `live::processes_started_during_a_redis_outage_…`
    // checks it on a process of its own.)
}

#[sqlx::test]
async fn readiness_is_503_and_names_postgres_when_it_is_unreachable(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.db.close().await;
    let response = app
        .client
        .get(app.url("/api/v1/health/ready"))
        .send()
        .await
        .expect("request");
    let body = assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "not_ready").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("postgres"),
        "{body}"
    );
    assert_eq!(body["checks"]["postgres"]["ok"], false);
    assert_eq!(body["degraded"], json!([]));
}

#[sqlx::test]
async fn cors_allows_only_configured_origins(db: PgPool) {
    let app = TestApp::spawn_with(db, &[("CORS_ORIGINS", "https://app.example.com")]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/auth/login"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.expect("request");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let refused = preflight("https://evil.example.com")
        .await
        .expect("request");
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

/// The page's icon is served (browsers ask for /favicon.ico unprompted),
/// under the page's strict Content-Security-Policy.
#[sqlx::test]
async fn the_web_page_and_its_icon_are_served_under_a_strict_policy(db: PgPool) {
    let app = TestApp::spawn(db).await;
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/favicon.ico", "image/svg+xml"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let response = app.client.get(app.url(path)).send().await.expect("request");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
        let policy = response.headers()["content-security-policy"]
            .to_str()
            .expect("ascii");
        assert!(policy.starts_with("default-src 'none'"), "{path}: {policy}");
    }
}

/// Oversized headers get the envelope (431 `headers_too_large`), by size
/// and by count; far past the limits hyper stops reading and closes with
/// its own bare 431, so a connection never buffers more than that.
#[sqlx::test]
async fn oversized_headers_are_431_with_the_envelope(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let health = app.url("/api/v1/health/live");

    let big = app
        .client
        .get(&health)
        .header("x-padding", "a".repeat(40 * 1024))
        .send()
        .await
        .expect("request");
    assert_error(
        big,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
    )
    .await;

    let mut many = app.client.get(&health);
    for i in 0..150 {
        many = many.header(format!("x-field-{i}"), "1");
    }
    let many = many.send().await.expect("request");
    assert_error(
        many,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
    )
    .await;

    // Just under the limits: served.
    let fine = app
        .client
        .get(&health)
        .header("x-padding", "a".repeat(30 * 1024))
        .send()
        .await
        .expect("request");
    assert_eq!(fine.status(), StatusCode::OK);

    // Far past them, hyper ends the connection itself.
    let huge = app
        .client
        .get(&health)
        .header("x-padding", "a".repeat(200 * 1024))
        .send()
        .await;
    // Either way no other status, and the server goes on serving.
    assert!(
        huge.as_ref().map_or(true, |r| r.status()
            == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        "{huge:?}"
    );
    let after = app.client.get(&health).send().await.expect("request");
    assert_eq!(after.status(), StatusCode::OK);
}

//! Accounts and sessions, end to end over HTTP against real Postgres and Redis.

use std::time::{Duration, Instant};

use crate::helpers::{PASSWORD, TestApp, assert_error};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

#[sqlx::test]
async fn register_login_me(db: PgPool) {
    let app = TestApp::spawn(db).await;

    let response = app.register("Alice@Example.COM").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let user: Value = response.json().await.expect("json");
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["role"], "user");
    assert!(user.get("password_hash").is_none());

    let response = app.login("ALICE@example.com", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.expect("json");
    assert_eq!(tokens["token_type"], "bearer");
    assert!((890..=900).contains(&tokens["expires_in"].as_i64().expect("expires_in")));
    let month = 30 * 24 * 3600;
    assert!(
        (month - 10..=month).contains(&tokens["refresh_expires_in"].as_i64().expect("refresh"))
    );

    let me = app
        .me(tokens["access_token"].as_str().expect("access"))
        .await;
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.expect("json");
    assert_eq!(me["id"], user["id"]);
    assert_eq!(me["email"], "alice@example.com");
}

#[sqlx::test]
async fn duplicate_email_is_409_whatever_its_case(db: PgPool) {
    let app = TestApp::spawn(db).await;
    assert_eq!(
        app.register("bob@example.com").await.status(),
        StatusCode::CREATED
    );
    assert_error(
        app.register("BOB@example.com").await,
        StatusCode::CONFLICT,
        "email_taken",
    )
    .await;
}

#[sqlx::test]
async fn weak_password_and_malformed_email_are_422(db: PgPool) {
    let app = TestApp::spawn(db).await;
    for (email, password) in [
        ("carol@example.com", "short1"),
        ("carol@example.com", "x".repeat(129).as_str()),
        ("not-an-email", PASSWORD),
        ("carol@localhost", PASSWORD),
    ] {
        let response = app
            .post_json(
                "/api/v1/auth/register",
                &json!({"email": email, "password": password}),
            )
            .await;
        assert_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
        )
        .await;
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(
        count, 0,
        "a refused registration must not create an account"
    );
}

#[sqlx::test]
async fn unknown_email_and_wrong_password_look_the_same(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.signed_in("dave@example.com").await;

    let wrong = assert_error(
        app.login("dave@example.com", "wrong-password-1").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let unknown = assert_error(
        app.login("nobody@example.com", "wrong-password-1").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_eq!(wrong["error"]["message"], unknown["error"]["message"]);

    // Both paths run one Argon2 verification, so they take comparable time.
    // Interleaved medians with a wide band: this guards against the unknown
    // email path skipping the hash (an order of magnitude faster), not noise.
    let mut wrong_times = Vec::new();
    let mut unknown_times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        app.login("dave@example.com", "wrong-password-1").await;
        wrong_times.push(started.elapsed());
        let started = Instant::now();
        app.login("nobody@example.com", "wrong-password-1").await;
        unknown_times.push(started.elapsed());
    }
    wrong_times.sort();
    unknown_times.sort();
    let ratio = unknown_times[2].as_secs_f64() / wrong_times[2].as_secs_f64();
    assert!(
        (0.33..3.0).contains(&ratio),
        "unknown-email login took {:?}, wrong-password login {:?}",
        unknown_times[2],
        wrong_times[2]
    );
}

#[sqlx::test]
async fn refresh_rotates_and_reuse_revokes_the_family(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let first = app.signed_in("erin@example.com").await;

    let response = app
        .post_json(
            "/api/v1/auth/refresh",
            &json!({"refresh_token": first.refresh}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let second: Value = response.json().await.expect("json");
    let second_refresh = second["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_ne!(second_refresh, first.refresh);
    assert_eq!(
        app.me(second["access_token"].as_str().expect("access"))
            .await
            .status(),
        StatusCode::OK
    );

    // The first token was spent: presenting it again is reuse.
    let reuse = app
        .post_json(
            "/api/v1/auth/refresh",
            &json!({"refresh_token": first.refresh}),
        )
        .await;
    assert_error(reuse, StatusCode::UNAUTHORIZED, "refresh_token_reused").await;

    // ...which revoked the whole session: the access tokens it issued, the
    // first and the successor's, stop working at once (not in 15 minutes)...
    for access in [
        first.access.as_str(),
        second["access_token"].as_str().expect("access"),
    ] {
        assert_error(
            app.me(access).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        )
        .await;
    }
    // ...and the legitimate successor's refresh token.
    let successor = app
        .post_json(
            "/api/v1/auth/refresh",
            &json!({"refresh_token": second_refresh}),
        )
        .await;
    assert_error(successor, StatusCode::UNAUTHORIZED, "invalid_token").await;

    // Another login (another family) is unaffected.
    let other = app.login("erin@example.com", PASSWORD).await;
    let other: Value = other.json().await.expect("json");
    let response = app
        .post_json(
            "/api/v1/auth/refresh",
            &json!({"refresh_token": other["refresh_token"]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[sqlx::test]
async fn an_access_token_is_not_a_refresh_token(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("frank@example.com").await;
    let response = app
        .post_json(
            "/api/v1/auth/refresh",
            &json!({"refresh_token": tokens.access}),
        )
        .await;
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    assert_error(
        app.me(&tokens.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
}

#[sqlx::test]
async fn logout_blocks_the_access_token_and_ends_the_session(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let before_refresh = app.signed_in("grace@example.com").await;
    // The session refreshed once: its older access token is still unexpired.
    let refreshed: Value = app
        .post_json(
            "/api/v1/auth/refresh",
            &json!({"refresh_token": before_refresh.refresh}),
        )
        .await
        .json()
        .await
        .expect("json");
    let tokens = crate::helpers::Tokens {
        access: refreshed["access_token"]
            .as_str()
            .expect("access")
            .to_owned(),
        refresh: refreshed["refresh_token"]
            .as_str()
            .expect("refresh")
            .to_owned(),
    };
    let other_session = app.login("grace@example.com", PASSWORD).await;
    let other_session: Value = other_session.json().await.expect("json");

    let response = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(&tokens.access)
        .json(&json!({"refresh_token": tokens.refresh}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    // Every access token of the session ends, the older one too.
    for access in [&tokens.access, &before_refresh.access] {
        assert_error(
            app.me(access).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        )
        .await;
    }
    let refresh = app
        .post_json(
            "/api/v1/auth/refresh",
            &json!({"refresh_token": tokens.refresh}),
        )
        .await;
    assert_error(refresh, StatusCode::UNAUTHORIZED, "invalid_token").await;

    // The other session (another device) still works.
    let other_access = other_session["access_token"].as_str().expect("access");
    assert_eq!(app.me(other_access).await.status(), StatusCode::OK);

    // Logout without a body ends its session just the same.
    let response = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(other_access)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_error(
        app.me(other_access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    let refresh = app
        .post_json(
            "/api/v1/auth/refresh",
            &json!({"refresh_token": other_session["refresh_token"]}),
        )
        .await;
    assert_error(refresh, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[sqlx::test]
async fn the_blocklist_is_shared_by_replicas_through_redis(db: PgPool) {
    let prefix = format!("docflow-test:{}:", uuid::Uuid::new_v4());
    let a = TestApp::spawn_with(db.clone(), &[("REDIS_KEY_PREFIX", &prefix)]).await;
    let b = TestApp::spawn_with(db, &[("REDIS_KEY_PREFIX", &prefix)]).await;
    let tokens = a.signed_in("heidi@example.com").await;
    assert_eq!(b.me(&tokens.access).await.status(), StatusCode::OK);
    let response = a
        .client
        .post(a.url("/api/v1/auth/logout"))
        .bearer_auth(&tokens.access)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_error(
        b.me(&tokens.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
}

fn forge(header: &Value, claims: &Value, key: &[u8]) -> String {
    jsonwebtoken::encode(
        &serde_json::from_value(header.clone()).expect("header"),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key).expect("key"),
    )
    .expect("encode")
}

#[sqlx::test]
async fn expired_tampered_and_foreign_tokens_are_401(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("ivan@example.com").await;
    let me: Value = app.me(&tokens.access).await.json().await.expect("json");
    let now = chrono::Utc::now().timestamp();
    let claims = |iat: i64, exp: i64| json!({"sub": me["id"], "jti": uuid::Uuid::new_v4(), "typ": "access", "iat": iat, "exp": exp});
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let secret = crate::helpers::JWT_SECRET.as_bytes();

    // Sanity: a token we forge with the real key and valid claims works, so
    // the failures below are due to what each one changes.
    assert_eq!(
        app.me(&forge(&hs256, &claims(now, now + 60), secret))
            .await
            .status(),
        StatusCode::OK
    );

    let expired = forge(&hs256, &claims(now - 3600, now - 600), secret);
    assert_error(
        app.me(&expired).await,
        StatusCode::UNAUTHORIZED,
        "token_expired",
    )
    .await;

    let foreign = forge(
        &hs256,
        &claims(now, now + 60),
        b"some-other-key-some-other-key-0123",
    );
    assert_error(
        app.me(&foreign).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;

    let hs512 = forge(
        &json!({"alg": "HS512", "typ": "JWT"}),
        &claims(now, now + 60),
        secret,
    );
    assert_error(
        app.me(&hs512).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;

    let payload = URL_SAFE_NO_PAD.encode(claims(now, now + 60).to_string());
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{none_header}.{payload}.");
    assert_error(
        app.me(&unsigned).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;

    // Tamper with the payload of a genuine token: make it someone else's.
    let mut parts: Vec<String> = tokens.access.split('.').map(str::to_owned).collect();
    let mut body: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).expect("b64")).expect("json");
    body["sub"] = json!(uuid::Uuid::new_v4());
    parts[1] = URL_SAFE_NO_PAD.encode(body.to_string());
    assert_error(
        app.me(&parts.join(".")).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;

    assert_error(
        app.me("not-a-jwt").await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    let missing = app
        .client
        .get(app.url("/api/v1/auth/me"))
        .send()
        .await
        .expect("request");
    assert_eq!(
        missing
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().ok()),
        Some(Some("Bearer"))
    );
    assert_error(missing, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

#[sqlx::test]
async fn eleventh_rapid_login_from_one_ip_is_429(db: PgPool) {
    // Loopback is our trusted proxy here, so X-Forwarded-For names the client.
    let app = TestApp::spawn_with(db, &[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let login_from = |ip: &'static str| {
        app.client
            .post(app.url("/api/v1/auth/login"))
            .header("x-forwarded-for", ip)
            .json(&json!({"email": "mallory@example.com", "password": "guess-number-1"}))
            .send()
    };
    for attempt in 1..=10 {
        let response = login_from("203.0.113.10").await.expect("request");
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }
    let limited = login_from("203.0.113.10").await.expect("request");
    let retry_after: u64 = limited
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(
        (1..=60).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    assert_error(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;

    let other_ip = login_from("203.0.113.11").await.expect("request");
    assert_eq!(other_ip.status(), StatusCode::UNAUTHORIZED);
}

#[sqlx::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored(db: PgPool) {
    let app = TestApp::spawn(db).await; // no trusted proxies
    for attempt in 0..11 {
        // A client rotating spoofed addresses still shares one budget: its own.
        let response = app
            .client
            .post(app.url("/api/v1/auth/login"))
            .header("x-forwarded-for", format!("198.51.100.{attempt}"))
            .json(&json!({"email": "mallory@example.com", "password": "guess-number-1"}))
            .send()
            .await
            .expect("request");
        if attempt < 10 {
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "attempt {attempt}"
            );
        } else {
            assert_error(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
        }
    }
}

#[sqlx::test]
async fn register_and_refresh_are_rate_limited_too(db: PgPool) {
    let app = TestApp::spawn_with(db, &[("AUTH_RATE_LIMIT_PER_MINUTE", "2")]).await;
    for endpoint in ["/api/v1/auth/register", "/api/v1/auth/refresh"] {
        let body = json!({"email": "x", "password": "y", "refresh_token": "z"});
        for _ in 0..2 {
            let status = app.post_json(endpoint, &body).await.status();
            assert_ne!(status, StatusCode::TOO_MANY_REQUESTS, "{endpoint}");
        }
        assert_error(
            app.post_json(endpoint, &body).await,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
        )
        .await;
    }
}

#[sqlx::test]
async fn tokens_stay_valid_when_redis_is_down_but_logout_says_503(db: PgPool) {
    // Port 1 on loopback: nothing listens, connections are refused at once.
    let app = TestApp::spawn_with(db, &[("REDIS_URL", "redis://127.0.0.1:1")]).await;
    let tokens = app.signed_in("judy@example.com").await;
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
    let started = Instant::now();
    let response = app
        .client
        .post(app.url("/api/v1/auth/logout"))
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
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a down Redis must fail fast"
    );
}

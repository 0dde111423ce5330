//! schemathesis against the live API's own `/openapi.json`: every operation,
//! authenticated (tests/schemathesis/hooks.py logs in for it), with all of
//! its checks: no 5xx, and every response matches the documented status
//! codes, headers and schemas, while schema-valid requests are accepted and
//! schema-invalid ones refused. `scripts/test` installs schemathesis.

use std::path::Path;

use crate::helpers::{PASSWORD, TestApp, upload};
use serde_json::{Value, json};
use sqlx::PgPool;

#[sqlx::test]
async fn the_api_conforms_to_its_openapi_document(db: PgPool) {
    let app = TestApp::spawn_with(
        db,
        &[
            ("AUTH_RATE_LIMIT_PER_MINUTE", "1000000"),
            ("UPLOAD_RATE_LIMIT_PER_MINUTE", "1000000"),
            // Streams the fuzzer opens end quickly instead of timing it out.
            ("SSE_MAX_STREAM_SECS", "1"),
        ],
    )
    .await;
    app.start_worker();
    // Something for the stateful phase to find: a document and its job. The
    // fuzzer is an admin, so the admin operations are exercised too.
    let email = "fuzzer@example.com";
    let tokens = app.signed_in(email).await;
    sqlx::query("UPDATE users SET role = 'admin' WHERE email = $1")
        .bind(email)
        .execute(&app.db)
        .await
        .expect("promote");
    let response = upload(&app, &tokens, b"Fuzz me.".to_vec(), "f.txt", "text/plain").await;
    let document: Value = response.json().await.expect("json");
    app.client
        .post(app.url("/api/v1/jobs"))
        .bearer_auth(&tokens.access)
        .json(&json!({ "document_id": document["id"] }))
        .send()
        .await
        .expect("job");

    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261128".into());
    let examples = std::env::var("SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "30".into());
    let base = app.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("st")
            .arg(format!("--config-file={}/schemathesis.toml", hooks.display()))
            .args(["run", &format!("{base}/openapi.json")])
            .args(["--checks", "all", "--max-examples", &examples, "--seed", &seed])
            .args(["--request-timeout", "20", "--no-color"])
            .env("PYTHONPATH", &hooks)
            .env("SCHEMATHESIS_HOOKS", "hooks")
            .env("DOCFLOW_BASE_URL", &base)
            .env("DOCFLOW_EMAIL", email)
            .env("DOCFLOW_PASSWORD", PASSWORD)
            .output()
            .expect("schemathesis (`st`) is not installed: pip install -r tests/schemathesis/requirements.txt")
    })
    .await
    .expect("join");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Every bearer-authenticated operation was reached with valid
    // credentials (the signed download link answers 403 to forged
    // signatures, which schemathesis reports separately).
    assert!(
        !report.contains("401 Unauthorized ("),
        "some operations only ever answered 401:\n{report}"
    );
}

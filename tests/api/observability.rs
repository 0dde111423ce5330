//! Metrics and traces as an operator sees them: the API's and the worker's
//! `/metrics` after real traffic, the Grafana dashboard checked against
//! those scrapes, and one trace from the request through the queue to the
//! worker's run (exported to the OpenTelemetry SDK's in-memory exporter).

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use crate::helpers::{TestApp, Tokens, upload};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

/// One tracing pipeline for this test binary (the subscriber is global).
fn traces() -> &'static (SdkTracerProvider, InMemorySpanExporter) {
    static TRACES: OnceLock<(SdkTracerProvider, InMemorySpanExporter)> = OnceLock::new();
    TRACES.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        docflow::telemetry::install(&provider, false);
        (provider, exporter)
    })
}

async fn upload_text(app: &TestApp, tokens: &Tokens) -> String {
    let response = upload(app, tokens, b"Observable.".to_vec(), "o.txt", "text/plain").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let document: Value = response.json().await.expect("json");
    document["id"].as_str().expect("id").to_owned()
}

async fn wait_succeeded(app: &TestApp, tokens: &Tokens, job_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job: Value =
            crate::helpers::get_json(app, tokens, &format!("/api/v1/jobs/{job_id}")).await;
        if job["status"] == "succeeded" {
            return;
        }
        assert!(Instant::now() < deadline, "job not done: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the sample `name{labels}` (labels in exposition order).
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain; version=0.0.4")
    );
    response.text().await.expect("body")
}

#[sqlx::test]
async fn metrics_count_requests_jobs_and_the_queue_and_feed_the_dashboard(db: PgPool) {
    traces();
    let app = TestApp::spawn(db).await;
    let worker = app.start_worker();
    let tokens = app.signed_in("metrics@example.com").await;
    let document = upload_text(&app, &tokens).await;
    let mut job_id = String::new();
    for expected in [StatusCode::CREATED, StatusCode::OK] {
        let response = app
            .client
            .post(app.url("/api/v1/jobs"))
            .bearer_auth(&tokens.access)
            .header("idempotency-key", "metrics-key")
            .json(&json!({ "document_id": document }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), expected);
        let job: Value = response.json().await.expect("json");
        job_id = job["id"].as_str().expect("id").to_owned();
    }
    wait_succeeded(&app, &tokens, &job_id).await;
    let missing = app
        .client
        .get(app.url("/api/v1/jobs/not-a-uuid"))
        .bearer_auth(&tokens.access)
        .send()
        .await
        .expect("request");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // Let the worker's gauges refresh (every 5 s).
    tokio::time::sleep(Duration::from_millis(5_500)).await;

    let api = scrape(&app.url("/metrics")).await;
    let worker = scrape(&format!("http://{worker}/metrics")).await;
    for (scrape, series, at_least) in [
        (
            &api,
            r#"http_requests_total{method="POST",route="/api/v1/jobs",status_code="201"}"#,
            1.0,
        ),
        (
            &api,
            r#"http_requests_total{method="POST",route="/api/v1/jobs",status_code="200"}"#,
            1.0,
        ),
        // Route templates, never raw paths: the bad id is counted under
        // the template.
        (
            &api,
            r#"http_requests_total{method="GET",route="/api/v1/jobs/{id}",status_code="404"}"#,
            1.0,
        ),
        (
            &api,
            r#"http_request_duration_seconds_count{method="POST",route="/api/v1/jobs"}"#,
            2.0,
        ),
        (&api, r#"jobs_created_total{result="created"}"#, 1.0),
        (
            &api,
            r#"jobs_created_total{result="idempotent_replay"}"#,
            1.0,
        ),
        (&worker, "jobs_succeeded_total", 1.0),
        (
            &worker,
            r#"job_processing_duration_seconds_count{result="succeeded"}"#,
            1.0,
        ),
        (&worker, r#"jobs_failed_total{reason="permanent"}"#, 0.0),
        (&worker, "jobs_retries_scheduled_total", 0.0),
        (&worker, "jobs_orphans_rescued_total", 0.0),
        (&worker, r#"jobs_queue_depth{status="queued"}"#, 0.0),
        (&worker, "jobs_oldest_queued_age_seconds", 0.0),
        (&worker, "jobs_dead_letter_depth", 0.0),
    ] {
        let value = sample(scrape, series).unwrap_or_else(|| panic!("{series} missing"));
        assert!(value >= at_least, "{series} = {value}");
    }
    assert!(
        !api.contains("not-a-uuid"),
        "a raw path reached the metrics labels"
    );

    // Every metric the Grafana dashboard queries exists in these scrapes.
    let dir = tempfile::tempdir().expect("tempdir");
    let (api_file, worker_file) = (dir.path().join("api.txt"), dir.path().join("worker.txt"));
    std::fs::write(&api_file, &api).expect("write");
    std::fs::write(&worker_file, &worker).expect("write");
    let root = env!("CARGO_MANIFEST_DIR");
    let output = std::process::Command::new("python3")
        .arg(format!("{root}/infra/grafana/check_dashboard.py"))
        .arg(format!(
            "{root}/infra/grafana/dashboards/docflow-overview.json"
        ))
        .arg("--metrics")
        .arg(&api_file)
        .arg("--metrics")
        .arg(&worker_file)
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "dashboard check failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn parse_traceparent(value: &str) -> (TraceId, SpanId) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    (
        TraceId::from_hex(parts[1]).expect("trace id"),
        SpanId::from_hex(parts[2]).expect("span id"),
    )
}

#[sqlx::test]
async fn one_trace_runs_from_the_request_through_the_queue_to_the_worker(db: PgPool) {
    let (provider, exporter) = traces();
    let app = TestApp::spawn(db.clone()).await;
    app.start_worker();
    let tokens = app.signed_in("traced@example.com").await;
    let document = upload_text(&app, &tokens).await;

    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (caller_trace, caller_span) = parse_traceparent(caller);
    let response = app
        .client
        .post(app.url("/api/v1/jobs"))
        .bearer_auth(&tokens.access)
        .header("traceparent", caller)
        .header("x-request-id", "req-traced-1")
        .json(&json!({ "document_id": document }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
    let job: Value = response.json().await.expect("json");
    let job_id = job["id"].as_str().expect("id").to_owned();
    wait_succeeded(&app, &tokens, &job_id).await;

    // The job carries the API request span's context, in the caller's trace.
    let stored: Option<String> =
        sqlx::query_scalar("SELECT traceparent FROM jobs WHERE id = $1::uuid")
            .bind(&job_id)
            .fetch_one(&db)
            .await
            .expect("job");
    let (stored_trace, request_span) = parse_traceparent(&stored.expect("traceparent stored"));
    assert_eq!(stored_trace, caller_trace);
    assert_ne!(request_span, caller_span);

    let _ = provider.force_flush();
    let deadline = Instant::now() + Duration::from_secs(10);
    let spans = loop {
        let spans = exporter.get_finished_spans().expect("spans");
        let done = spans
            .iter()
            .any(|s| s.name == "job.process" && s.span_context.trace_id() == caller_trace);
        if done || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Only our spans: aide's, from building the OpenAPI document, stay out.
    let aide = [
        "api_route",
        "get_with",
        "post_with",
        "response_with",
        "finish_api_with",
    ];
    assert!(
        !spans.iter().any(|s| aide.contains(&s.name.as_ref())),
        "aide's spans were exported"
    );
    let request = spans
        .iter()
        .find(|s| s.span_context.span_id() == request_span)
        .expect("the API request span was exported");
    assert_eq!(request.name, "request");
    assert_eq!(request.span_context.trace_id(), caller_trace);
    assert_eq!(request.parent_span_id, caller_span, "continues the caller");
    let worker = spans
        .iter()
        .find(|s| s.name == "job.process" && s.span_context.trace_id() == caller_trace)
        .expect("the worker's span is in the caller's trace");
    assert_eq!(
        worker.parent_span_id, request_span,
        "the worker's run is a child of the request that enqueued it"
    );
    assert!(worker.parent_span_is_remote, "parented across the queue");
    // The run carries the creating request's id (the JSON log lines lift
    // it to the top, as on the API's lines), and its extraction is a step
    // of its own.
    assert!(
        worker
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "request_id" && kv.value.as_str() == "req-traced-1"),
        "{:?}",
        worker.attributes
    );
    let stored: Option<String> =
        sqlx::query_scalar("SELECT request_id FROM jobs WHERE id = $1::uuid")
            .bind(&job_id)
            .fetch_one(&db)
            .await
            .expect("job");
    assert_eq!(stored.as_deref(), Some("req-traced-1"));
    assert!(
        spans
            .iter()
            .any(|s| s.name == "extract" && s.parent_span_id == worker.span_context.span_id()),
        "no extract step under the run"
    );
}

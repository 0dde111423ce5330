//! Prometheus metrics: the names the seed's dashboards and alerts use, plus
//! the queue gauges operators need. Recorded through the `metrics` facade
//! and rendered by `metrics-exporter-prometheus` on `/metrics` (the API) and
//! on WORKER_METRICS_ADDR (the worker).
//!
//! Every name is defined here, once, so the dashboards in infra/ can be
//! checked against this list (see tests/observability.rs).

use std::{sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::FailureReason;

pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";
pub const JOBS_CREATED_TOTAL: &str = "jobs_created_total";
pub const SSE_STREAMS_ACTIVE: &str = "sse_streams_active";
pub const JOBS_SUCCEEDED_TOTAL: &str = "jobs_succeeded_total";
pub const JOBS_FAILED_TOTAL: &str = "jobs_failed_total";
pub const JOB_PROCESSING_DURATION_SECONDS: &str = "job_processing_duration_seconds";
pub const JOBS_RETRIES_SCHEDULED_TOTAL: &str = "jobs_retries_scheduled_total";
pub const JOBS_ORPHANS_RESCUED_TOTAL: &str = "jobs_orphans_rescued_total";
pub const JOBS_QUEUE_DEPTH: &str = "jobs_queue_depth";
pub const JOBS_OLDEST_QUEUED_AGE_SECONDS: &str = "jobs_oldest_queued_age_seconds";
pub const JOBS_DEAD_LETTER_DEPTH: &str = "jobs_dead_letter_depth";
pub const JOBS_CANCELLED_TOTAL: &str = "jobs_cancelled_total";
pub const JOBS_RETURNED_TOTAL: &str = "jobs_returned_total";
pub const QUEUE_WORKERS_LIVE: &str = "queue_workers_live";
pub const QUEUE_LEADER: &str = "queue_leader";
pub const REDIS_CONNECTED: &str = "redis_connected";
pub const HTTP_CONNECTIONS_REFUSED_TOTAL: &str = "http_connections_refused_total";

/// Request latencies: 5 ms to 30 s (uploads and SSE heads included).
const HTTP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Job run times: 10 ms (a small text) to 5 minutes (OCR of many pages).
const JOB_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same
/// handle, so tests running several apps in one process share it).
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(HTTP_REQUEST_DURATION_SECONDS.into()),
                    HTTP_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(JOB_PROCESSING_DURATION_SECONDS.into()),
                        JOB_BUCKETS,
                    )
                })
                .expect("bucket lists are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests by method, route template and status code"
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "HTTP request latency to the response head, by method and route template"
    );
    describe_counter!(
        JOBS_CREATED_TOTAL,
        "POST /jobs outcomes: created or idempotent_replay"
    );
    describe_gauge!(
        SSE_STREAMS_ACTIVE,
        "Live status streams open on this API process"
    );
    describe_counter!(JOBS_SUCCEEDED_TOTAL, "Jobs that finished with a result");
    describe_counter!(JOBS_FAILED_TOTAL, "Jobs that failed for good, by reason");
    describe_histogram!(
        JOB_PROCESSING_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "One job run, from claim to recorded outcome, by result"
    );
    describe_counter!(
        JOBS_RETRIES_SCHEDULED_TOTAL,
        "Runs that failed transiently and were rescheduled"
    );
    describe_counter!(
        JOBS_ORPHANS_RESCUED_TOTAL,
        "Jobs found mid-run from a worker that died, and run again"
    );
    describe_gauge!(
        JOBS_QUEUE_DEPTH,
        "Jobs by status (queued, processing), all workers"
    );
    describe_gauge!(
        JOBS_OLDEST_QUEUED_AGE_SECONDS,
        metrics::Unit::Seconds,
        "How long the longest-waiting queued job has waited"
    );
    describe_gauge!(JOBS_DEAD_LETTER_DEPTH, "Jobs in the dead-letter queue");
    describe_counter!(JOBS_CANCELLED_TOTAL, "Jobs cancelled by their owner");
    describe_counter!(
        JOBS_RETURNED_TOTAL,
        "Claimed jobs handed back unstarted (shutdown, or a worker that died before running them); no attempt counted"
    );
    describe_gauge!(
        QUEUE_WORKERS_LIVE,
        "Worker processes holding a live lease (set by the leader)"
    );
    describe_gauge!(
        QUEUE_LEADER,
        "1 on the worker process that runs queue maintenance, else 0"
    );
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED_TOTAL,
        "Client connections answered at once and closed, by the cap they hit"
    );
    describe_gauge!(
        REDIS_CONNECTED,
        "1 while this process's Redis connection is up; 0 while it reconnects (degraded)"
    );
}

/// Methods are labels as themselves only when HTTP defines them: any other
/// token is `OTHER`, so a client cannot mint new series at will.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

pub fn record_http(method: &str, route: &str, status: u16, elapsed: Duration) {
    let method = method_label(method);
    let labels = [
        ("method", method.to_owned()),
        ("route", route.to_owned()),
        ("status_code", status.to_string()),
    ];
    metrics::counter!(HTTP_REQUESTS_TOTAL, &labels).increment(1);
    metrics::histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        "method" => method,
        "route" => route.to_owned()
    )
    .record(elapsed.as_secs_f64());
}

/// `result`: `created` or `idempotent_replay`.
pub fn job_created(result: &'static str) {
    metrics::counter!(JOBS_CREATED_TOTAL, "result" => result).increment(1);
}

/// Counts an open live stream until the guard drops.
pub struct StreamGauge(());

impl StreamGauge {
    pub fn open() -> Self {
        metrics::gauge!(SSE_STREAMS_ACTIVE).increment(1.0);
        Self(())
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        metrics::gauge!(SSE_STREAMS_ACTIVE).decrement(1.0);
    }
}

pub fn job_succeeded(elapsed: Duration) {
    metrics::counter!(JOBS_SUCCEEDED_TOTAL).increment(1);
    metrics::histogram!(JOB_PROCESSING_DURATION_SECONDS, "result" => "succeeded")
        .record(elapsed.as_secs_f64());
}

pub fn job_failed(reason: FailureReason, elapsed: Duration) {
    metrics::counter!(JOBS_FAILED_TOTAL, "reason" => reason.as_str()).increment(1);
    metrics::histogram!(JOB_PROCESSING_DURATION_SECONDS, "result" => "failed")
        .record(elapsed.as_secs_f64());
}

pub fn retry_scheduled(elapsed: Duration) {
    metrics::counter!(JOBS_RETRIES_SCHEDULED_TOTAL).increment(1);
    metrics::histogram!(JOB_PROCESSING_DURATION_SECONDS, "result" => "retry_scheduled")
        .record(elapsed.as_secs_f64());
}

pub fn orphan_rescued() {
    metrics::counter!(JOBS_ORPHANS_RESCUED_TOTAL).increment(1);
}

pub fn job_cancelled() {
    metrics::counter!(JOBS_CANCELLED_TOTAL).increment(1);
}

pub fn job_returned() {
    metrics::counter!(JOBS_RETURNED_TOTAL).increment(1);
}

/// What the leader saw of the queue's workers.
pub fn set_queue_workers(live: i64) {
    #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    metrics::gauge!(QUEUE_WORKERS_LIVE).set(live as f64);
}

pub fn connection_refused(cap: &'static str) {
    metrics::counter!(HTTP_CONNECTIONS_REFUSED_TOTAL, "reason" => cap).increment(1);
}

pub fn set_redis_connected(connected: bool) {
    metrics::gauge!(REDIS_CONNECTED).set(if connected { 1.0 } else { 0.0 });
}

pub fn set_leader(leader: bool) {
    metrics::gauge!(QUEUE_LEADER).set(if leader { 1.0 } else { 0.0 });
}

/// The queue as one cheap query saw it (see `db::jobs::queue_stats`).
pub fn set_queue(queued: i64, processing: i64, oldest_queued_age: f64, dead_letters: i64) {
    #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    {
        metrics::gauge!(JOBS_QUEUE_DEPTH, "status" => "queued").set(queued as f64);
        metrics::gauge!(JOBS_QUEUE_DEPTH, "status" => "processing").set(processing as f64);
        metrics::gauge!(JOBS_DEAD_LETTER_DEPTH).set(dead_letters as f64);
    }
    metrics::gauge!(JOBS_OLDEST_QUEUED_AGE_SECONDS).set(oldest_queued_age);
}

/// Makes every series exist from the start (at zero), so dashboards and
/// alerts see 0 rather than "no data" before the first event.
pub fn register_worker_series() {
    metrics::counter!(JOBS_SUCCEEDED_TOTAL).increment(0);
    for reason in FailureReason::ALL {
        metrics::counter!(JOBS_FAILED_TOTAL, "reason" => reason.as_str()).increment(0);
    }
    metrics::counter!(JOBS_RETRIES_SCHEDULED_TOTAL).increment(0);
    metrics::counter!(JOBS_ORPHANS_RESCUED_TOTAL).increment(0);
    metrics::counter!(JOBS_RETURNED_TOTAL).increment(0);
    metrics::gauge!(QUEUE_LEADER).set(0.0);
}

pub fn register_api_series() {
    for result in ["created", "idempotent_replay"] {
        metrics::counter!(JOBS_CREATED_TOTAL, "result" => result).increment(0);
    }
    metrics::counter!(JOBS_CANCELLED_TOTAL).increment(0);
    metrics::gauge!(SSE_STREAMS_ACTIVE).increment(0.0);
}

//! `/api/v1/health`: liveness (the process answers) and readiness (its
//! dependencies answer).

use std::{
    collections::BTreeMap,
    future::Future,
    time::{Duration, Instant},
};

use aide::{
    axum::{ApiRouter, routing::get_with},
    transform::TransformOperation,
};
use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::http::{AppState, error::ErrorDetail, extract::Json, request_id::current_request_id};

/// A readiness probe that hangs is worse than one that fails.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route("/live", get_with(live, live_docs))
        .api_route("/ready", get_with(ready, ready_docs))
        .with_path_items(|item| item.tag("health"))
}

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct Liveness {
    /// Always `alive`.
    pub status: String,
}

async fn live() -> Json<Liveness> {
    Json(Liveness {
        status: "alive".to_owned(),
    })
}

fn live_docs(op: TransformOperation) -> TransformOperation {
    op.id("get_liveness")
        .summary("Liveness: the process answers")
        .response::<200, Json<Liveness>>()
}

/// One dependency's check. Why a check failed goes to the log only: the
/// probe is unauthenticated, and error text names hosts and versions.
#[derive(Serialize, Deserialize, JsonSchema)]
pub struct CheckResult {
    pub ok: bool,
    pub latency_ms: f64,
}

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct Readiness {
    /// Always `ready`.
    pub status: String,
    /// One entry per dependency: `postgres`, `storage`, and `redis` when configured.
    pub checks: BTreeMap<String, CheckResult>,
    /// Dependencies that are down without making the service unready:
    /// `redis` (rate limits fail open, streams poll Postgres, logout
    /// answers 503 until it is back). Empty when all is well.
    pub degraded: Vec<String>,
}

/// The 503 body: the error envelope plus the same per-dependency checks.
#[derive(Serialize, Deserialize, JsonSchema)]
pub struct NotReady {
    pub error: ErrorDetail,
    pub checks: BTreeMap<String, CheckResult>,
    pub degraded: Vec<String>,
}

async fn run_check<F, E>(name: &'static str, check: F) -> CheckResult
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let started = Instant::now();
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, check).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let ok = match outcome {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            tracing::warn!(dependency = name, error = %err, "readiness check failed");
            false
        }
        Err(_) => {
            tracing::warn!(dependency = name, timeout = ?CHECK_TIMEOUT, "readiness check got no answer");
            false
        }
    };
    CheckResult { ok, latency_ms }
}

async fn ready(State(state): State<AppState>) -> Response {
    let postgres = run_check("postgres", crate::db::ping(&state.db));
    let storage = run_check("storage", state.storage.check());
    let redis = async {
        match &state.ephemeral {
            crate::ephemeral::Ephemeral::Redis(_) => {
                Some(run_check("redis", state.ephemeral.ping()).await)
            }
            crate::ephemeral::Ephemeral::InProcess(_) => None,
        }
    };
    let (postgres, storage, redis) = tokio::join!(postgres, storage, redis);

    let mut checks = BTreeMap::from([
        ("postgres".to_owned(), postgres),
        ("storage".to_owned(), storage),
    ]);
    // Redis holds nothing that cannot wait (rate-limit counters, revoked
    // tokens, live fan-out): its outage degrades the service, and pulling
    // every replica out of a load balancer for it would turn a cache outage
    // into a full one.
    let mut degraded = Vec::new();
    if let Some(redis) = redis {
        if !redis.ok {
            degraded.push("redis".to_owned());
        }
        checks.insert("redis".to_owned(), redis);
    }
    let failing: Vec<&str> = checks
        .iter()
        .filter(|(name, check)| !check.ok && !degraded.contains(name))
        .map(|(name, _)| name.as_str())
        .collect();
    if failing.is_empty() {
        return Json(Readiness {
            status: "ready".to_owned(),
            checks,
            degraded,
        })
        .into_response();
    }
    let message = format!("Not ready: {} unavailable.", failing.join(", "));
    let body = NotReady {
        error: ErrorDetail {
            code: "not_ready".to_owned(),
            message,
            request_id: current_request_id(),
        },
        checks,
        degraded,
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

fn ready_docs(op: TransformOperation) -> TransformOperation {
    op.id("get_readiness")
        .summary("Readiness: Postgres and storage answer; Redis, when down, is `degraded`")
        .response::<200, Json<Readiness>>()
        .response_with::<503, Json<NotReady>, _>(|r| {
            r.description("A dependency is down; `checks` says which")
        })
}

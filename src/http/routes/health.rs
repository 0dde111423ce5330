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

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct CheckResult {
    pub ok: bool,
    pub latency_ms: f64,
    /// Why the check failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct Readiness {
    /// Always `ready`.
    pub status: String,
    /// One entry per dependency: `postgres`, `storage`, and `redis` when configured.
    pub checks: BTreeMap<String, CheckResult>,
}

/// The 503 body: the error envelope plus the same per-dependency checks.
#[derive(Serialize, Deserialize, JsonSchema)]
pub struct NotReady {
    pub error: ErrorDetail,
    pub checks: BTreeMap<String, CheckResult>,
}

async fn run_check<F, E>(check: F) -> CheckResult
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let started = Instant::now();
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, check).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(err.to_string()),
        Err(_) => Some(format!("no answer within {CHECK_TIMEOUT:?}")),
    };
    CheckResult {
        ok: error.is_none(),
        latency_ms,
        error,
    }
}

async fn ready(State(state): State<AppState>) -> Response {
    let postgres = run_check(crate::db::ping(&state.db));
    let storage = run_check(state.storage.check());
    let redis = async {
        match &state.ephemeral {
            crate::ephemeral::Ephemeral::Redis(_) => Some(run_check(state.ephemeral.ping()).await),
            crate::ephemeral::Ephemeral::InProcess(_) => None,
        }
    };
    let (postgres, storage, redis) = tokio::join!(postgres, storage, redis);

    let mut checks = BTreeMap::from([
        ("postgres".to_owned(), postgres),
        ("storage".to_owned(), storage),
    ]);
    if let Some(redis) = redis {
        checks.insert("redis".to_owned(), redis);
    }
    let failing: Vec<&str> = checks
        .iter()
        .filter(|(_, check)| !check.ok)
        .map(|(name, _)| name.as_str())
        .collect();
    if failing.is_empty() {
        return Json(Readiness {
            status: "ready".to_owned(),
            checks,
        })
        .into_response();
    }
    let message = format!("Not ready: {} unavailable.", failing.join(", "));
    tracing::warn!(%message, "readiness check failed");
    let body = NotReady {
        error: ErrorDetail {
            code: "not_ready".to_owned(),
            message,
            request_id: current_request_id(),
        },
        checks,
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

fn ready_docs(op: TransformOperation) -> TransformOperation {
    op.id("get_readiness")
        .summary("Readiness: Postgres, storage and (when configured) Redis answer")
        .response::<200, Json<Readiness>>()
        .response_with::<503, Json<NotReady>, _>(|r| {
            r.description("A dependency is down; `checks` says which")
        })
}

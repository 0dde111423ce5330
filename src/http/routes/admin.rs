//! `/api/v1/admin`: the dead-letter queue, for admins only.

use aide::{
    OperationInput,
    axum::{
        ApiRouter,
        routing::{get_with, post_with},
    },
    generate::GenContext,
    openapi::Operation,
    transform::TransformOperation,
};
use axum::{
    extract::{FromRequestParts, State},
    http::{StatusCode, request::Parts},
};
use chrono::{DateTime, Datelike, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    db::dead_letter_jobs::DeadLetter,
    domain::{FailureReason, JobId, Role},
    http::{
        AppState,
        docs::error_responses,
        error::ApiError,
        extract::{CurrentUser, Json, Path, Query},
        pagination::PageParams,
        routes::jobs::{JobOut, JobPath},
    },
};

pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route("/failed-jobs", get_with(list_failed_jobs, list_docs))
        .api_route(
            "/failed-jobs/depth",
            get_with(get_failed_jobs_depth, depth_docs),
        )
        .api_route(
            "/failed-jobs/{id}/requeue",
            post_with(requeue_failed_job, requeue_docs),
        )
        .with_path_items(|item| item.tag("admin"))
}

/// An authenticated admin. The role is read from the database on every
/// request, so a demotion takes effect at once.
pub struct CurrentAdmin;

impl FromRequestParts<AppState> for CurrentAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let CurrentUser(access) = CurrentUser::from_request_parts(parts, state).await?;
        let user = state.auth.current_user(&access).await?;
        if user.role != Role::Admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "This endpoint is for administrators.",
            ));
        }
        Ok(Self)
    }
}

impl OperationInput for CurrentAdmin {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        CurrentUser::operation_input(ctx, operation);
    }

    fn inferred_early_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<aide::openapi::StatusCode>, aide::openapi::Response)> {
        CurrentUser::inferred_early_responses(ctx, operation)
    }
}

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct DeadLetterOut {
    pub job_id: Uuid,
    pub owner_id: Uuid,
    pub document_id: Uuid,
    pub reason: String,
    pub error: String,
    pub attempts: i32,
    pub failed_at: DateTime<Utc>,
}

impl From<DeadLetter> for DeadLetterOut {
    fn from(d: DeadLetter) -> Self {
        Self {
            job_id: d.job_id.0,
            owner_id: d.owner_id.0,
            document_id: d.document_id.0,
            reason: d.reason,
            error: d.error,
            attempts: d.attempts,
            failed_at: d.failed_at,
        }
    }
}

#[derive(Deserialize, JsonSchema)]
pub struct FailedJobParams {
    pub reason: Option<FailureReason>,
    /// Only failures at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Page size, 1–100 (default 20).
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<i64>,
    /// Items to skip (default 0, at most 10,000).
    #[schemars(range(min = 0, max = 10_000))]
    pub offset: Option<i64>,
}

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct DeadLetterPage {
    /// Newest failure first.
    pub items: Vec<DeadLetterOut>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

async fn list_failed_jobs(
    State(state): State<AppState>,
    _admin: CurrentAdmin,
    Query(params): Query<FailedJobParams>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    let (limit, offset) = PageParams {
        limit: params.limit,
        offset: params.offset,
    }
    .resolve()?;
    // chrono reads years of any length; Postgres stores 4713 BC to 294276 AD.
    if params
        .since
        .is_some_and(|since| !(1..=9999).contains(&since.year()))
    {
        return Err(ApiError::unprocessable(
            "since must be a date between the years 1 and 9999",
        ));
    }
    let (items, total) = state
        .jobs
        .dead_letters(params.reason, params.since, limit, offset)
        .await?;
    Ok(Json(DeadLetterPage {
        items: items.into_iter().map(Into::into).collect(),
        total,
        limit,
        offset,
    }))
}

fn list_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("list_failed_jobs")
            .summary("Dead-letter queue entries (admin)")
            .response::<200, Json<DeadLetterPage>>(),
        &[400, 403, 422],
    )
}

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct Depth {
    pub depth: i64,
}

async fn get_failed_jobs_depth(
    State(state): State<AppState>,
    _admin: CurrentAdmin,
) -> Result<Json<Depth>, ApiError> {
    Ok(Json(Depth {
        depth: state.jobs.dead_letter_depth().await?,
    }))
}

fn depth_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("get_failed_jobs_depth")
            .summary("How many jobs are in the dead-letter queue (admin)")
            .response::<200, Json<Depth>>(),
        &[403],
    )
}

async fn requeue_failed_job(
    State(state): State<AppState>,
    _admin: CurrentAdmin,
    Path(path): Path<JobPath>,
) -> Result<Json<JobOut>, ApiError> {
    let job = state.jobs.requeue(JobId(path.id)).await?;
    tracing::info!(job_id = %job.id, "failed job requeued");
    Ok(Json(job.into()))
}

fn requeue_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("requeue_failed_job")
            .summary("Reset a failed job and run it again (admin)")
            .response::<200, Json<JobOut>>(),
        &[403, 404, 409],
    )
}

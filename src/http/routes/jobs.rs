//! `/api/v1/jobs`: create (idempotent), list, detail.

use aide::{
    axum::{
        ApiRouter,
        routing::{get_with, post_with},
    },
    transform::TransformOperation,
};
use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, Utc};
use docflow_worker::ExtractionResult;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    db::{jobs::Job, processing_results::ProcessingResult},
    domain::{DocumentId, IdempotencyKey, JobId, JobStatus},
    http::{
        AppState,
        docs::error_responses,
        error::ApiError,
        extract::{CurrentUser, Json, Path, Query},
        pagination::PageParams,
    },
    jobs::{Creation, JobError},
};

pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/",
            post_with(create_job, create_docs).get_with(list_jobs, list_docs),
        )
        .api_route("/{id}", get_with(get_job, get_docs))
        .with_path_items(|item| item.tag("jobs"))
}

impl From<JobError> for ApiError {
    fn from(err: JobError) -> Self {
        match err {
            JobError::NotFound => ApiError::not_found("No such job."),
            JobError::DocumentNotFound => ApiError::not_found("No such document."),
            JobError::NoResult => ApiError::not_found("This document has no result yet."),
            JobError::KeyReused => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "This Idempotency-Key was already used for a different document.",
            ),
            JobError::NotFailed(status) => ApiError::new(
                StatusCode::CONFLICT,
                "job_not_failed",
                format!("Only failed jobs can be requeued; this one is {status}."),
            ),
            JobError::Queue(err) => ApiError::internal(err),
            JobError::Database(err) => ApiError::database(err),
        }
    }
}

#[derive(Deserialize, JsonSchema)]
pub struct CreateJob {
    pub document_id: Uuid,
}

/// A stored extraction result.
#[derive(Serialize, Deserialize, JsonSchema)]
pub struct ResultOut {
    pub job_id: Uuid,
    pub document_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub result: ExtractionResult,
}

impl TryFrom<ProcessingResult> for ResultOut {
    type Error = ApiError;

    fn try_from(stored: ProcessingResult) -> Result<Self, ApiError> {
        Ok(Self {
            job_id: stored.job_id.0,
            document_id: stored.document_id.0,
            created_at: stored.created_at,
            result: serde_json::from_value(stored.result).map_err(ApiError::internal)?,
        })
    }
}

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct JobOut {
    pub id: Uuid,
    pub document_id: Uuid,
    pub status: JobStatus,
    pub attempts: i32,
    pub max_attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Present on job detail once the job has succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultOut>,
}

impl From<Job> for JobOut {
    fn from(job: Job) -> Self {
        Self {
            id: job.id.0,
            document_id: job.document_id.0,
            status: job.status,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            last_error: job.last_error,
            created_at: job.created_at,
            updated_at: job.updated_at,
            started_at: job.started_at,
            completed_at: job.completed_at,
            result: None,
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let raw = value
        .to_str()
        .map_err(|_| ApiError::unprocessable("Idempotency-Key: must be visible ASCII"))?;
    Ok(Some(IdempotencyKey::parse(raw)?))
}

async fn create_job(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    headers: HeaderMap,
    Json(body): Json<CreateJob>,
) -> Result<(StatusCode, Json<JobOut>), ApiError> {
    let key = idempotency_key(&headers)?;
    let (job, creation) = state
        .jobs
        .create(
            user.user_id,
            DocumentId(body.document_id),
            key.as_ref(),
            // This request's span (which continues the caller's trace, if
            // any): the worker parents its run on it.
            crate::telemetry::current_traceparent().as_deref(),
        )
        .await?;
    let status = match creation {
        Creation::Created => {
            tracing::info!(job_id = %job.id, document_id = %job.document_id, "job created");
            crate::metrics::job_created("created");
            StatusCode::CREATED
        }
        Creation::Replayed => {
            crate::metrics::job_created("idempotent_replay");
            StatusCode::OK
        }
    };
    Ok((status, Json(job.into())))
}

fn create_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("create_job")
            .summary("Start processing a document")
            .description(
                "With an `Idempotency-Key` header, a repeat of the same request within the key's \
                 lifetime returns the same job with 200 instead of creating another; the same key \
                 with another document is 409.",
            )
            .response_with::<201, Json<JobOut>, _>(|r| r.description("Created"))
            .response_with::<200, Json<JobOut>, _>(|r| {
                r.description("Replayed: the job this key already created")
            }),
        &[400, 404, 409, 415, 422],
    )
}

#[derive(Deserialize, JsonSchema)]
pub struct JobListParams {
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Page size, 1–100 (default 20).
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    #[schemars(range(min = 0))]
    pub offset: Option<i64>,
}

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct JobPage {
    /// Newest first.
    pub items: Vec<JobOut>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

async fn list_jobs(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Query(params): Query<JobListParams>,
) -> Result<Json<JobPage>, ApiError> {
    let (limit, offset) = PageParams {
        limit: params.limit,
        offset: params.offset,
    }
    .resolve()?;
    let (jobs, total) = state
        .jobs
        .list(user.user_id, params.status, limit, offset)
        .await?;
    Ok(Json(JobPage {
        items: jobs.into_iter().map(Into::into).collect(),
        total,
        limit,
        offset,
    }))
}

fn list_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("list_jobs")
            .summary("The caller's jobs, newest first")
            .response::<200, Json<JobPage>>(),
        &[400, 422],
    )
}

#[derive(Deserialize, JsonSchema)]
pub struct JobPath {
    pub id: Uuid,
}

async fn get_job(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(path): Path<JobPath>,
) -> Result<Json<JobOut>, ApiError> {
    let job = state.jobs.get(user.user_id, JobId(path.id)).await?;
    let result = if job.status.is_terminal() {
        state
            .jobs
            .result_of(&job)
            .await?
            .map(ResultOut::try_from)
            .transpose()?
    } else {
        None
    };
    let mut out = JobOut::from(job);
    out.result = result;
    Ok(Json(out))
}

fn get_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("get_job")
            .summary("One of the caller's jobs, with its result once it has succeeded")
            .response::<200, Json<JobOut>>(),
        &[404],
    )
}

//! `/api/v1/jobs`: create (idempotent), list, detail, cancel.

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
use docflow_extract::ExtractionResult;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    db::jobs::ListFilter,
    db::jobs::{Job, ProcessingResult},
    domain::{DocumentId, IdempotencyKey, JobId, JobStatus, OcrMode, Priority},
    http::{
        AppState,
        docs::error_responses,
        error::ApiError,
        extract::{CurrentUser, Json, Path, Query},
        pagination::{PageParams, decode_cursor, encode_cursor},
    },
    jobs::{Creation, JobError, NewJobOptions, Page},
};

pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/",
            post_with(create_job, create_docs).get_with(list_jobs, list_docs),
        )
        .api_route("/{id}", get_with(get_job, get_docs))
        .api_route("/{id}/cancel", post_with(cancel_job, cancel_docs))
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
            JobError::NotRequeueable(status) => ApiError::new(
                StatusCode::CONFLICT,
                "job_not_failed",
                format!("Only failed or cancelled jobs can be requeued; this one is {status}."),
            ),
            JobError::AlreadyFinished(status) => ApiError::new(
                StatusCode::CONFLICT,
                "job_finished",
                format!(
                    "The job has already {}.",
                    match status {
                        JobStatus::Succeeded => "succeeded",
                        JobStatus::Failed => "failed",
                        _ => "been cancelled",
                    }
                ),
            ),
            JobError::Database(err) => ApiError::database(err),
        }
    }
}

#[derive(Deserialize, JsonSchema)]
pub struct CreateJob {
    pub document_id: Uuid,
    /// Order among your own queued jobs: -10 to 10, higher first (default
    /// 0). Other users' jobs are interleaved with yours whatever it is.
    #[schemars(range(min = -10, max = 10))]
    #[serde(default, deserialize_with = "integral")]
    pub priority: Option<i64>,
    /// Which PDF pages are read by OCR: `auto` (default) those without a
    /// usable text layer, `off` none (and images are not OCR'd), `force`
    /// every page.
    #[serde(default)]
    pub ocr: OcrMode,
    /// The languages OCR reads, as tesseract codes joined by `+`
    /// (`eng+deu`); each must be among the server's OCR_LANGUAGES. Absent:
    /// all of those.
    #[schemars(regex(pattern = crate::domain::OcrLanguages::PATTERN))]
    pub ocr_languages: Option<String>,
}

/// An optional JSON integer, written either way JSON Schema counts as one:
/// `7` or `7.0`.
fn integral<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    number
        .as_i64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 2f64.powi(53))
                .map(|f| f as i64)
        })
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("{number} is not an integer")))
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
    pub priority: i16,
    /// Which PDF pages the job reads by OCR.
    pub ocr: OcrMode,
    /// The languages its OCR reads; `null`: the server's OCR_LANGUAGES.
    pub ocr_languages: Option<String>,
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
            priority: job.priority,
            ocr: job.ocr,
            ocr_languages: job.ocr_languages,
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
    let priority = body
        .priority
        .map(Priority::parse)
        .transpose()?
        .unwrap_or_default();
    let ocr_languages = body
        .ocr_languages
        .as_deref()
        .map(|raw| state.jobs.ocr_languages(raw))
        .transpose()?;
    // This request's span (which continues the caller's trace, if any):
    // the worker parents its run on it.
    let traceparent = crate::telemetry::current_traceparent();
    let request_id = crate::http::request_id::current_request_id();
    let options = NewJobOptions {
        idempotency_key: key.as_ref(),
        priority,
        ocr: body.ocr,
        ocr_languages: ocr_languages.as_ref(),
        traceparent: traceparent.as_deref(),
        request_id: Some(&request_id),
    };
    let (job, creation) = state
        .jobs
        .create(user.user_id, DocumentId(body.document_id), &options)
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
    /// Only the jobs of this document.
    pub document_id: Option<Uuid>,
    /// Page size, 1–100 (default 20).
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<i64>,
    /// Items to skip (default 0, at most 10,000; use `cursor` to go further).
    #[schemars(range(min = 0, max = 10_000))]
    pub offset: Option<i64>,
    /// Continue after the page that handed out this `next_cursor`.
    #[schemars(regex(pattern = crate::http::pagination::CURSOR_PATTERN))]
    pub cursor: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct JobPage {
    /// Newest first.
    pub items: Vec<JobOut>,
    /// Matching jobs, counted up to 1,000.
    pub total: i64,
    /// False when there are more than `total` (the count stops at 1,000, so
    /// a long history never slows a page down).
    pub total_exact: bool,
    pub limit: i64,
    pub offset: i64,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
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
    let after = params.cursor.as_deref().map(decode_cursor).transpose()?;
    let filter = ListFilter {
        status: params.status,
        document: params.document_id.map(DocumentId),
    };
    let page = state
        .jobs
        .list(
            user.user_id,
            filter,
            Page {
                limit,
                offset,
                after,
            },
        )
        .await?;
    Ok(Json(JobPage {
        items: page.items.into_iter().map(Into::into).collect(),
        total: page.total,
        total_exact: page.total_exact,
        limit,
        offset,
        next_cursor: page.next.as_ref().map(encode_cursor),
    }))
}

fn list_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("list_jobs")
            .summary("The caller's jobs, newest first")
            .description(
                "Page with `cursor` (each page's `next_cursor`): every page costs the same, \
                 however long the history. `offset` still works, up to 10,000.",
            )
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

async fn cancel_job(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(path): Path<JobPath>,
) -> Result<Json<JobOut>, ApiError> {
    let job = state.jobs.cancel(user.user_id, JobId(path.id)).await?;
    tracing::info!(job_id = %job.id, "job cancelled");
    Ok(Json(job.into()))
}

fn cancel_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("cancel_job")
            .summary("Cancel one of the caller's jobs")
            .description(
                "A queued job is cancelled at once; a running one too, and its extraction is \
                 stopped within a second. Final: a cancelled job runs again only if an admin \
                 requeues it. 409 once the job has finished.",
            )
            .response::<200, Json<JobOut>>(),
        &[404, 409],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_is_any_json_integer() {
        let parse = |body: &str| serde_json::from_str::<CreateJob>(body).map(|b| b.priority);
        let doc = r#""document_id":"00000000-0000-0000-0000-000000000001""#;
        assert_eq!(parse(&format!("{{{doc}}}")).expect("absent"), None);
        assert_eq!(
            parse(&format!("{{{doc},\"priority\":null}}")).expect("null"),
            None
        );
        assert_eq!(
            parse(&format!("{{{doc},\"priority\":-3}}")).expect("int"),
            Some(-3)
        );
        assert_eq!(
            parse(&format!("{{{doc},\"priority\":7.0}}")).expect("7.0"),
            Some(7)
        );
        assert!(parse(&format!("{{{doc},\"priority\":7.5}}")).is_err());
        assert!(parse(&format!("{{{doc},\"priority\":\"7\"}}")).is_err());
    }
}

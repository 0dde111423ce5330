//! The `jobs` table. Reads for clients are scoped to an owner; the worker's
//! state transitions take `&mut PgConnection` so they run inside the
//! caller's transaction, next to the event and queue writes they go with.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use crate::domain::{DocumentId, JobId, JobStatus, UserId};

pub const IDEMPOTENCY_UNIQUE: &str = "jobs_owner_idempotency_key";

#[derive(Debug, Clone)]
pub struct Job {
    pub id: JobId,
    pub owner_id: UserId,
    pub document_id: DocumentId,
    pub status: JobStatus,
    pub attempts: i32,
    pub max_attempts: i32,
    pub last_error: Option<String>,
    pub traceparent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

struct JobRow {
    id: JobId,
    owner_id: UserId,
    document_id: DocumentId,
    status: String,
    attempts: i32,
    max_attempts: i32,
    last_error: Option<String>,
    traceparent: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
}

impl TryFrom<JobRow> for Job {
    type Error = sqlx::Error;

    fn try_from(row: JobRow) -> Result<Self, Self::Error> {
        Ok(Self {
            id: row.id,
            owner_id: row.owner_id,
            document_id: row.document_id,
            status: row
                .status
                .parse()
                .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
            attempts: row.attempts,
            max_attempts: row.max_attempts,
            last_error: row.last_error,
            traceparent: row.traceparent,
            created_at: row.created_at,
            updated_at: row.updated_at,
            started_at: row.started_at,
            completed_at: row.completed_at,
        })
    }
}

fn convert(row: Option<JobRow>) -> Result<Option<Job>, sqlx::Error> {
    row.map(Job::try_from).transpose()
}

pub struct NewJob<'a> {
    pub id: JobId,
    pub owner_id: UserId,
    pub document_id: DocumentId,
    pub max_attempts: i32,
    pub idempotency_key: Option<&'a str>,
    pub idempotency_expires_at: Option<DateTime<Utc>>,
    pub traceparent: Option<&'a str>,
}

/// Inserts a queued job; `None` when the owner already holds this
/// idempotency key (the caller then reads that job instead). A concurrent
/// insert with the same key waits for the other transaction and then
/// returns `None`, so one key makes one job.
pub async fn insert(conn: &mut PgConnection, new: &NewJob<'_>) -> Result<Option<Job>, sqlx::Error> {
    let row = sqlx::query_as!(
        JobRow,
        r#"INSERT INTO jobs (id, owner_id, document_id, status, max_attempts,
                             idempotency_key, idempotency_expires_at, traceparent)
           VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7)
           ON CONFLICT (owner_id, idempotency_key) DO NOTHING
           RETURNING id AS "id: JobId", owner_id AS "owner_id: UserId",
                     document_id AS "document_id: DocumentId", status, attempts, max_attempts,
                     last_error, traceparent, created_at, updated_at, started_at, completed_at"#,
        new.id.0,
        new.owner_id.0,
        new.document_id.0,
        new.max_attempts,
        new.idempotency_key,
        new.idempotency_expires_at,
        new.traceparent,
    )
    .fetch_optional(conn)
    .await?;
    convert(row)
}

/// Frees an owner's idempotency key whose time is up, so it can name a new job.
pub async fn release_expired_key(
    conn: &mut PgConnection,
    owner: UserId,
    key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE jobs SET idempotency_key = NULL, idempotency_expires_at = NULL
           WHERE owner_id = $1 AND idempotency_key = $2 AND idempotency_expires_at <= now()"#,
        owner.0,
        key,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn find_by_key(
    db: impl PgExecutor<'_>,
    owner: UserId,
    key: &str,
) -> Result<Option<Job>, sqlx::Error> {
    let row = sqlx::query_as!(
        JobRow,
        r#"SELECT id AS "id: JobId", owner_id AS "owner_id: UserId",
                  document_id AS "document_id: DocumentId", status, attempts, max_attempts,
                  last_error, traceparent, created_at, updated_at, started_at, completed_at
           FROM jobs WHERE owner_id = $1 AND idempotency_key = $2"#,
        owner.0,
        key,
    )
    .fetch_optional(db)
    .await?;
    convert(row)
}

pub async fn find_owned(
    db: impl PgExecutor<'_>,
    owner: UserId,
    id: JobId,
) -> Result<Option<Job>, sqlx::Error> {
    let row = sqlx::query_as!(
        JobRow,
        r#"SELECT id AS "id: JobId", owner_id AS "owner_id: UserId",
                  document_id AS "document_id: DocumentId", status, attempts, max_attempts,
                  last_error, traceparent, created_at, updated_at, started_at, completed_at
           FROM jobs WHERE id = $1 AND owner_id = $2"#,
        id.0,
        owner.0,
    )
    .fetch_optional(db)
    .await?;
    convert(row)
}

/// One page of an owner's jobs (optionally of one status), newest first,
/// and the matching total.
pub async fn list_owned(
    db: impl PgExecutor<'_> + Copy,
    owner: UserId,
    status: Option<JobStatus>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Job>, i64), sqlx::Error> {
    let status = status.map(JobStatus::as_str);
    let rows = sqlx::query_as!(
        JobRow,
        r#"SELECT id AS "id: JobId", owner_id AS "owner_id: UserId",
                  document_id AS "document_id: DocumentId", status, attempts, max_attempts,
                  last_error, traceparent, created_at, updated_at, started_at, completed_at
           FROM jobs
           WHERE owner_id = $1 AND ($2::text IS NULL OR status = $2)
           ORDER BY created_at DESC, id DESC
           LIMIT $3 OFFSET $4"#,
        owner.0,
        status,
        limit,
        offset,
    )
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM jobs WHERE owner_id = $1 AND ($2::text IS NULL OR status = $2)"#,
        owner.0,
        status,
    )
    .fetch_one(db)
    .await?;
    Ok((
        rows.into_iter()
            .map(Job::try_from)
            .collect::<Result<_, _>>()?,
        total,
    ))
}

/// Locks the job for the rest of the transaction: the worker and an admin
/// requeue never interleave their transitions.
pub async fn lock(conn: &mut PgConnection, id: JobId) -> Result<Option<Job>, sqlx::Error> {
    let row = sqlx::query_as!(
        JobRow,
        r#"SELECT id AS "id: JobId", owner_id AS "owner_id: UserId",
                  document_id AS "document_id: DocumentId", status, attempts, max_attempts,
                  last_error, traceparent, created_at, updated_at, started_at, completed_at
           FROM jobs WHERE id = $1 FOR UPDATE"#,
        id.0,
    )
    .fetch_optional(conn)
    .await?;
    convert(row)
}

/// Starts an attempt: `processing`, one more attempt. Returns the new count.
pub async fn start_attempt(conn: &mut PgConnection, id: JobId) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar!(
        r#"UPDATE jobs SET status = 'processing', attempts = attempts + 1,
                  started_at = now(), updated_at = now()
           WHERE id = $1 RETURNING attempts"#,
        id.0,
    )
    .fetch_one(conn)
    .await
}

pub async fn set_succeeded(conn: &mut PgConnection, id: JobId) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE jobs SET status = 'succeeded', last_error = NULL,
                  completed_at = now(), updated_at = now()
           WHERE id = $1"#,
        id.0,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_failed(
    conn: &mut PgConnection,
    id: JobId,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE jobs SET status = 'failed', last_error = $2,
                  completed_at = now(), updated_at = now()
           WHERE id = $1"#,
        id.0,
        error,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Back to `queued` after a transient failure, waiting for its retry.
pub async fn set_retry_pending(
    conn: &mut PgConnection,
    id: JobId,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE jobs SET status = 'queued', last_error = $2, updated_at = now()
           WHERE id = $1"#,
        id.0,
        error,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A failed job, fresh again: no attempts, no error, no completion.
pub async fn reset_for_requeue(conn: &mut PgConnection, id: JobId) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE jobs SET status = 'queued', attempts = 0, last_error = NULL,
                  started_at = NULL, completed_at = NULL, updated_at = now()
           WHERE id = $1"#,
        id.0,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks the document's jobs for the rest of the transaction and says
/// whether one is working on it right now (delete refuses then).
pub async fn lock_for_document_delete(
    conn: &mut PgConnection,
    document: DocumentId,
) -> Result<bool, sqlx::Error> {
    let statuses = sqlx::query_scalar!(
        "SELECT status FROM jobs WHERE document_id = $1 FOR UPDATE",
        document.0
    )
    .fetch_all(conn)
    .await?;
    Ok(statuses.iter().any(|status| status == "processing"))
}

/// What the queue gauges show: one query over the active jobs (a partial
/// index) and the dead-letter table.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueStats {
    pub queued: i64,
    pub processing: i64,
    /// Seconds the longest-waiting queued job has waited; 0 when none.
    pub oldest_queued_age_secs: f64,
    pub dead_letters: i64,
}

pub async fn queue_stats(db: impl PgExecutor<'_>) -> Result<QueueStats, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT
             count(*) FILTER (WHERE status = 'queued') AS "queued!",
             count(*) FILTER (WHERE status = 'processing') AS "processing!",
             coalesce(extract(epoch FROM now() - min(updated_at) FILTER (WHERE status = 'queued')), 0)::float8 AS "oldest_queued_age_secs!",
             (SELECT count(*) FROM dead_letter_jobs) AS "dead_letters!"
           FROM jobs WHERE status IN ('queued', 'processing')"#
    )
    .fetch_one(db)
    .await?;
    Ok(QueueStats {
        queued: row.queued,
        processing: row.processing,
        oldest_queued_age_secs: row.oldest_queued_age_secs,
        dead_letters: row.dead_letters,
    })
}

//! The `dead_letter_jobs` table: terminal failures, for operators.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use crate::domain::{DocumentId, FailureReason, JobId, UserId};

#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub job_id: JobId,
    pub owner_id: UserId,
    pub document_id: DocumentId,
    pub reason: String,
    pub error: String,
    pub attempts: i32,
    pub failed_at: DateTime<Utc>,
}

pub async fn insert(
    conn: &mut PgConnection,
    job_id: JobId,
    reason: FailureReason,
    error: &str,
    attempts: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO dead_letter_jobs (job_id, reason, error, attempts) VALUES ($1, $2, $3, $4)
           ON CONFLICT (job_id) DO UPDATE
           SET reason = EXCLUDED.reason, error = EXCLUDED.error,
               attempts = EXCLUDED.attempts, failed_at = now()"#,
        job_id.0,
        reason.as_str(),
        error,
        attempts,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete(conn: &mut PgConnection, job_id: JobId) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM dead_letter_jobs WHERE job_id = $1", job_id.0)
        .execute(conn)
        .await?;
    Ok(())
}

/// One page, newest first, filtered by reason and a lower bound on
/// `failed_at`, with the matching total.
pub async fn list(
    db: impl PgExecutor<'_> + Copy,
    reason: Option<FailureReason>,
    since: Option<DateTime<Utc>>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<DeadLetter>, i64), sqlx::Error> {
    let reason = reason.map(FailureReason::as_str);
    let rows = sqlx::query_as!(
        DeadLetter,
        r#"SELECT d.job_id AS "job_id: JobId", j.owner_id AS "owner_id: UserId",
                  j.document_id AS "document_id: DocumentId", d.reason, d.error, d.attempts, d.failed_at
           FROM dead_letter_jobs d JOIN jobs j ON j.id = d.job_id
           WHERE ($1::text IS NULL OR d.reason = $1) AND ($2::timestamptz IS NULL OR d.failed_at >= $2)
           ORDER BY d.failed_at DESC, d.job_id DESC
           LIMIT $3 OFFSET $4"#,
        reason,
        since,
        limit,
        offset,
    )
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM dead_letter_jobs
           WHERE ($1::text IS NULL OR reason = $1) AND ($2::timestamptz IS NULL OR failed_at >= $2)"#,
        reason,
        since,
    )
    .fetch_one(db)
    .await?;
    Ok((rows, total))
}

pub async fn depth(db: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM dead_letter_jobs"#)
        .fetch_one(db)
        .await
}

/// Adds dead letters imported from the original DocFlow (`rows`: a JSON
/// array of `{job_id, reason, error, attempts, failed_at}`) for imported
/// jobs that are failed here; a reason this schema does not know becomes
/// `unhandled`. Returns how many were added.
pub async fn import(db: impl PgExecutor<'_>, rows: &serde_json::Value) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        r#"INSERT INTO dead_letter_jobs (job_id, reason, error, attempts, failed_at)
           SELECT r.job_id,
                  CASE WHEN r.reason IN ('permanent', 'transient_exhausted', 'timeout', 'unhandled')
                       THEN r.reason ELSE 'unhandled' END,
                  coalesce(r.error, ''), coalesce(r.attempts, 0), coalesce(r.failed_at, now())
           FROM jsonb_to_recordset($1)
                AS r(job_id uuid, reason text, error text, attempts integer, failed_at timestamptz)
           WHERE EXISTS (SELECT 1 FROM jobs j WHERE j.id = r.job_id AND j.status = 'failed')
           ON CONFLICT DO NOTHING"#,
        rows,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

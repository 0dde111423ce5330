//! The `processing_results` table: at most one result per job.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use crate::domain::{DocumentId, JobId, UserId};

#[derive(Debug, Clone)]
pub struct ProcessingResult {
    pub job_id: JobId,
    pub document_id: DocumentId,
    pub result: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Records a job's result; a second write for the same job (a job that ran
/// twice) is ignored and reported as `false`.
pub async fn insert(
    conn: &mut PgConnection,
    job_id: JobId,
    document_id: DocumentId,
    result: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        r#"INSERT INTO processing_results (job_id, document_id, result) VALUES ($1, $2, $3)
           ON CONFLICT (job_id) DO NOTHING"#,
        job_id.0,
        document_id.0,
        result,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn for_job(
    db: impl PgExecutor<'_>,
    job_id: JobId,
) -> Result<Option<ProcessingResult>, sqlx::Error> {
    sqlx::query_as!(
        ProcessingResult,
        r#"SELECT job_id AS "job_id: JobId", document_id AS "document_id: DocumentId", result, created_at
           FROM processing_results WHERE job_id = $1"#,
        job_id.0,
    )
    .fetch_optional(db)
    .await
}

/// The newest result for an owner's document.
pub async fn latest_for_document(
    db: impl PgExecutor<'_>,
    owner: UserId,
    document_id: DocumentId,
) -> Result<Option<ProcessingResult>, sqlx::Error> {
    sqlx::query_as!(
        ProcessingResult,
        r#"SELECT r.job_id AS "job_id: JobId", r.document_id AS "document_id: DocumentId", r.result, r.created_at
           FROM processing_results r JOIN documents d ON d.id = r.document_id
           WHERE r.document_id = $1 AND d.owner_id = $2
           ORDER BY r.created_at DESC LIMIT 1"#,
        document_id.0,
        owner.0,
    )
    .fetch_optional(db)
    .await
}

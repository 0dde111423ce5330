//! The `job_events` table: each job's numbered status history.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::domain::{JobEventKind, JobId};

#[derive(Debug, Clone)]
pub struct JobEvent {
    pub job_id: JobId,
    pub seq: i32,
    pub status: JobEventKind,
    pub attempts: i32,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Events after `after_seq`, in order.
pub async fn list_after(
    db: impl PgExecutor<'_>,
    job_id: JobId,
    after_seq: i32,
) -> Result<Vec<JobEvent>, sqlx::Error> {
    sqlx::query_as!(
        JobEvent,
        r#"SELECT job_id AS "job_id: JobId", seq, status AS "status: JobEventKind", attempts, error, created_at
           FROM job_events WHERE job_id = $1 AND seq > $2 ORDER BY seq"#,
        job_id.0,
        after_seq,
    )
    .fetch_all(db)
    .await
}

/// The job's most recent event: its current state as a stream reports it.
pub async fn latest(
    db: impl PgExecutor<'_>,
    job_id: JobId,
) -> Result<Option<JobEvent>, sqlx::Error> {
    sqlx::query_as!(
        JobEvent,
        r#"SELECT job_id AS "job_id: JobId", seq, status AS "status: JobEventKind", attempts, error, created_at
           FROM job_events WHERE job_id = $1 ORDER BY seq DESC LIMIT 1"#,
        job_id.0,
    )
    .fetch_optional(db)
    .await
}

/// The most recent event of each of `jobs` (those with any): one statement
/// for every job a process's streams watch, one index probe per job.
pub async fn latest_of(
    db: impl PgExecutor<'_>,
    jobs: &[JobId],
) -> Result<Vec<JobEvent>, sqlx::Error> {
    let ids: Vec<uuid::Uuid> = jobs.iter().map(|job| job.0).collect();
    sqlx::query_as!(
        JobEvent,
        r#"SELECT e.job_id AS "job_id!: JobId", e.seq AS "seq!", e.status AS "status!: JobEventKind",
                  e.attempts AS "attempts!", e.error, e.created_at AS "created_at!"
           FROM unnest($1::uuid[]) AS watched(job_id)
           CROSS JOIN LATERAL (
               SELECT job_id, seq, status, attempts, error, created_at FROM job_events
               WHERE job_id = watched.job_id ORDER BY seq DESC LIMIT 1
           ) AS e"#,
        &ids,
    )
    .fetch_all(db)
    .await
}

//! The `job_events` table: each job's numbered status history. One row is
//! one event, except that the row of a run's end may also stand for that
//! run's start: a run that ended before its start was written records its
//! `processing` event (numbered `seq - 1`, at `processing_at`) on the row
//! of its end, one write instead of two. Readers here expand such a row,
//! so callers see every event, numbered as if each had its own row.

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

/// A `job_events` row as stored: one event, or two (see the module docs).
#[derive(Debug, Clone)]
pub struct EventRow {
    pub job_id: JobId,
    pub seq: i32,
    pub status: JobEventKind,
    pub attempts: i32,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Set when the row also records the run's `processing` event.
    pub processing_at: Option<DateTime<Utc>>,
}

impl EventRow {
    /// The events the row records, in order.
    pub fn events(self) -> impl Iterator<Item = JobEvent> {
        let start = self.processing_at.map(|at| JobEvent {
            job_id: self.job_id,
            seq: self.seq - 1,
            status: JobEventKind::Processing,
            attempts: self.attempts,
            error: None,
            created_at: at,
        });
        start.into_iter().chain(std::iter::once(JobEvent {
            job_id: self.job_id,
            seq: self.seq,
            status: self.status,
            attempts: self.attempts,
            error: self.error,
            created_at: self.created_at,
        }))
    }
}

/// Events after `after_seq`, in order.
pub async fn list_after(
    db: impl PgExecutor<'_>,
    job_id: JobId,
    after_seq: i32,
) -> Result<Vec<JobEvent>, sqlx::Error> {
    let rows = sqlx::query_as!(
        EventRow,
        r#"SELECT job_id AS "job_id: JobId", seq, status AS "status: JobEventKind", attempts, error,
                  created_at, processing_at
           FROM job_events WHERE job_id = $1 AND seq > $2 ORDER BY seq"#,
        job_id.0,
        after_seq,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .flat_map(EventRow::events)
        .filter(|event| event.seq > after_seq)
        .collect())
}

/// The job's most recent event: its current state as a stream reports it
/// (a row's own event is always its last).
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

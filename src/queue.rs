//! The Postgres queue that drives jobs: apalis-postgres's `apalis.jobs`
//! table, written in the caller's transaction (so a queue entry exists if and
//! only if the job change that needs it committed) and consumed by the worker
//! with `FOR UPDATE SKIP LOCKED`.
//!
//! Queue entries carry only a job id; everything else is read from `jobs`,
//! the source of truth, when the entry runs. A job may own several entries
//! over its life (a retry or a requeue pushes a new one).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::domain::JobId;

/// Fixed, never derived from a Rust type name: renaming a type must not
/// strand queued entries.
pub const QUEUE: &str = "docflow.process_document";

/// How often apalis itself may re-run an entry whose handler failed for an
/// infrastructure reason (Postgres unreachable mid-run). Effectively
/// unlimited: an entry apalis gives up on would strand its job, whose
/// attempts are counted and capped in `jobs`, not here.
const ENTRY_MAX_ATTEMPTS: usize = 1_000_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessDocument {
    pub job_id: JobId,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("encoding the queue payload: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("writing the queue entry: {0}")]
    Push(#[from] apalis_postgres::Error),
}

/// Enqueues `job_id` to run at `run_at` (now when `None`), inside the
/// caller's transaction. The entry's NOTIFY fires at commit.
pub async fn push(
    conn: &mut PgConnection,
    job_id: JobId,
    run_at: Option<DateTime<Utc>>,
) -> Result<(), QueueError> {
    use apalis::prelude::{TaskBuilder, TaskId};

    let payload = serde_json::to_vec(&ProcessDocument { job_id })?;
    let mut task = TaskBuilder::new(payload)
        .task_id(TaskId::from_ulid(ulid::Ulid::generate()))
        .max_attempts(ENTRY_MAX_ATTEMPTS);
    if let Some(run_at) = run_at {
        // apalis stores run_at in whole seconds; round up so a retry never
        // runs before its backoff has passed.
        let secs =
            u64::try_from(run_at.timestamp() + i64::from(run_at.timestamp_subsec_nanos() > 0))
                .unwrap_or(0);
        task = task.run_at_timestamp(secs);
    }
    apalis_postgres::queries::push_tasks(conn, QUEUE, vec![task.build()]).await?;
    Ok(())
}

/// Deletes finished queue entries older than `retention` (apalis does not
/// prune), and worker registrations that no entry references and that have
/// not been seen for as long. Returns the number of entries removed.
///
/// Runtime-checked SQL: this table belongs to apalis-postgres, whose schema
/// our offline query data does not describe.
pub async fn prune(db: &sqlx::PgPool, retention: std::time::Duration) -> Result<u64, sqlx::Error> {
    let retention_secs = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    let removed = sqlx::query(
        r#"DELETE FROM apalis.jobs
           WHERE job_type = $1
             AND (status IN ('Done', 'Killed') OR (status = 'Failed' AND attempts >= max_attempts))
             AND done_at < now() - make_interval(secs => $2)"#,
    )
    .bind(QUEUE)
    .bind(retention_secs as f64)
    .execute(db)
    .await?
    .rows_affected();
    sqlx::query(
        r#"DELETE FROM apalis.workers w
           WHERE w.worker_type = $1 AND w.last_seen < now() - make_interval(secs => $2)
             AND NOT EXISTS (SELECT 1 FROM apalis.jobs j WHERE j.lock_by = w.id)"#,
    )
    .bind(QUEUE)
    .bind(retention_secs.max(3600) as f64)
    .execute(db)
    .await?;
    Ok(removed)
}

/// Refreshes a worker's `last_seen`, the field orphan rescue reads.
pub async fn mark_worker_alive(db: &sqlx::PgPool, worker: &str) -> Result<(), sqlx::Error> {
    // Runtime-checked, like `prune`: apalis's table.
    sqlx::query("UPDATE apalis.workers SET last_seen = now() WHERE id = $1")
        .bind(worker)
        .execute(db)
        .await?;
    Ok(())
}

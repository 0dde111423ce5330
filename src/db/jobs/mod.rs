//! The `jobs` table, which is also the queue: a `queued` row that is due is
//! claimable. Reads for clients are scoped to an owner. The statements that
//! move jobs through the queue (claim, batched transitions, rescue) are in
//! [`queue`]; the ones an API request makes are here. Each transition is
//! one statement that also appends the job's event (numbered from
//! `jobs.event_seq`), so a job's status and its history cannot disagree.

pub mod queue;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::{DocumentId, JobEventKind, JobId, JobStatus, OcrMode, Priority, RunId, UserId};

use super::{Cursor, job_events::JobEvent};

pub const IDEMPOTENCY_UNIQUE: &str = "jobs_owner_idempotency_key";

/// Rows counted at most for a list's `total`: beyond it the total is a lower
/// bound (`total_exact: false`), so a long history never makes a page slow.
pub const COUNT_CAP: i64 = 1_000;

#[derive(Debug, Clone)]
pub struct Job {
    pub id: JobId,
    pub owner_id: UserId,
    pub document_id: DocumentId,
    pub status: JobStatus,
    pub priority: i16,
    pub ocr: OcrMode,
    pub ocr_languages: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub last_error: Option<String>,
    pub traceparent: Option<String>,
    pub run_id: Option<RunId>,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// The one select list of a [`Job`]: `select_job!("WHERE …", args…)` is
/// `query_as!` over it (sqlx joins literals written with `+`).
macro_rules! select_job {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Job,
            r#"SELECT id AS "id: JobId", owner_id AS "owner_id: UserId",
                      document_id AS "document_id: DocumentId", status AS "status: JobStatus",
                      priority, ocr AS "ocr: OcrMode", ocr_languages, attempts, max_attempts,
                      last_error,
                      traceparent,
                      run_id AS "run_id: RunId", run_at, created_at, updated_at, started_at,
                      completed_at
               FROM jobs "# + $tail
            $(, $arg)*
        )
    };
}

pub struct NewJob {
    pub id: JobId,
    pub owner_id: UserId,
    pub document_id: DocumentId,
    pub priority: Priority,
    pub ocr: OcrMode,
    pub ocr_languages: Option<String>,
    pub max_attempts: i32,
    pub idempotency_key: Option<String>,
    pub idempotency_expires_at: Option<DateTime<Utc>>,
    pub traceparent: Option<String>,
    /// The creating request's id, for the worker's log lines.
    pub request_id: Option<String>,
}

/// What [`insert_many`] did with one job.
#[derive(Debug)]
pub enum Inserted {
    /// The job and its `queued` event (seq 1).
    Created(Box<(Job, JobEvent)>),
    /// The owner has no such document.
    NoDocument,
    /// The owner already holds this idempotency key.
    KeyTaken,
}

/// Creates queued jobs, each for its owner's document, with their first
/// events, in one statement (one round trip, one transaction, one commit
/// for the lot): many requests' jobs share the cost of a commit. A job
/// whose document is not its owner's is skipped (`NoDocument`); one whose
/// key its owner already holds too (`KeyTaken`), so one key makes one job
/// even between concurrent requests. Committing wakes idle workers, once,
/// naming the owners who have new work.
///
/// A document deleted meanwhile fails the whole statement (a foreign-key
/// violation): the caller then inserts the jobs one by one.
pub async fn insert_many(
    db: impl PgExecutor<'_>,
    jobs: &[NewJob],
) -> Result<Vec<Inserted>, sqlx::Error> {
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id.0).collect();
    let owners: Vec<Uuid> = jobs.iter().map(|j| j.owner_id.0).collect();
    let documents: Vec<Uuid> = jobs.iter().map(|j| j.document_id.0).collect();
    let priorities: Vec<i16> = jobs.iter().map(|j| j.priority.get()).collect();
    let ocr: Vec<&str> = jobs.iter().map(|j| j.ocr.as_str()).collect();
    let languages: Vec<Option<String>> = jobs.iter().map(|j| j.ocr_languages.clone()).collect();
    let max_attempts: Vec<i32> = jobs.iter().map(|j| j.max_attempts).collect();
    let keys: Vec<Option<String>> = jobs.iter().map(|j| j.idempotency_key.clone()).collect();
    let expiries: Vec<Option<DateTime<Utc>>> =
        jobs.iter().map(|j| j.idempotency_expires_at).collect();
    let traces: Vec<Option<String>> = jobs.iter().map(|j| j.traceparent.clone()).collect();
    let requests: Vec<Option<String>> = jobs.iter().map(|j| j.request_id.clone()).collect();
    let rows = sqlx::query!(
        r#"WITH input AS (
               SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::smallint[], $5::int[],
                                    $6::text[], $7::timestamptz[], $8::text[], $9::text[],
                                    $10::text[], $11::text[])
                   AS t(id, owner_id, document_id, priority, max_attempts, idempotency_key,
                        idempotency_expires_at, traceparent, ocr, ocr_languages, request_id)
           ), owned AS (
               SELECT i.* FROM input i
               WHERE EXISTS (SELECT 1 FROM documents d
                             WHERE d.id = i.document_id AND d.owner_id = i.owner_id)
           ), job AS (
               INSERT INTO jobs (id, owner_id, document_id, status, priority, max_attempts,
                                 idempotency_key, idempotency_expires_at, traceparent, ocr,
                                 ocr_languages, request_id, event_seq)
               SELECT id, owner_id, document_id, 'queued', priority, max_attempts,
                      idempotency_key, idempotency_expires_at, traceparent, ocr, ocr_languages,
                      request_id, 1
               FROM owned
               ON CONFLICT (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
               RETURNING id, owner_id, created_at
           ), event AS (
               INSERT INTO job_events (job_id, seq, status, attempts, created_at)
               SELECT id, 1, 'queued', 0, created_at FROM job
           ), wake AS (
               SELECT pg_notify('docflow_jobs', string_agg(DISTINCT owner_id::text, ','))
               FROM job HAVING count(*) > 0
           )
           SELECT i.id AS "id!: JobId",
                  EXISTS (SELECT 1 FROM owned o WHERE o.id = i.id) AS "document_found!",
                  j.created_at AS "created_at?",
                  (SELECT count(*) FROM wake) AS "woken!"
           FROM input i LEFT JOIN job j ON j.id = i.id"#,
        &ids,
        &owners,
        &documents,
        &priorities,
        &max_attempts,
        &keys as &[Option<String>],
        &expiries as &[Option<DateTime<Utc>>],
        &traces as &[Option<String>],
        &ocr as &[&str],
        &languages as &[Option<String>],
        &requests as &[Option<String>],
    )
    .fetch_all(db)
    .await?;
    let by_id: std::collections::HashMap<JobId, (bool, Option<DateTime<Utc>>)> = rows
        .into_iter()
        .map(|r| (r.id, (r.document_found, r.created_at)))
        .collect();
    Ok(jobs
        .iter()
        .map(|new| match by_id.get(&new.id) {
            Some((_, Some(created_at))) => {
                let created_at = *created_at;
                let job = Job {
                    id: new.id,
                    owner_id: new.owner_id,
                    document_id: new.document_id,
                    status: JobStatus::Queued,
                    priority: new.priority.get(),
                    ocr: new.ocr,
                    ocr_languages: new.ocr_languages.clone(),
                    attempts: 0,
                    max_attempts: new.max_attempts,
                    last_error: None,
                    traceparent: new.traceparent.clone(),
                    run_id: None,
                    run_at: created_at,
                    created_at,
                    updated_at: created_at,
                    started_at: None,
                    completed_at: None,
                };
                let event = JobEvent {
                    job_id: new.id,
                    seq: 1,
                    status: JobEventKind::Queued,
                    attempts: 0,
                    error: None,
                    created_at,
                };
                Inserted::Created(Box::new((job, event)))
            }
            Some((true, None)) => Inserted::KeyTaken,
            _ => Inserted::NoDocument,
        })
        .collect())
}

/// Frees an owner's idempotency key whose time is up, so it can name a new
/// job. Returns whether one was freed.
pub async fn release_expired_key(
    db: impl PgExecutor<'_>,
    owner: UserId,
    key: &str,
) -> Result<bool, sqlx::Error> {
    let freed = sqlx::query!(
        r#"UPDATE jobs SET idempotency_key = NULL, idempotency_expires_at = NULL
           WHERE owner_id = $1 AND idempotency_key = $2 AND idempotency_expires_at <= now()"#,
        owner.0,
        key,
    )
    .execute(db)
    .await?;
    Ok(freed.rows_affected() > 0)
}

pub async fn find_by_key(
    db: impl PgExecutor<'_>,
    owner: UserId,
    key: &str,
) -> Result<Option<Job>, sqlx::Error> {
    select_job!("WHERE owner_id = $1 AND idempotency_key = $2", owner.0, key)
        .fetch_optional(db)
        .await
}

pub async fn find_owned(
    db: impl PgExecutor<'_>,
    owner: UserId,
    id: JobId,
) -> Result<Option<Job>, sqlx::Error> {
    select_job!("WHERE id = $1 AND owner_id = $2", id.0, owner.0)
        .fetch_optional(db)
        .await
}

/// A succeeded job's result (`jobs.result`, written by the update that
/// marked it succeeded).
#[derive(Debug, Clone)]
pub struct ProcessingResult {
    pub job_id: JobId,
    pub document_id: DocumentId,
    pub result: serde_json::Value,
    /// When the job succeeded.
    pub created_at: DateTime<Utc>,
}

/// The one select list of a [`ProcessingResult`], like [`select_job!`]'s.
macro_rules! select_result {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            ProcessingResult,
            r#"SELECT id AS "job_id: JobId", document_id AS "document_id: DocumentId",
                      result AS "result!",
                      coalesce(completed_at, updated_at) AS "created_at!"
               FROM jobs "# + $tail
            $(, $arg)*
        )
    };
}

/// The job's result, if it has one.
pub async fn result_of(
    db: impl PgExecutor<'_>,
    job_id: JobId,
) -> Result<Option<ProcessingResult>, sqlx::Error> {
    select_result!("WHERE id = $1 AND result IS NOT NULL", job_id.0)
        .fetch_optional(db)
        .await
}

/// The result of the owner's newest job of the document that has one:
/// newest by creation, through `jobs_document_idx`, which stops at the
/// first job with a result.
pub async fn latest_result_for_document(
    db: impl PgExecutor<'_>,
    owner: UserId,
    document_id: DocumentId,
) -> Result<Option<ProcessingResult>, sqlx::Error> {
    select_result!(
        "WHERE document_id = $1 AND owner_id = $2 AND result IS NOT NULL
         ORDER BY created_at DESC LIMIT 1",
        document_id.0,
        owner.0,
    )
    .fetch_optional(db)
    .await
}

/// Which of an owner's jobs a list shows.
#[derive(Debug, Clone, Copy)]
pub struct ListFilter {
    pub status: Option<JobStatus>,
    pub document: Option<DocumentId>,
}

/// One page of an owner's jobs, newest first: after `cursor` (keyset, as
/// cheap at page 1,000 as at page 1) or, for old clients, after skipping
/// `offset` rows. Both walk `jobs_owner_created_idx` (or the status index).
pub async fn list_owned(
    db: impl PgExecutor<'_>,
    owner: UserId,
    filter: ListFilter,
    after: Option<Cursor>,
    limit: i64,
    offset: i64,
) -> Result<Vec<Job>, sqlx::Error> {
    select_job!(
        r#"WHERE owner_id = $1
             AND ($2::text IS NULL OR status = $2)
             AND ($3::uuid IS NULL OR document_id = $3)
             AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5))
           ORDER BY created_at DESC, id DESC
           LIMIT $6 OFFSET $7"#,
        owner.0,
        filter.status.map(JobStatus::as_str),
        filter.document.map(|d| d.0),
        after.map(|c| c.created_at),
        after.map(|c| c.id),
        limit,
        offset,
    )
    .fetch_all(db)
    .await
}

/// How many jobs match, counting at most [`COUNT_CAP`] + 1 rows: the caller
/// reports a count above the cap as a lower bound.
pub async fn count_owned_capped(
    db: impl PgExecutor<'_>,
    owner: UserId,
    filter: ListFilter,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM (
               SELECT 1 FROM jobs
               WHERE owner_id = $1 AND ($2::text IS NULL OR status = $2)
                 AND ($3::uuid IS NULL OR document_id = $3)
               LIMIT $4
           ) AS capped"#,
        owner.0,
        filter.status.map(JobStatus::as_str),
        filter.document.map(|d| d.0),
        COUNT_CAP + 1,
    )
    .fetch_one(db)
    .await
}

/// Locks the job for the rest of the transaction, so an admin's requeue and
/// an owner's cancel never interleave with each other.
pub async fn lock(conn: &mut PgConnection, id: JobId) -> Result<Option<Job>, sqlx::Error> {
    select_job!("WHERE id = $1 FOR UPDATE", id.0)
        .fetch_optional(conn)
        .await
}

/// Applies a cancel (`state::Transition::Cancel`): `cancelled`, final, the
/// run (if any) ended, with its event. Guarded by the status the caller
/// locked, and NOTIFYing workers so the one holding it stops the run.
pub async fn cancel(
    conn: &mut PgConnection,
    id: JobId,
    from: JobStatus,
) -> Result<Option<(Job, JobEvent)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"WITH earlier AS (
               SELECT owner_id, lease_owner IS NOT NULL AS leased FROM jobs WHERE id = $1
           ), job AS (
               UPDATE jobs SET status = 'cancelled', run_id = NULL, lease_owner = NULL,
                      completed_at = now(), updated_at = now(), event_seq = event_seq + 1
               WHERE id = $1 AND status = $2
               RETURNING id, event_seq, attempts, updated_at
           ), unload AS (
               INSERT INTO queue_owner_load (owner_id, counter, leases)
               SELECT owner_id, 'returned', 1 FROM earlier
               WHERE earlier.leased AND EXISTS (SELECT 1 FROM job)
               ON CONFLICT (owner_id, counter) DO UPDATE
               SET leases = queue_owner_load.leases + 1
           ), event AS (
               INSERT INTO job_events (job_id, seq, status, attempts, created_at)
               SELECT id, event_seq, 'cancelled', attempts, updated_at FROM job
           ), notify AS (
               SELECT pg_notify('docflow_cancel', $1::text) FROM job
           )
           SELECT job.event_seq, job.attempts, job.updated_at, (SELECT count(*) FROM notify) AS "notified!"
           FROM job"#,
        id.0,
        from.as_str(),
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let event = JobEvent {
        job_id: id,
        seq: row.event_seq,
        status: JobEventKind::Cancelled,
        attempts: row.attempts,
        error: None,
        created_at: row.updated_at,
    };
    let job = lock(conn, id).await?;
    Ok(job.map(|job| (job, event)))
}

/// Applies an admin's requeue (`state::Transition::Reset`): `queued` now,
/// no attempts, no error, its dead-letter record gone, with its event.
pub async fn reset(
    conn: &mut PgConnection,
    id: JobId,
    from: JobStatus,
) -> Result<Option<(Job, JobEvent)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"WITH job AS (
               UPDATE jobs SET status = 'queued', attempts = 0, last_error = NULL,
                      run_at = now(), started_at = NULL, completed_at = NULL,
                      updated_at = now(), event_seq = event_seq + 1
               WHERE id = $1 AND status = $2
               RETURNING id, owner_id, event_seq, updated_at
           ), event AS (
               INSERT INTO job_events (job_id, seq, status, attempts, created_at)
               SELECT id, event_seq, 'requeued', 0, updated_at FROM job
           ), dead AS (
               DELETE FROM dead_letter_jobs WHERE job_id IN (SELECT id FROM job)
           ), wake AS (
               SELECT pg_notify('docflow_jobs', owner_id::text) FROM job
           )
           SELECT event_seq, updated_at, (SELECT count(*) FROM wake) AS "woken!" FROM job"#,
        id.0,
        from.as_str(),
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let event = JobEvent {
        job_id: id,
        seq: row.event_seq,
        status: JobEventKind::Requeued,
        attempts: 0,
        error: None,
        created_at: row.updated_at,
    };
    let job = lock(conn, id).await?;
    Ok(job.map(|job| (job, event)))
}

/// Locks the document's jobs for the rest of the transaction and says
/// whether one is working on it right now (delete refuses then).
pub async fn lock_for_document_delete(
    conn: &mut PgConnection,
    document: DocumentId,
) -> Result<bool, sqlx::Error> {
    let statuses = sqlx::query_scalar!(
        r#"SELECT status AS "status: JobStatus" FROM jobs WHERE document_id = $1 FOR UPDATE"#,
        document.0
    )
    .fetch_all(conn)
    .await?;
    Ok(statuses.contains(&JobStatus::Processing))
}

/// What the queue gauges show: one query over the active jobs (partial
/// indexes) and the dead-letter table.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueStats {
    pub queued: i64,
    pub processing: i64,
    /// Seconds the longest-waiting due job has waited; 0 when none.
    pub oldest_queued_age_secs: f64,
    pub dead_letters: i64,
}

pub async fn queue_stats(db: impl PgExecutor<'_>) -> Result<QueueStats, sqlx::Error> {
    // Through the claim and processing indexes: neither reads the finished
    // history.
    let row = sqlx::query!(
        r#"SELECT
             queued.count AS "queued!",
             (SELECT count(*) FROM jobs WHERE status = 'processing') AS "processing!",
             coalesce(extract(epoch FROM now() - queued.oldest), 0)::float8 AS "oldest_queued_age_secs!",
             (SELECT count(*) FROM dead_letter_jobs) AS "dead_letters!"
           FROM (SELECT count(*) AS count,
                        min(run_at) FILTER (WHERE run_at <= now() AND lease_owner IS NULL) AS oldest
                 FROM jobs WHERE status = 'queued') AS queued"#
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

/// Adds jobs imported from the original DocFlow (`rows`: a JSON array of
/// `{id, owner_id, document_id, status, attempts, max_attempts, last_error,
/// idempotency_key, created_at, updated_at, completed_at}`), each with the
/// history it can honestly have here: a `failed` job stays failed (events
/// `queued`, `failed`); every other one is queued to run here (event
/// `queued`), since a result of the original is not in this API's shape and
/// a job it left `queued` or `processing` never finished. Idempotency keys
/// keep working for `idempotency_ttl_secs` after the job's creation. Jobs
/// whose document was not imported are skipped, as are ids already here.
/// Returns how many were added.
pub async fn import(
    db: impl PgExecutor<'_>,
    rows: &serde_json::Value,
    idempotency_ttl_secs: f64,
) -> Result<i64, sqlx::Error> {
    let added = sqlx::query_scalar!(
        r#"WITH incoming AS (
               SELECT r.*, r.status = 'failed' AS failed,
                      nullif(left(r.idempotency_key, 255), '') AS key
               FROM jsonb_to_recordset($1)
                    AS r(id uuid, owner_id uuid, document_id uuid, status text, attempts integer,
                         max_attempts integer, last_error text, idempotency_key text,
                         created_at timestamptz, updated_at timestamptz, completed_at timestamptz)
               WHERE EXISTS (SELECT 1 FROM documents d
                             WHERE d.id = r.document_id AND d.owner_id = r.owner_id)
           ), added AS (
               INSERT INTO jobs (id, owner_id, document_id, status, attempts, max_attempts,
                                 last_error, idempotency_key, idempotency_expires_at,
                                 created_at, updated_at, completed_at, event_seq)
               SELECT i.id, i.owner_id, i.document_id,
                      CASE WHEN i.failed THEN 'failed' ELSE 'queued' END,
                      CASE WHEN i.failed THEN greatest(i.attempts, 0) ELSE 0 END,
                      greatest(i.max_attempts, 1),
                      CASE WHEN i.failed
                           THEN coalesce(i.last_error, 'failed in the original DocFlow') END,
                      i.key,
                      CASE WHEN i.key IS NOT NULL
                           THEN i.created_at + make_interval(secs => $2) END,
                      i.created_at,
                      CASE WHEN i.failed THEN coalesce(i.updated_at, i.created_at) ELSE now() END,
                      CASE WHEN i.failed
                           THEN coalesce(i.completed_at, i.updated_at, i.created_at) END,
                      CASE WHEN i.failed THEN 2 ELSE 1 END
               FROM incoming i
               ON CONFLICT DO NOTHING
               RETURNING id, status, attempts, last_error, created_at, completed_at
           ), events AS (
               INSERT INTO job_events (job_id, seq, status, attempts, error, created_at)
               SELECT id, 1, 'queued', 0, NULL, created_at FROM added
               UNION ALL
               SELECT id, 2, 'failed', attempts, last_error, completed_at
               FROM added WHERE status = 'failed'
               RETURNING 1
           )
           SELECT count(*) AS "added!" FROM added"#,
        rows,
        idempotency_ttl_secs,
    )
    .fetch_one(db)
    .await?;
    Ok(added)
}

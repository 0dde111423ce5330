//! The statements that move jobs through the queue: the claim, the batched
//! transitions the worker and the rescuer apply, and the rescuer's search.
//! Each is one statement (its own transaction, one round trip), sized by
//! batch rather than by job.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::{
    DocumentId, FailureReason, JobEventKind, JobId, JobStatus, OcrMode, RunId, UserId,
};

use super::super::job_events::{EventRow, JobEvent};

/// A job a worker has claimed, with what its run needs (no further read).
/// Claimed, it is leased to the worker but still `queued`: it becomes
/// `processing` when the run starts (see [`Started`]).
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: JobId,
    pub run_id: RunId,
    pub owner_id: UserId,
    pub document_id: DocumentId,
    pub attempts: i32,
    pub max_attempts: i32,
    pub traceparent: Option<String>,
    /// The id of the request that created the job.
    pub request_id: Option<String>,
    pub ocr: OcrMode,
    /// `None`: the server's OCR_LANGUAGES.
    pub ocr_languages: Option<String>,
    pub storage_key: String,
    pub content_type: String,
}

/// How a claim picks jobs.
#[derive(Debug, Clone, Copy)]
pub struct ClaimLimits {
    /// Jobs at most.
    pub jobs: i32,
    /// Running jobs one owner may have across all workers. Checked when
    /// claiming, so concurrent claims may pass it by a batch at most.
    pub per_owner_running: i32,
}

/// Up to `limit` owners with queued jobs, in owner order from a random
/// point, wrapping around: whom the next claims serve. A loose index scan
/// over `jobs_claim_idx` (one probe per owner, however many jobs each
/// has); every probe orders by all of the index's columns, so only that
/// partial index can serve it, never one that walks an owner's history.
/// Claimed jobs are skipped through the heap, which also lets the scan
/// mark the entries of finished jobs dead for the next one.
pub async fn owners_with_work(
    db: impl PgExecutor<'_>,
    limit: i32,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let start = Uuid::new_v4();
    sqlx::query_scalar!(
        r#"WITH RECURSIVE
           above(owner_id, n) AS (
               (SELECT owner_id, 1 FROM jobs
                WHERE status = 'queued' AND lease_owner IS NULL AND owner_id >= $1
                ORDER BY owner_id, priority DESC, run_at, id LIMIT 1)
               UNION ALL
               SELECT (SELECT j.owner_id FROM jobs j
                       WHERE j.status = 'queued' AND j.lease_owner IS NULL
                         AND j.owner_id > a.owner_id
                       ORDER BY j.owner_id, j.priority DESC, j.run_at, j.id LIMIT 1), a.n + 1
               FROM above a WHERE a.owner_id IS NOT NULL AND a.n < $2::int
           ),
           below(owner_id, n) AS (
               (SELECT owner_id, 1 FROM jobs
                WHERE status = 'queued' AND lease_owner IS NULL AND owner_id < $1
                ORDER BY owner_id, priority DESC, run_at, id LIMIT 1)
               UNION ALL
               SELECT (SELECT j.owner_id FROM jobs j
                       WHERE j.status = 'queued' AND j.lease_owner IS NULL
                         AND j.owner_id > b.owner_id AND j.owner_id < $1
                       ORDER BY j.owner_id, j.priority DESC, j.run_at, j.id LIMIT 1), b.n + 1
               FROM below b WHERE b.owner_id IS NOT NULL AND b.n < $2::int
           )
           SELECT owner_id AS "owner_id!" FROM (
               SELECT owner_id, n, false AS wrapped FROM above
               UNION ALL SELECT owner_id, n, true FROM below
           ) AS walk
           WHERE owner_id IS NOT NULL
           ORDER BY wrapped, n LIMIT $2::int"#,
        start,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Claims up to `limits.jobs` due jobs of `owners` for worker `worker`:
/// (The statement is planned once, for any batch size, so each step is
/// written to stay an index lookup per row whatever the planner guesses:
/// `= ANY (ARRAY(…))` and `LATERAL` instead of joins it could hash.)
///
/// leases them to it under a new run id and counts the attempt. Owners are
/// interleaved in the order given: the first job of every owner comes
/// before anyone's second, so one owner's backlog does not delay another's
/// job by more than one claim; within an owner, higher priority, then
/// older, first. Each owner's share is also bounded by its running cap.
/// The lease changes no indexed column: Postgres updates the row in place.
pub async fn claim(
    db: impl PgExecutor<'_>,
    worker: Uuid,
    owners: &[Uuid],
    limits: ClaimLimits,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"WITH owners AS (
               SELECT owner_id, turn FROM unnest($2::uuid[]) WITH ORDINALITY AS o(owner_id, turn)
           ),
           shares AS (
               SELECT o.owner_id, o.turn,
                      least($3::int - coalesce((SELECT sum(CASE l.counter WHEN 'taken' THEN l.leases
                                                                        ELSE -l.leases END)
                                                FROM queue_owner_load l
                                                WHERE l.owner_id = o.owner_id), 0)::int,
                            ceil($1::int::float8 / greatest(cardinality($2::uuid[]), 1))::int)
                          AS take
               FROM owners o
           ),
           candidates AS (
               SELECT c.id, s.turn, c.priority, c.run_at,
                      row_number() OVER (PARTITION BY s.owner_id
                                         ORDER BY c.priority DESC, c.run_at, c.id) AS rank
               FROM shares s CROSS JOIN LATERAL (
                   SELECT j.id, j.priority, j.run_at FROM jobs j
                   WHERE j.owner_id = s.owner_id AND j.status = 'queued' AND j.lease_owner IS NULL
                     AND j.run_at <= now()
                   ORDER BY j.priority DESC, j.run_at, j.id
                   LIMIT greatest(s.take, 0)
                   FOR UPDATE SKIP LOCKED
               ) AS c
           ),
           chosen AS (
               SELECT id FROM candidates ORDER BY rank, priority DESC, run_at, turn LIMIT $1::int
           ),
           claimed AS (
               UPDATE jobs j SET run_id = gen_random_uuid(), lease_owner = $4,
                      attempts = j.attempts + 1, claimed_at = now(), updated_at = now()
               WHERE j.id = ANY (ARRAY(SELECT id FROM chosen))
               RETURNING j.id, j.run_id, j.owner_id, j.document_id, j.attempts, j.max_attempts,
                         j.traceparent, j.request_id, j.ocr, j.ocr_languages
           ),
           load AS (
               INSERT INTO queue_owner_load (owner_id, counter, leases)
               SELECT owner_id, 'taken', count(*) FROM claimed GROUP BY owner_id
               ON CONFLICT (owner_id, counter) DO UPDATE
               SET leases = queue_owner_load.leases + EXCLUDED.leases
           )
           SELECT c.id AS "id!: JobId", c.run_id AS "run_id!: RunId",
                  c.owner_id AS "owner_id!: UserId", c.document_id AS "document_id!: DocumentId",
                  c.attempts AS "attempts!", c.max_attempts AS "max_attempts!", c.traceparent,
                  c.request_id, c.ocr AS "ocr!: OcrMode", c.ocr_languages, d.storage_key, d.content_type
           FROM claimed c
           CROSS JOIN LATERAL (SELECT storage_key, content_type FROM documents
                               WHERE id = c.document_id) AS d"#,
        limits.jobs,
        owners,
        limits.per_owner_running,
        worker,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Claimed {
            id: r.id,
            run_id: r.run_id,
            owner_id: r.owner_id,
            document_id: r.document_id,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            traceparent: r.traceparent,
            request_id: r.request_id,
            ocr: r.ocr,
            ocr_languages: r.ocr_languages,
            storage_key: r.storage_key,
            content_type: r.content_type,
        })
        .collect())
}

/// Finds owners with work and claims from them: the two statements a
/// worker's producer runs separately (it keeps its list of owners between
/// claims), for callers that claim once.
pub async fn claim_next(
    db: &sqlx::PgPool,
    worker: Uuid,
    limits: ClaimLimits,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let owners = owners_with_work(db, 64).await?;
    claim(db, worker, &owners, limits).await
}

/// One run's end, in the form the batch statement applies: a decided
/// `state::Transition`, flattened.
#[derive(Debug, Clone)]
pub struct Move {
    pub job: JobId,
    pub run: RunId,
    /// `queued`, `succeeded` or `failed`.
    pub status: JobStatus,
    /// The event this move records; none for a run handed back unstarted
    /// (its job never left `queued` as far as anyone saw).
    pub event: Option<JobEventKind>,
    /// For `queued`: seconds until the job is due again.
    pub delay_secs: f64,
    /// -1 gives the attempt back (the run never started), else 0.
    pub attempt_delta: i32,
    /// The error recorded on the job and in the event.
    pub error: Option<String>,
    pub dead_letter: Option<FailureReason>,
    /// The result, as JSON text, for `succeeded`.
    pub result: Option<String>,
    /// When the run began executing (none if it never did).
    pub started_at: Option<DateTime<Utc>>,
    /// Whether the run's start was already written (its job is
    /// `processing`); if not, this move also writes its `processing` event.
    pub start_recorded: bool,
}

/// A run that began executing: its job becomes `processing` (with the
/// event), and a rescue after a crash counts its attempt.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    pub job: JobId,
    pub run: RunId,
    pub at: DateTime<Utc>,
}

/// Applies a batch of moves and start marks in one statement, each guarded
/// by its run (`run_id = $run` on a leased job): a move for a run that was
/// rescued, cancelled or requeued meanwhile changes nothing. A move writes
/// the job (with its result: a job succeeds once, ever, since only failed
/// and cancelled jobs are requeued), its event and its dead-letter record
/// together. A run that started and ended before its start mark was
/// written records its `processing` event on the row of its last one.
/// Returns the events written, in order. `moves` and `started` must not
/// name the same job.
pub async fn apply(
    db: impl PgExecutor<'_>,
    moves: &[Move],
    started: &[Started],
) -> Result<Vec<JobEvent>, sqlx::Error> {
    let ids: Vec<Uuid> = moves.iter().map(|m| m.job.0).collect();
    let runs: Vec<Uuid> = moves.iter().map(|m| m.run.0).collect();
    let statuses: Vec<JobStatus> = moves.iter().map(|m| m.status).collect();
    let events: Vec<Option<JobEventKind>> = moves.iter().map(|m| m.event).collect();
    let delays: Vec<f64> = moves.iter().map(|m| m.delay_secs).collect();
    let deltas: Vec<i32> = moves.iter().map(|m| m.attempt_delta).collect();
    let errors: Vec<Option<String>> = moves.iter().map(|m| m.error.clone()).collect();
    let dead: Vec<Option<FailureReason>> = moves.iter().map(|m| m.dead_letter).collect();
    let results: Vec<Option<String>> = moves.iter().map(|m| m.result.clone()).collect();
    let run_started: Vec<Option<DateTime<Utc>>> = moves.iter().map(|m| m.started_at).collect();
    let recorded: Vec<bool> = moves.iter().map(|m| m.start_recorded).collect();
    let started_ids: Vec<Uuid> = started.iter().map(|s| s.job.0).collect();
    let started_runs: Vec<Uuid> = started.iter().map(|s| s.run.0).collect();
    let started_at: Vec<DateTime<Utc>> = started.iter().map(|s| s.at).collect();
    sqlx::query_as!(
        EventRow,
        r#"WITH input AS (
               SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::float8[],
                                    $6::int[], $7::text[], $8::text[], $9::text[], $10::timestamptz[],
                                    $14::bool[])
                   AS t(id, run_id, status, event, delay_secs, attempt_delta, error, dead_reason,
                        result, started_at, start_recorded)
           ),
           marked AS (
               UPDATE jobs SET status = 'processing', started_at = s.at, updated_at = now(),
                      event_seq = jobs.event_seq + 1
               FROM unnest($11::uuid[], $12::uuid[], $13::timestamptz[]) AS s(id, run_id, at)
               WHERE jobs.id = s.id AND jobs.run_id = s.run_id AND jobs.status = 'queued'
               RETURNING jobs.id, jobs.event_seq, jobs.attempts, s.at
           ),
           moved AS (
               UPDATE jobs j SET
                   status = i.status,
                   attempts = j.attempts + i.attempt_delta,
                   run_at = CASE WHEN i.status = 'queued'
                                 THEN now() + make_interval(secs => i.delay_secs) ELSE j.run_at END,
                   last_error = CASE WHEN i.status = 'succeeded' THEN NULL
                                     WHEN i.event IS NULL THEN j.last_error
                                     ELSE i.error END,
                   started_at = coalesce(i.started_at, j.started_at),
                   completed_at = CASE WHEN i.status IN ('succeeded', 'failed') THEN now() END,
                   result = coalesce(i.result::jsonb, j.result),
                   run_id = NULL, lease_owner = NULL, updated_at = now(),
                   event_seq = j.event_seq + CASE WHEN i.event IS NULL THEN 0
                                                  WHEN i.start_recorded THEN 1
                                                  ELSE 2 END
               FROM input i
               WHERE j.id = i.id AND j.run_id = i.run_id AND j.status IN ('queued', 'processing')
               RETURNING j.id, j.owner_id, j.event_seq, j.attempts, j.updated_at,
                         i.start_recorded, i.event, i.error, i.dead_reason,
                         coalesce(i.started_at, j.updated_at) AS started_at
           ),
           unload AS (
               INSERT INTO queue_owner_load (owner_id, counter, leases)
               SELECT owner_id, 'returned', count(*) FROM moved GROUP BY owner_id
               ON CONFLICT (owner_id, counter) DO UPDATE
               SET leases = queue_owner_load.leases + EXCLUDED.leases
           ),
           dead AS (
               INSERT INTO dead_letter_jobs (job_id, reason, error, attempts)
               SELECT id, dead_reason, coalesce(error, ''), attempts
               FROM moved WHERE dead_reason IS NOT NULL
               ON CONFLICT (job_id) DO UPDATE
               SET reason = EXCLUDED.reason, error = EXCLUDED.error,
                   attempts = EXCLUDED.attempts, failed_at = now()
           )
           INSERT INTO job_events (job_id, seq, status, attempts, error, created_at, processing_at)
           SELECT id, event_seq, 'processing', attempts, NULL, at, NULL FROM marked
           UNION ALL
           SELECT id, event_seq, event, attempts, error, updated_at,
                  CASE WHEN NOT start_recorded THEN started_at END
           FROM moved WHERE event IS NOT NULL
           RETURNING job_id AS "job_id: JobId", seq, status AS "status: JobEventKind", attempts,
                     error, created_at, processing_at"#,
        &ids,
        &runs,
        &statuses as &[JobStatus],
        &events as &[Option<JobEventKind>],
        &delays,
        &deltas,
        &errors as &[Option<String>],
        &dead as &[Option<FailureReason>],
        &results as &[Option<String>],
        &run_started as &[Option<DateTime<Utc>>],
        &started_ids,
        &started_runs,
        &started_at,
        &recorded,
    )
    .fetch_all(db)
    .await
    .map(|rows| {
        let mut events: Vec<JobEvent> = rows.into_iter().flat_map(EventRow::events).collect();
        // In job order, then in the order they happened.
        events.sort_by_key(|e| (e.job_id.0, e.seq));
        events
    })
}

/// A run whose worker is gone: its lease (`queue_workers` row) expired or
/// no longer exists.
#[derive(Debug, Clone, Copy)]
pub struct Orphan {
    pub job: JobId,
    pub run: RunId,
    pub attempts: i32,
    pub max_attempts: i32,
    pub started: bool,
}

/// The workers whose lease was not renewed for `lease_ttl_secs`.
pub async fn lapsed_workers(
    db: impl PgExecutor<'_>,
    lease_ttl_secs: f64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT id FROM queue_workers
           WHERE heartbeat_at < now() - make_interval(secs => $1)"#,
        lease_ttl_secs,
    )
    .fetch_all(db)
    .await
}

/// Holders of leases who have no `queue_workers` row at all (a row lost to
/// an operator's hand, say): their runs are rescued like a dead worker's.
/// A scan of the queued and running jobs, so the leader runs it rarely.
pub async fn unknown_lease_holders(db: impl PgExecutor<'_>) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT DISTINCT j.lease_owner AS "lease_owner!" FROM jobs j
           WHERE j.status IN ('queued', 'processing') AND j.lease_owner IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM queue_workers w WHERE w.id = j.lease_owner)"#
    )
    .fetch_all(db)
    .await
}

/// Up to `limit` runs leased to `workers`. A run had started if its job is
/// `processing`. (Read through the claim and processing indexes: there is
/// no index on the lease, which would cost every claim its in-place
/// update; this runs only when a worker is gone.)
pub async fn orphans(
    db: impl PgExecutor<'_>,
    workers: &[Uuid],
    limit: i64,
) -> Result<Vec<Orphan>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT j.id AS "id: JobId", j.run_id AS "run_id!: RunId", j.attempts, j.max_attempts,
                  j.status = 'processing' AS "started!"
           FROM jobs j
           WHERE j.status IN ('queued', 'processing') AND j.lease_owner = ANY($1)
           LIMIT $2"#,
        workers,
        limit,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Orphan {
            job: r.id,
            run: r.run_id,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            started: r.started,
        })
        .collect())
}

/// Of `jobs` (runs worker `worker` is executing), the ones it no longer
/// holds: cancelled, or rescued from it after its lease lapsed.
pub async fn not_held_by(
    db: impl PgExecutor<'_>,
    worker: Uuid,
    jobs: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT id FROM jobs WHERE id = ANY($2) AND lease_owner IS DISTINCT FROM $1"#,
        worker,
        jobs,
    )
    .fetch_all(db)
    .await
}

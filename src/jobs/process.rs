//! One run of one job, as the worker performs it.
//!
//! 1. Lock the job; skip it if it is gone or terminal; else mark it
//!    `processing`, count the attempt, commit (so a crash is counted too).
//! 2. Download the document to a temporary file and extract it in a child
//!    process (`crate::extraction`).
//! 3. Record the outcome in one transaction with its event: the result and
//!    `succeeded`; or a retry (`queued`, a new queue entry at the backoff
//!    time); or `failed` and its dead-letter record.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use chrono::Utc;
use docflow_worker::{ContentKind, ExtractError};
use futures_util::StreamExt;
use rand::Rng;
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

use crate::{
    db::{self, job_events::JobEvent},
    domain::{FailureReason, JobEventKind, JobId, JobStatus},
    extraction::{SandboxError, SandboxLimits, extract_in_child},
    live::Publisher,
    queue,
    storage::Storage,
};

/// What became of a job run.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded,
    RetryScheduled {
        delay: Duration,
    },
    Failed {
        reason: FailureReason,
        error: String,
    },
    /// Nothing to do: the job is gone, already finished, or not ours to run.
    Skipped,
}

/// A failure classified for the state machine.
#[derive(Debug)]
enum Failure {
    Transient(String),
    Terminal(FailureReason, String),
}

/// `min(60, 2^attempt) * rand(0.5, 1.0)` seconds: exponential, capped, and
/// jittered so jobs that failed together do not retry together.
pub fn backoff(attempt: i32) -> Duration {
    let exponent = u32::try_from(attempt.clamp(0, 6)).unwrap_or(6);
    let base = f64::from(2_u32.pow(exponent)).min(60.0);
    let jitter = rand::rng().random_range(0.5..=1.0);
    Duration::from_secs_f64(base * jitter)
}

#[derive(Clone)]
pub struct Processor {
    db: PgPool,
    storage: Storage,
    sandbox: SandboxLimits,
    scratch: PathBuf,
    publisher: Publisher,
}

impl Processor {
    pub fn new(
        db: PgPool,
        storage: Storage,
        sandbox: SandboxLimits,
        scratch: PathBuf,
        publisher: Publisher,
    ) -> Self {
        Self {
            db,
            storage,
            sandbox,
            scratch,
            publisher,
        }
    }

    pub fn db(&self) -> &PgPool {
        &self.db
    }

    /// Runs the job. An `Err` means infrastructure failed (Postgres), not the
    /// job: the queue entry is then retried as is.
    pub async fn process(&self, job_id: JobId) -> Result<Outcome, sqlx::Error> {
        let started = Instant::now();
        let outcome = self.process_inner(job_id).await?;
        record_outcome(&outcome, started.elapsed());
        Ok(outcome)
    }

    async fn process_inner(&self, job_id: JobId) -> Result<Outcome, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let Some(job) = db::jobs::lock(&mut tx, job_id).await? else {
            return Ok(Outcome::Skipped);
        };
        if job.status.is_terminal() {
            return Ok(Outcome::Skipped);
        }
        if job.attempts >= job.max_attempts {
            // A worker died during the last attempt; its rescue finds no
            // attempts left.
            let error = job
                .last_error
                .clone()
                .unwrap_or_else(|| "the worker stopped during the last attempt".to_owned());
            let (outcome, event) = self
                .record_failure(
                    &mut tx,
                    job_id,
                    job.attempts,
                    FailureReason::TransientExhausted,
                    &error,
                )
                .await?;
            tx.commit().await?;
            self.publisher.publish([event]).await;
            return Ok(outcome);
        }
        if job.status == JobStatus::Processing {
            // A worker died mid-run; its entry was rescued and this is the
            // re-run.
            crate::metrics::orphan_rescued();
        }
        let attempts = db::jobs::start_attempt(&mut tx, job_id).await?;
        let started =
            db::job_events::append(&mut tx, job_id, JobEventKind::Processing, attempts, None)
                .await?;
        tx.commit().await?;
        self.publisher.publish([started]).await;

        // One span per run, continuing the trace of the request that created
        // the job.
        let span = tracing::info_span!("job.process", %job_id, attempts);
        crate::telemetry::set_parent_from(&span, job.traceparent.as_deref());
        self.finish_run(job, attempts).instrument(span).await
    }

    /// Runs the extraction and records its outcome (the part of a run that
    /// belongs to the job's trace).
    async fn finish_run(&self, job: db::jobs::Job, attempts: i32) -> Result<Outcome, sqlx::Error> {
        let job_id = job.id;
        tracing::info!(%job_id, attempts, "job started");
        let result = self.run(job.document_id).await;

        let mut tx = self.db.begin().await?;
        let Some(current) = db::jobs::lock(&mut tx, job_id).await? else {
            return Ok(Outcome::Skipped);
        };
        if current.status != JobStatus::Processing || current.attempts != attempts {
            // Someone else owns this job now (a rescued duplicate finished it).
            return Ok(Outcome::Skipped);
        }
        let (outcome, event) = match result {
            Ok(value) => {
                let first =
                    db::processing_results::insert(&mut tx, job_id, job.document_id, &value)
                        .await?;
                if !first {
                    tracing::warn!(%job_id, "result already recorded; keeping the first");
                }
                db::jobs::set_succeeded(&mut tx, job_id).await?;
                let event = db::job_events::append(
                    &mut tx,
                    job_id,
                    JobEventKind::Succeeded,
                    attempts,
                    None,
                )
                .await?;
                (Outcome::Succeeded, event)
            }
            Err(Failure::Transient(error)) if attempts < current.max_attempts => {
                let delay = backoff(attempts);
                db::jobs::set_retry_pending(&mut tx, job_id, &error).await?;
                let event = db::job_events::append(
                    &mut tx,
                    job_id,
                    JobEventKind::RetryScheduled,
                    attempts,
                    Some(&error),
                )
                .await?;
                let run_at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                queue::push(&mut tx, job_id, Some(run_at))
                    .await
                    .map_err(|e| sqlx::Error::Protocol(format!("enqueueing the retry: {e}")))?;
                (Outcome::RetryScheduled { delay }, event)
            }
            Err(Failure::Transient(error)) => {
                self.record_failure(
                    &mut tx,
                    job_id,
                    attempts,
                    FailureReason::TransientExhausted,
                    &error,
                )
                .await?
            }
            Err(Failure::Terminal(reason, error)) => {
                self.record_failure(&mut tx, job_id, attempts, reason, &error)
                    .await?
            }
        };
        tx.commit().await?;
        self.publisher.publish([event]).await;
        tracing::info!(%job_id, attempts, outcome = ?outcome, "job finished");
        Ok(outcome)
    }

    /// Fails a job after its run crashed the task (a panic): terminal,
    /// `unhandled`, and recorded like every other failure.
    pub async fn fail_unhandled(&self, job_id: JobId, error: &str) -> Result<Outcome, sqlx::Error> {
        let outcome = self.fail_unhandled_inner(job_id, error).await?;
        record_outcome(&outcome, Duration::ZERO);
        Ok(outcome)
    }

    async fn fail_unhandled_inner(
        &self,
        job_id: JobId,
        error: &str,
    ) -> Result<Outcome, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let Some(job) = db::jobs::lock(&mut tx, job_id).await? else {
            return Ok(Outcome::Skipped);
        };
        if job.status.is_terminal() {
            return Ok(Outcome::Skipped);
        }
        let (outcome, event) = self
            .record_failure(
                &mut tx,
                job_id,
                job.attempts,
                FailureReason::Unhandled,
                error,
            )
            .await?;
        tx.commit().await?;
        self.publisher.publish([event]).await;
        Ok(outcome)
    }

    async fn record_failure(
        &self,
        conn: &mut sqlx::PgConnection,
        job_id: JobId,
        attempts: i32,
        reason: FailureReason,
        error: &str,
    ) -> Result<(Outcome, JobEvent), sqlx::Error> {
        db::jobs::set_failed(conn, job_id, error).await?;
        db::dead_letter_jobs::insert(conn, job_id, reason, error, attempts).await?;
        let event =
            db::job_events::append(conn, job_id, JobEventKind::Failed, attempts, Some(error))
                .await?;
        Ok((
            Outcome::Failed {
                reason,
                error: error.to_owned(),
            },
            event,
        ))
    }

    /// Downloads and extracts; the result as stored JSON.
    async fn run(
        &self,
        document_id: crate::domain::DocumentId,
    ) -> Result<serde_json::Value, Failure> {
        let document = db::documents::find(&self.db, document_id)
            .await
            .map_err(|e| Failure::Transient(format!("database: {e}")))?
            .ok_or_else(|| {
                Failure::Terminal(FailureReason::Permanent, "the document was deleted".into())
            })?;
        let kind: ContentKind = document.content_type.parse().map_err(
            |e: docflow_worker::UnsupportedContentType| {
                Failure::Terminal(FailureReason::Permanent, e.to_string())
            },
        )?;

        let file = tempfile::Builder::new()
            .prefix("docflow-job-")
            .suffix(extension(kind))
            .tempfile_in(&self.scratch)
            .map_err(|e| Failure::Transient(format!("scratch space: {e}")))?;
        self.download(&document.storage_key, file.path()).await?;

        match extract_in_child(file.path(), kind, &self.sandbox).await {
            Ok(result) => serde_json::to_value(&result).map(strip_nul).map_err(|e| {
                Failure::Terminal(
                    FailureReason::Unhandled,
                    format!("encoding the result: {e}"),
                )
            }),
            Err(SandboxError::Extract(ExtractError::Permanent(error))) => {
                Err(Failure::Terminal(FailureReason::Permanent, error))
            }
            Err(SandboxError::Extract(ExtractError::Transient(error))) => {
                Err(Failure::Transient(error))
            }
            Err(err @ (SandboxError::TimedOut(_) | SandboxError::CpuTimeExceeded(_))) => {
                Err(Failure::Terminal(FailureReason::Timeout, err.to_string()))
            }
            Err(err @ SandboxError::Crashed(_)) => {
                Err(Failure::Terminal(FailureReason::Unhandled, err.to_string()))
            }
            Err(err @ SandboxError::Spawn(_)) => Err(Failure::Transient(err.to_string())),
        }
    }

    async fn download(&self, key: &str, to: &std::path::Path) -> Result<(), Failure> {
        let object = match self.storage.get(key).await {
            Ok(object) => object,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Failure::Terminal(
                    FailureReason::Permanent,
                    "the stored file is missing".into(),
                ));
            }
            Err(err) => return Err(Failure::Transient(format!("storage: {err}"))),
        };
        let mut out = tokio::fs::File::create(to)
            .await
            .map_err(|e| Failure::Transient(format!("scratch space: {e}")))?;
        let mut stream = object.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Failure::Transient(format!("storage: {e}")))?;
            out.write_all(&chunk)
                .await
                .map_err(|e| Failure::Transient(format!("scratch space: {e}")))?;
        }
        out.flush()
            .await
            .map_err(|e| Failure::Transient(format!("scratch space: {e}")))?;
        Ok(())
    }
}

/// Counts a run in the worker's metrics.
fn record_outcome(outcome: &Outcome, elapsed: Duration) {
    match outcome {
        Outcome::Succeeded => crate::metrics::job_succeeded(elapsed),
        Outcome::RetryScheduled { .. } => crate::metrics::retry_scheduled(elapsed),
        Outcome::Failed { reason, .. } => crate::metrics::job_failed(*reason, elapsed),
        Outcome::Skipped => {}
    }
}

/// Postgres's jsonb cannot hold U+0000, which PDF strings may contain.
fn strip_nul(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "")),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nul).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, strip_nul(v))).collect())
        }
        other => other,
    }
}

/// tesseract picks its reader by file extension.
fn extension(kind: ContentKind) -> &'static str {
    match kind {
        ContentKind::Pdf => ".pdf",
        ContentKind::Png => ".png",
        ContentKind::Jpeg => ".jpg",
        ContentKind::Text => ".txt",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_are_stripped_everywhere() {
        let value = serde_json::json!({"title": "A\u{0}B", "pages": [{"text": "x\u{0}"}], "n": 1});
        assert_eq!(
            strip_nul(value),
            serde_json::json!({"title": "AB", "pages": [{"text": "x"}], "n": 1})
        );
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        for attempt in 0..10 {
            let base = f64::from(2_u32.pow(u32::try_from(attempt.min(6)).unwrap_or(6))).min(60.0);
            for _ in 0..50 {
                let delay = backoff(attempt).as_secs_f64();
                assert!(
                    delay >= base * 0.5 - 1e-9 && delay <= base + 1e-9,
                    "attempt {attempt}: {delay}"
                );
            }
        }
        assert!(backoff(30).as_secs_f64() <= 60.0);
    }
}

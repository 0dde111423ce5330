//! Jobs: creation (with per-user idempotency) and reading, the dead-letter
//! queue, and the state machine the worker drives (`process`).
//!
//! Every transition writes the job row, its event and, where the job must
//! run (again), its queue entry, in one transaction.

pub mod process;

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;

use crate::{
    db::{
        self,
        dead_letter_jobs::DeadLetter,
        jobs::{Job, NewJob},
        processing_results::ProcessingResult,
    },
    domain::{DocumentId, FailureReason, IdempotencyKey, JobEventKind, JobId, JobStatus, UserId},
    live::Publisher,
    queue,
};

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no such job")]
    NotFound,
    #[error("no such document")]
    DocumentNotFound,
    #[error("no result yet")]
    NoResult,
    /// The idempotency key already names a job for another document.
    #[error("this Idempotency-Key was used for a different document")]
    KeyReused,
    #[error("the job is {0}, not failed")]
    NotFailed(&'static str),
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Whether `create` made a job or found the one its key already names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    Created,
    Replayed,
}

#[derive(Clone)]
pub struct JobService {
    db: PgPool,
    max_attempts: i32,
    idempotency_ttl: Duration,
    publisher: Publisher,
}

impl JobService {
    pub fn new(
        db: PgPool,
        max_attempts: u32,
        idempotency_ttl: Duration,
        publisher: Publisher,
    ) -> Self {
        Self {
            db,
            max_attempts: i32::try_from(max_attempts).unwrap_or(i32::MAX),
            idempotency_ttl,
            publisher,
        }
    }

    /// Creates a job for the owner's document, or returns the job an
    /// unexpired idempotency key already names. The job row, its first event
    /// and its queue entry commit together or not at all.
    pub async fn create(
        &self,
        owner: UserId,
        document_id: DocumentId,
        key: Option<&IdempotencyKey>,
        traceparent: Option<&str>,
    ) -> Result<(Job, Creation), JobError> {
        let mut tx = self.db.begin().await?;
        db::documents::find_owned(&mut *tx, owner, document_id)
            .await?
            .ok_or(JobError::DocumentNotFound)?;
        if let Some(key) = key {
            db::jobs::release_expired_key(&mut tx, owner, key.as_str()).await?;
        }
        let expires_at = key.map(|_| {
            Utc::now()
                + chrono::Duration::from_std(self.idempotency_ttl)
                    .unwrap_or(chrono::Duration::hours(24))
        });
        let inserted = db::jobs::insert(
            &mut tx,
            &NewJob {
                id: JobId::generate(),
                owner_id: owner,
                document_id,
                max_attempts: self.max_attempts,
                idempotency_key: key.map(IdempotencyKey::as_str),
                idempotency_expires_at: expires_at,
                traceparent,
            },
        )
        .await
        .map_err(|err| match &err {
            // The document was deleted between our check and the insert.
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                JobError::DocumentNotFound
            }
            _ => JobError::Database(err),
        })?;
        let Some(job) = inserted else {
            // The key is taken (possibly by a request that just committed).
            drop(tx);
            let key = key.map(IdempotencyKey::as_str).unwrap_or_default();
            let existing = db::jobs::find_by_key(&self.db, owner, key)
                .await?
                .ok_or(JobError::NotFound)?;
            if existing.document_id != document_id {
                return Err(JobError::KeyReused);
            }
            return Ok((existing, Creation::Replayed));
        };
        let queued = db::job_events::append(&mut tx, job.id, JobEventKind::Queued, 0, None).await?;
        queue::push(&mut tx, job.id, None).await?;
        tx.commit().await?;
        self.publisher.publish([queued]).await;
        Ok((job, Creation::Created))
    }

    pub async fn get(&self, owner: UserId, id: JobId) -> Result<Job, JobError> {
        db::jobs::find_owned(&self.db, owner, id)
            .await?
            .ok_or(JobError::NotFound)
    }

    pub async fn result_of(&self, job: &Job) -> Result<Option<ProcessingResult>, JobError> {
        Ok(db::processing_results::for_job(&self.db, job.id).await?)
    }

    pub async fn list(
        &self,
        owner: UserId,
        status: Option<JobStatus>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Job>, i64), JobError> {
        Ok(db::jobs::list_owned(&self.db, owner, status, limit, offset).await?)
    }

    /// The newest result for the owner's document; `NoResult` until one exists.
    pub async fn latest_result(
        &self,
        owner: UserId,
        document_id: DocumentId,
    ) -> Result<ProcessingResult, JobError> {
        db::documents::find_owned(&self.db, owner, document_id)
            .await?
            .ok_or(JobError::DocumentNotFound)?;
        db::processing_results::latest_for_document(&self.db, owner, document_id)
            .await?
            .ok_or(JobError::NoResult)
    }

    pub async fn dead_letters(
        &self,
        reason: Option<FailureReason>,
        since: Option<chrono::DateTime<Utc>>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<DeadLetter>, i64), JobError> {
        Ok(db::dead_letter_jobs::list(&self.db, reason, since, limit, offset).await?)
    }

    pub async fn dead_letter_depth(&self) -> Result<i64, JobError> {
        Ok(db::dead_letter_jobs::depth(&self.db).await?)
    }

    /// Gives a failed job a fresh start: attempts reset, `queued`, a new
    /// queue entry, its dead-letter record removed; one transaction under the
    /// job's row lock, so two concurrent requeues enqueue once (the second
    /// finds it queued: 409).
    pub async fn requeue(&self, id: JobId) -> Result<Job, JobError> {
        let mut tx = self.db.begin().await?;
        let job = db::jobs::lock(&mut tx, id)
            .await?
            .ok_or(JobError::NotFound)?;
        if job.status != JobStatus::Failed {
            return Err(JobError::NotFailed(job.status.as_str()));
        }
        db::jobs::reset_for_requeue(&mut tx, id).await?;
        db::dead_letter_jobs::delete(&mut tx, id).await?;
        let requeued = db::job_events::append(&mut tx, id, JobEventKind::Requeued, 0, None).await?;
        queue::push(&mut tx, id, None).await?;
        let job = db::jobs::lock(&mut tx, id)
            .await?
            .ok_or(JobError::NotFound)?;
        tx.commit().await?;
        self.publisher.publish([requeued]).await;
        Ok(job)
    }
}

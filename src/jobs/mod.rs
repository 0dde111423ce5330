//! Jobs as the API sees them: creation (with per-user idempotency),
//! reading, cancellation, the dead-letter queue and its requeue. The state
//! machine every transition follows is [`state`]; the worker side that
//! runs jobs is `crate::worker`.
//!
//! A job row is its own queue entry: committing a `queued` row enqueues it,
//! so creating a job is one statement and one transaction.

pub mod creator;
pub mod state;

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;

use crate::{
    db::{
        self, Cursor,
        dead_letter_jobs::DeadLetter,
        jobs::{Inserted, Job, ListFilter, NewJob, ProcessingResult},
    },
    domain::{
        DocumentId, FailureReason, IdempotencyKey, InvalidInput, JobId, JobStatus, OcrLanguages,
        OcrMode, Priority, UserId,
    },
    live::Publisher,
};

use state::{Event, JobState, Transition};

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
    /// Only failed or cancelled jobs can be requeued.
    #[error("the job is {0}, not failed or cancelled")]
    NotRequeueable(JobStatus),
    /// A finished job cannot be cancelled.
    #[error("the job is already {0}")]
    AlreadyFinished(JobStatus),
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
    creator: creator::Creator,
    max_attempts: i32,
    idempotency_ttl: Duration,
    /// What OCR can read here: a job may ask for these, no others.
    ocr_languages: OcrLanguages,
    publisher: Publisher,
}

impl JobService {
    pub fn new(
        db: PgPool,
        max_attempts: u32,
        idempotency_ttl: Duration,
        ocr_languages: OcrLanguages,
        publisher: Publisher,
    ) -> Self {
        Self {
            creator: creator::Creator::spawn(db.clone()),
            db,
            max_attempts: i32::try_from(max_attempts).unwrap_or(i32::MAX),
            idempotency_ttl,
            ocr_languages,
            publisher,
        }
    }

    /// The OCR languages a new job asks for, when this server can read
    /// them all.
    pub fn ocr_languages(&self, raw: &str) -> Result<OcrLanguages, InvalidInput> {
        OcrLanguages::parse(raw)?.within(&self.ocr_languages)
    }

    /// Creates a job for the owner's document, or returns the job an
    /// unexpired idempotency key already names. The job row and its first
    /// event are written together (with the jobs of requests arriving at
    /// the same moment, `creator`): committed, the job is queued.
    pub async fn create(
        &self,
        owner: UserId,
        document_id: DocumentId,
        options: &NewJobOptions<'_>,
    ) -> Result<(Job, Creation), JobError> {
        let key = options.idempotency_key.map(IdempotencyKey::as_str);
        let expires_at = key.map(|_| {
            Utc::now()
                + chrono::Duration::from_std(self.idempotency_ttl)
                    .unwrap_or(chrono::Duration::hours(24))
        });
        let new = || NewJob {
            id: JobId::generate(),
            owner_id: owner,
            document_id,
            priority: options.priority,
            ocr: options.ocr,
            ocr_languages: options.ocr_languages.map(|l| l.as_str().to_owned()),
            max_attempts: self.max_attempts,
            idempotency_key: key.map(str::to_owned),
            idempotency_expires_at: expires_at,
            traceparent: options.traceparent.map(str::to_owned),
            request_id: options.request_id.map(str::to_owned),
        };
        let insert = |job: NewJob| async move {
            self.creator.create(job).await.map_err(|err| match &err {
                // The document was deleted between the check and the insert.
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                    JobError::DocumentNotFound
                }
                _ => JobError::Database(err),
            })
        };
        let mut inserted = insert(new()).await?;
        if let (Inserted::KeyTaken, Some(key)) = (&inserted, key)
            && db::jobs::release_expired_key(&self.db, owner, key).await?
        {
            // The key had expired: it may name this new job.
            inserted = insert(new()).await?;
        }
        match inserted {
            Inserted::Created(created) => {
                let (job, queued) = *created;
                self.publisher.publish([queued]).await;
                Ok((job, Creation::Created))
            }
            Inserted::NoDocument => Err(JobError::DocumentNotFound),
            Inserted::KeyTaken => {
                let key = key.unwrap_or_default();
                let existing = db::jobs::find_by_key(&self.db, owner, key)
                    .await?
                    .ok_or(JobError::NotFound)?;
                if existing.document_id != document_id {
                    return Err(JobError::KeyReused);
                }
                Ok((existing, Creation::Replayed))
            }
        }
    }

    pub async fn get(&self, owner: UserId, id: JobId) -> Result<Job, JobError> {
        db::jobs::find_owned(&self.db, owner, id)
            .await?
            .ok_or(JobError::NotFound)
    }

    pub async fn result_of(&self, job: &Job) -> Result<Option<ProcessingResult>, JobError> {
        Ok(db::jobs::result_of(&self.db, job.id).await?)
    }

    /// One page of the owner's jobs, newest first, and how many match (at
    /// most `db::jobs::COUNT_CAP`; `JobPage::total_exact` says which).
    pub async fn list(
        &self,
        owner: UserId,
        filter: ListFilter,
        page: Page,
    ) -> Result<JobPage, JobError> {
        let items =
            db::jobs::list_owned(&self.db, owner, filter, page.after, page.limit, page.offset)
                .await?;
        let counted = db::jobs::count_owned_capped(&self.db, owner, filter).await?;
        let next = (items.len() as i64 == page.limit)
            .then(|| items.last())
            .flatten()
            .map(|job| Cursor {
                created_at: job.created_at,
                id: job.id.0,
            });
        Ok(JobPage {
            items,
            total: counted.min(db::jobs::COUNT_CAP),
            total_exact: counted <= db::jobs::COUNT_CAP,
            next,
        })
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
        db::jobs::latest_result_for_document(&self.db, owner, document_id)
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

    /// Cancels the owner's job: a queued one at once; a running one too,
    /// and the worker running it is told to stop its extraction (the run's
    /// later writes are refused by its run id). 409 once the job is final.
    pub async fn cancel(&self, owner: UserId, id: JobId) -> Result<Job, JobError> {
        let mut tx = self.db.begin().await?;
        let job = db::jobs::lock(&mut tx, id)
            .await?
            .filter(|job| job.owner_id == owner)
            .ok_or(JobError::NotFound)?;
        match state::decide(&job_state(&job), &Event::CancelRequested, 1.0) {
            Transition::Cancel => {}
            Transition::Refused { status } => return Err(JobError::AlreadyFinished(status)),
            other => unreachable!("a cancel decides Cancel or Refused, not {other:?}"),
        }
        let (job, event) = db::jobs::cancel(&mut tx, id, job.status)
            .await?
            .ok_or(JobError::NotFound)?;
        tx.commit().await?;
        crate::metrics::job_cancelled();
        self.publisher.publish([event]).await;
        Ok(job)
    }

    /// Gives a failed or cancelled job a fresh start: attempts reset,
    /// `queued`, its dead-letter record removed; one statement under the
    /// job's row lock, so of two concurrent requeues the second finds it
    /// queued (409).
    pub async fn requeue(&self, id: JobId) -> Result<Job, JobError> {
        let mut tx = self.db.begin().await?;
        let job = db::jobs::lock(&mut tx, id)
            .await?
            .ok_or(JobError::NotFound)?;
        match state::decide(&job_state(&job), &Event::RequeueRequested, 1.0) {
            Transition::Reset => {}
            Transition::Refused { status } => return Err(JobError::NotRequeueable(status)),
            other => unreachable!("a requeue decides Reset or Refused, not {other:?}"),
        }
        let (job, event) = db::jobs::reset(&mut tx, id, job.status)
            .await?
            .ok_or(JobError::NotFound)?;
        tx.commit().await?;
        self.publisher.publish([event]).await;
        Ok(job)
    }
}

/// What `create` takes besides the document.
#[derive(Debug, Default)]
pub struct NewJobOptions<'a> {
    pub idempotency_key: Option<&'a IdempotencyKey>,
    pub priority: Priority,
    pub ocr: OcrMode,
    /// `None`: the server's OCR_LANGUAGES.
    pub ocr_languages: Option<&'a OcrLanguages>,
    /// The creating request's trace context, which the run continues.
    pub traceparent: Option<&'a str>,
    /// The creating request's id, which the run's log lines carry.
    pub request_id: Option<&'a str>,
}

/// Which page of a list: after a cursor, or (for old clients) after
/// skipping `offset` items.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
    pub after: Option<Cursor>,
}

/// One page of jobs.
#[derive(Debug)]
pub struct JobPage {
    pub items: Vec<Job>,
    /// Matching jobs, counted up to `db::jobs::COUNT_CAP`.
    pub total: i64,
    /// Whether `total` is exact, or only a lower bound.
    pub total_exact: bool,
    /// Where the next page starts, when this one is full.
    pub next: Option<Cursor>,
}

fn job_state(job: &Job) -> JobState {
    JobState {
        status: job.status,
        run_id: job.run_id,
        attempts: job.attempts,
        max_attempts: job.max_attempts,
    }
}

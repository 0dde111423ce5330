//! The completer: records how runs ended, many at a time. Each finished run
//! is decided by the state machine (`jobs::state::decide`) and queued here;
//! one task writes whatever has queued up as one statement
//! (`db::jobs::queue::apply`: statuses, events, results, dead letters, and
//! start marks of runs still going), then announces the events and lets
//! each run's caller go. While a write is in flight the next batch gathers,
//! so under load batches grow by themselves and when idle a run waits for
//! one round trip only (group commit).
//!
//! A run is acknowledged only after its outcome is committed: a worker
//! draining on SIGTERM therefore exits with nothing unrecorded.

use std::{collections::HashMap, sync::Arc, time::Duration};
use tracing::Instrument;

use tokio::time::Instant;

use chrono::{DateTime, Utc};
use rand::Rng;
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc, oneshot};

use super::run::{RunOutcome, RunReport};
use crate::{
    db::{
        self,
        jobs::queue::{Claimed, Move, Started},
    },
    domain::{JobEventKind, JobId, JobStatus, RunId},
    jobs::state::{self, Event, JobState, Transition},
    live::Publisher,
};

/// Most runs recorded by one statement.
const MAX_BATCH: usize = 512;
/// A run is marked started (its job becomes `processing`, with the event)
/// once it has run this long. A run that ends sooner is recorded by one
/// write instead of two: its `processing` event is written with its end.
pub const START_MARK_AFTER: Duration = Duration::from_millis(200);
/// Runs waiting to be recorded before `finish` waits (backpressure).
const QUEUE_LIMIT: usize = 8_192;
/// Pause between attempts to write a batch while Postgres is unavailable.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The run a report is about, as it was claimed.
#[derive(Debug, Clone, Copy)]
pub struct RunRef {
    pub job: JobId,
    pub run: RunId,
    pub attempts: i32,
    pub max_attempts: i32,
}

impl From<&Claimed> for RunRef {
    fn from(claimed: &Claimed) -> Self {
        Self {
            job: claimed.id,
            run: claimed.run_id,
            attempts: claimed.attempts,
            max_attempts: claimed.max_attempts,
        }
    }
}

enum Item {
    Started(Started),
    Finished {
        run: RunRef,
        event: Event,
        result: Option<String>,
        started_at: Option<DateTime<Utc>>,
        elapsed: Duration,
        done: oneshot::Sender<()>,
    },
}

#[derive(Clone)]
pub struct Completer {
    queue: mpsc::Sender<Item>,
    committed: Arc<Notify>,
}

impl Completer {
    /// Starts the writing task; it ends once every `Completer` is dropped
    /// and the queue is written out.
    pub fn spawn(db: PgPool, publisher: Publisher) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(QUEUE_LIMIT);
        let committed = Arc::new(Notify::new());
        let task = tokio::spawn(write_loop(db, publisher, receiver, Arc::clone(&committed)));
        (Self { queue, committed }, task)
    }

    /// Notified after each batch is written.
    pub fn committed(&self) -> Arc<Notify> {
        Arc::clone(&self.committed)
    }

    /// Marks a run as executing: written once it has run for
    /// [`START_MARK_AFTER`] (its job becomes `processing`; a rescue after a
    /// crash then counts its attempt), or with its end if that comes first.
    pub async fn started(&self, run: RunRef, at: DateTime<Utc>) {
        let _ = self
            .queue
            .send(Item::Started(Started {
                job: run.job,
                run: run.run,
                at,
            }))
            .await;
    }

    /// Records how `run` ended; returns once that is committed (or found
    /// stale: the run is no longer the job's current one).
    pub async fn finish(&self, run: RunRef, report: RunReport) {
        let (event, result) = match report.outcome {
            RunOutcome::Succeeded(json) => (Event::RunSucceeded { run: run.run }, Some(json)),
            RunOutcome::Failed(failure) => (
                Event::RunFailed {
                    run: run.run,
                    failure,
                },
                None,
            ),
            // The cancel recorded everything; nothing to write.
            RunOutcome::Cancelled => return,
        };
        self.submit(run, event, result, Some(report.started_at), report.elapsed)
            .await;
    }

    /// Hands back a claimed run that never started (this worker is
    /// stopping): the job is queued again without losing an attempt.
    pub async fn release(&self, run: RunRef) {
        self.submit(
            run,
            Event::Released { run: run.run },
            None,
            None,
            Duration::ZERO,
        )
        .await;
    }

    async fn submit(
        &self,
        run: RunRef,
        event: Event,
        result: Option<String>,
        started_at: Option<DateTime<Utc>>,
        elapsed: Duration,
    ) {
        let (done, committed) = oneshot::channel();
        let item = Item::Finished {
            run,
            event,
            result,
            started_at,
            elapsed,
            done,
        };
        if self.queue.send(item).await.is_ok() {
            let _ = committed.await;
        }
    }
}

/// What became of one run once its batch was written, for metrics.
struct Pending {
    transition: Transition,
    elapsed: Duration,
    done: oneshot::Sender<()>,
}

async fn write_loop(
    db: PgPool,
    publisher: Publisher,
    mut receiver: mpsc::Receiver<Item>,
    committed: Arc<Notify>,
) {
    let mut buffer = Vec::with_capacity(MAX_BATCH);
    // Start marks not yet due, by job, with when they fall due.
    let mut starts: HashMap<JobId, (Started, Instant)> = HashMap::new();
    // Runs whose start mark was written (their jobs are `processing`).
    let mut marked: std::collections::HashSet<JobId> = std::collections::HashSet::new();
    let mut open = true;
    while open || !starts.is_empty() {
        buffer.clear();
        let next_due = starts.values().map(|(_, due)| *due).min();
        let received = match next_due {
            _ if !open => 0,
            None => receiver.recv_many(&mut buffer, MAX_BATCH).await,
            Some(due) => tokio::select! {
                n = receiver.recv_many(&mut buffer, MAX_BATCH) => n,
                () = tokio::time::sleep_until(due) => usize::MAX,
            },
        };
        if received == 0 {
            // Every sender is gone: write the marks still waiting, then stop.
            open = false;
        }
        let now = Instant::now();
        let mut items = std::mem::take(&mut buffer);
        for item in &items {
            match item {
                Item::Started(mark) => {
                    starts.insert(mark.job, (*mark, now + START_MARK_AFTER));
                }
                Item::Finished { run, .. } => {
                    starts.remove(&run.job);
                }
            }
        }
        items.retain(|item| matches!(item, Item::Finished { .. }));
        let due: Vec<Started> = starts
            .iter()
            .filter(|(_, (_, at))| *at <= now || !open)
            .map(|(_, (mark, _))| *mark)
            .collect();
        for mark in &due {
            starts.remove(&mark.job);
        }
        if items.is_empty() && due.is_empty() {
            continue;
        }
        write_batch(&db, &publisher, items, &due, &mut marked).await;
        marked.extend(due.iter().map(|mark| mark.job));
        committed.notify_one();
    }
}

async fn write_batch(
    db: &PgPool,
    publisher: &Publisher,
    items: Vec<Item>,
    started: &[Started],
    marked: &mut std::collections::HashSet<JobId>,
) {
    let mut moves = Vec::new();
    let mut pending: HashMap<JobId, Pending> = HashMap::new();
    for item in items {
        match item {
            Item::Started(_) => {}
            Item::Finished {
                run,
                event,
                result,
                started_at,
                elapsed,
                done,
            } => {
                let job = JobState {
                    status: JobStatus::Processing,
                    run_id: Some(run.run),
                    attempts: run.attempts,
                    max_attempts: run.max_attempts,
                };
                let jitter = rand::rng().random_range(0.5..=1.0);
                let transition = state::decide(&job, &event, jitter);
                let start_recorded = marked.remove(&run.job);
                if let Some(mv) = to_move(run, &transition, result, started_at, start_recorded) {
                    moves.push(mv);
                }
                pending.insert(
                    run.job,
                    Pending {
                        transition,
                        elapsed,
                        done,
                    },
                );
            }
        }
    }
    let events = write_with_retry(db, &mut moves, started).await;
    // A hand-back writes no event; every other move that applied did.
    let applied: std::collections::HashSet<JobId> = events.iter().map(|e| e.job_id).collect();
    for (job, p) in &pending {
        if applied.contains(job) || matches!(p.transition, Transition::Return { .. }) {
            record_metrics(&p.transition, p.elapsed);
        }
    }
    for (_, p) in pending {
        let _ = p.done.send(());
    }
    publisher.publish(events).await;
}

/// Writes the batch, waiting out a Postgres outage. A batch that Postgres
/// refuses for its content (one result it cannot store) is written run by
/// run instead, and a run that still fails is recorded as failed, so one
/// bad run never blocks the others.
async fn write_with_retry(
    db: &PgPool,
    moves: &mut [Move],
    started: &[Started],
) -> Vec<crate::db::job_events::JobEvent> {
    loop {
        let record = tracing::info_span!("db.record_runs", runs = moves.len());
        match db::jobs::queue::apply(db, moves, started)
            .instrument(record)
            .await
        {
            Ok(events) => return events,
            Err(err) if db::is_unavailable(&err) => {
                tracing::warn!(error = %err, runs = moves.len(), "cannot record runs yet; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(err) if moves.len() > 1 => {
                tracing::error!(error = %err, runs = moves.len(), "a batch of runs was refused; recording them one by one");
                let mut events = Vec::new();
                for mv in moves.iter_mut() {
                    events.extend(
                        Box::pin(write_with_retry(db, std::slice::from_mut(mv), &[])).await,
                    );
                }
                // Start marks are only a hint for rescue; losing them once
                // costs at most an attempt given back.
                return events;
            }
            Err(err) => {
                let Some(mv) = moves.first_mut() else {
                    return Vec::new();
                };
                if mv.status == JobStatus::Failed && mv.result.is_none() && mv.event.is_some() {
                    tracing::error!(error = %err, job_id = %mv.job, "cannot record a run's failure");
                    return Vec::new();
                }
                tracing::error!(error = %err, job_id = %mv.job, "cannot record a run; failing the job");
                *mv = Move {
                    status: JobStatus::Failed,
                    event: Some(JobEventKind::Failed),
                    delay_secs: 0.0,
                    attempt_delta: 0,
                    error: Some(format!("recording the outcome failed: {err}")),
                    dead_letter: Some(crate::domain::FailureReason::Unhandled),
                    result: None,
                    ..mv.clone()
                };
            }
        }
    }
}

/// The write that applies `transition` to `run`; `None` for nothing.
fn to_move(
    run: RunRef,
    transition: &Transition,
    result: Option<String>,
    started_at: Option<DateTime<Utc>>,
    start_recorded: bool,
) -> Option<Move> {
    let base = Move {
        job: run.job,
        run: run.run,
        status: JobStatus::Queued,
        event: None,
        delay_secs: 0.0,
        attempt_delta: 0,
        error: None,
        dead_letter: None,
        result: None,
        started_at,
        start_recorded,
    };
    Some(match transition {
        Transition::Succeed => Move {
            status: JobStatus::Succeeded,
            event: Some(JobEventKind::Succeeded),
            result,
            ..base
        },
        Transition::Retry { delay, error } => Move {
            event: Some(JobEventKind::RetryScheduled),
            delay_secs: delay.as_secs_f64(),
            error: Some(storable(error)),
            ..base
        },
        Transition::Fail { reason, error } => Move {
            status: JobStatus::Failed,
            event: Some(JobEventKind::Failed),
            error: Some(storable(error)),
            dead_letter: Some(*reason),
            ..base
        },
        Transition::Return { note } => {
            tracing::debug!(job_id = %run.job, %note, "run handed back unstarted");
            Move {
                attempt_delta: -1,
                started_at: None,
                ..base
            }
        }
        Transition::Cancel | Transition::Reset | Transition::Stale | Transition::Refused { .. } => {
            return None;
        }
    })
}

/// Error text as Postgres can store it (no NUL) and a client wants to read
/// it (bounded): extractor messages can quote a hostile document.
fn storable(error: &str) -> String {
    const MAX_ERROR_CHARS: usize = 2_000;
    let mut text: String = error
        .chars()
        .filter(|c| *c != '\0')
        .take(MAX_ERROR_CHARS)
        .collect();
    if error.chars().count() > MAX_ERROR_CHARS {
        text.push('…');
    }
    text
}

fn record_metrics(transition: &Transition, elapsed: Duration) {
    match transition {
        Transition::Succeed => crate::metrics::job_succeeded(elapsed),
        Transition::Retry { .. } => crate::metrics::retry_scheduled(elapsed),
        Transition::Fail { reason, .. } => crate::metrics::job_failed(*reason, elapsed),
        Transition::Return { .. } => crate::metrics::job_returned(),
        Transition::Cancel | Transition::Reset | Transition::Stale | Transition::Refused { .. } => {
        }
    }
}

/// Moves for a batch of rescued runs (the leader's rescue), decided by the
/// same state machine, with what each became for metrics.
pub fn rescue_moves(orphans: &[db::jobs::queue::Orphan]) -> Vec<(Move, Transition)> {
    orphans
        .iter()
        .filter_map(|orphan| {
            let run = RunRef {
                job: orphan.job,
                run: orphan.run,
                attempts: orphan.attempts,
                max_attempts: orphan.max_attempts,
            };
            let job = JobState {
                status: JobStatus::Processing,
                run_id: Some(orphan.run),
                attempts: orphan.attempts,
                max_attempts: orphan.max_attempts,
            };
            let event = Event::WorkerLost {
                run: orphan.run,
                started: orphan.started,
            };
            let transition = state::decide(&job, &event, rand::rng().random_range(0.5..=1.0));
            to_move(run, &transition, None, None, orphan.started).map(|mv| (mv, transition))
        })
        .collect()
}

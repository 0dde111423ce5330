//! The job state machine, as one pure function: [`decide`] takes a job's
//! state and something that happened to it, and says what the job becomes.
//! No I/O, no clock, no randomness (the caller passes the jitter), so every
//! arrow is a table row in the tests below.
//!
//! The database applies a [`Transition`] with SQL that re-checks what the
//! decision assumed (`status = 'processing' AND run_id = $run`), so a
//! decision made on a stale view records nothing (`db::jobs` and
//! `db::queue`).

use std::time::Duration;

use crate::domain::{FailureReason, JobStatus, RunId};

/// What `decide` needs to know of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobState {
    pub status: JobStatus,
    /// The current run while `processing`.
    pub run_id: Option<RunId>,
    /// Attempts counted so far, the current run's included.
    pub attempts: i32,
    pub max_attempts: i32,
}

/// How a run's failure is classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth retrying: storage or OCR timed out, scratch space was short.
    Transient(String),
    /// The extractor process died (a crash, a memory limit): retried, since
    /// it can be the machine's fault, and dead-lettered as `unhandled` once
    /// attempts run out, so a document that kills its extractor every time
    /// still ends.
    Crashed(String),
    /// The document cannot be processed; retrying would fail the same way.
    Permanent(String),
    /// The extractor overran its time or CPU budget.
    Timeout(String),
    /// Our own bug (a panic in the worker): fail now, loudly.
    Unhandled(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Self::Transient(m)
            | Self::Crashed(m)
            | Self::Permanent(m)
            | Self::Timeout(m)
            | Self::Unhandled(m) => m,
        }
    }
}

/// Something that happened to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Run `run` finished executing.
    RunSucceeded {
        run: RunId,
    },
    RunFailed {
        run: RunId,
        failure: Failure,
    },
    /// The worker holding run `run` is gone (its lease expired). `started`
    /// says whether the run had begun executing or was only claimed.
    WorkerLost {
        run: RunId,
        started: bool,
    },
    /// A worker hands back run `run`, claimed but never started (it is
    /// shutting down).
    Released {
        run: RunId,
    },
    /// The owner cancels the job.
    CancelRequested,
    /// An admin runs a finished-badly job again.
    RequeueRequested,
}

/// What the job becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// `succeeded`, with the run's result.
    Succeed,
    /// Back to `queued`, due after `delay`; the attempt stays counted.
    Retry { delay: Duration, error: String },
    /// `failed`, dead-lettered with `reason`.
    Fail {
        reason: FailureReason,
        error: String,
    },
    /// Back to `queued` now; the attempt is given back (it never ran).
    Return { note: String },
    /// `cancelled`: final; a running extraction is stopped.
    Cancel,
    /// Back to `queued` with no attempts: an admin's fresh start.
    Reset,
    /// Nothing to record: the event is about a run that is no longer the
    /// job's current one (rescued, cancelled, requeued), or the job is done.
    Stale,
    /// The request does not apply to the job in its state (answered 409).
    Refused { status: JobStatus },
}

/// Retries wait `min(60, 2^attempts) × jitter` seconds, `jitter` drawn from
/// 0.5–1.0 by the caller: exponential, capped, and spread so jobs that
/// failed together do not retry together.
pub fn backoff(attempts: i32, jitter: f64) -> Duration {
    let exponent = u32::try_from(attempts.clamp(0, 6)).unwrap_or(6);
    let base = f64::from(2_u32.pow(exponent)).min(60.0);
    Duration::from_secs_f64(base * jitter.clamp(0.5, 1.0))
}

/// The state machine. `jitter` (0.5–1.0) spreads retry delays.
pub fn decide(job: &JobState, event: &Event, jitter: f64) -> Transition {
    let current_run = |run: &RunId| job.status == JobStatus::Processing && job.run_id == Some(*run);
    let attempts_left = job.attempts < job.max_attempts;
    match event {
        Event::RunSucceeded { run } if current_run(run) => Transition::Succeed,
        Event::RunFailed { run, failure } if current_run(run) => {
            let error = failure.message().to_owned();
            match failure {
                Failure::Transient(_) | Failure::Crashed(_) if attempts_left => Transition::Retry {
                    delay: backoff(job.attempts, jitter),
                    error,
                },
                Failure::Transient(_) => Transition::Fail {
                    reason: FailureReason::TransientExhausted,
                    error,
                },
                Failure::Crashed(_) | Failure::Unhandled(_) => Transition::Fail {
                    reason: FailureReason::Unhandled,
                    error,
                },
                Failure::Permanent(_) => Transition::Fail {
                    reason: FailureReason::Permanent,
                    error,
                },
                Failure::Timeout(_) => Transition::Fail {
                    reason: FailureReason::Timeout,
                    error,
                },
            }
        }
        Event::WorkerLost { run, started } if current_run(run) => {
            if !started {
                Transition::Return {
                    note: "returned to the queue: its worker stopped before running it".into(),
                }
            } else if attempts_left {
                Transition::Retry {
                    delay: backoff(job.attempts, jitter),
                    error: "the worker running it stopped".into(),
                }
            } else {
                Transition::Fail {
                    reason: FailureReason::TransientExhausted,
                    error: "the worker running its last attempt stopped".into(),
                }
            }
        }
        Event::Released { run } if current_run(run) => Transition::Return {
            note: "returned to the queue unstarted: its worker is shutting down".into(),
        },
        Event::RunSucceeded { .. }
        | Event::RunFailed { .. }
        | Event::WorkerLost { .. }
        | Event::Released { .. } => Transition::Stale,
        Event::CancelRequested => match job.status {
            JobStatus::Queued | JobStatus::Processing => Transition::Cancel,
            status => Transition::Refused { status },
        },
        Event::RequeueRequested => match job.status {
            JobStatus::Failed | JobStatus::Cancelled => Transition::Reset,
            status => Transition::Refused { status },
        },
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    const RUN: RunId = RunId(Uuid::from_u128(1));
    const OTHER_RUN: RunId = RunId(Uuid::from_u128(2));

    fn processing(attempts: i32) -> JobState {
        JobState {
            status: JobStatus::Processing,
            run_id: Some(RUN),
            attempts,
            max_attempts: 3,
        }
    }

    fn at_rest(status: JobStatus) -> JobState {
        JobState {
            status,
            run_id: None,
            attempts: 1,
            max_attempts: 3,
        }
    }

    fn failed(reason: FailureReason, error: &str) -> Transition {
        Transition::Fail {
            reason,
            error: error.into(),
        }
    }

    fn retry(attempts: i32, error: &str) -> Transition {
        Transition::Retry {
            delay: backoff(attempts, 1.0),
            error: error.into(),
        }
    }

    fn run_failed(failure: Failure) -> Event {
        Event::RunFailed { run: RUN, failure }
    }

    #[test]
    fn every_arrow() {
        use Failure::*;
        use FailureReason as R;
        use JobStatus::*;
        let table: Vec<(&str, JobState, Event, Transition)> = vec![
            (
                "success",
                processing(1),
                Event::RunSucceeded { run: RUN },
                Transition::Succeed,
            ),
            (
                "transient, attempts left",
                processing(1),
                run_failed(Transient("storage: timeout".into())),
                retry(1, "storage: timeout"),
            ),
            (
                "transient, attempts exhausted",
                processing(3),
                run_failed(Transient("storage: timeout".into())),
                failed(R::TransientExhausted, "storage: timeout"),
            ),
            (
                "crash, attempts left",
                processing(2),
                run_failed(Crashed("killed by SIGSEGV".into())),
                retry(2, "killed by SIGSEGV"),
            ),
            (
                "crash, attempts exhausted",
                processing(3),
                run_failed(Crashed("killed by SIGSEGV".into())),
                failed(R::Unhandled, "killed by SIGSEGV"),
            ),
            (
                "permanent, attempts left",
                processing(1),
                run_failed(Permanent("encrypted".into())),
                failed(R::Permanent, "encrypted"),
            ),
            (
                "timeout",
                processing(1),
                run_failed(Timeout("took longer than 180 s".into())),
                failed(R::Timeout, "took longer than 180 s"),
            ),
            (
                "panic",
                processing(1),
                run_failed(Unhandled("the worker panicked".into())),
                failed(R::Unhandled, "the worker panicked"),
            ),
            (
                "rescue of a run that started, attempts left",
                processing(2),
                Event::WorkerLost {
                    run: RUN,
                    started: true,
                },
                retry(2, "the worker running it stopped"),
            ),
            (
                "rescue of a run that started on its last attempt",
                processing(3),
                Event::WorkerLost {
                    run: RUN,
                    started: true,
                },
                failed(
                    R::TransientExhausted,
                    "the worker running its last attempt stopped",
                ),
            ),
            (
                "rescue of a run only claimed, even on the last attempt",
                processing(3),
                Event::WorkerLost {
                    run: RUN,
                    started: false,
                },
                Transition::Return {
                    note: "returned to the queue: its worker stopped before running it".into(),
                },
            ),
            (
                "release at shutdown",
                processing(1),
                Event::Released { run: RUN },
                Transition::Return {
                    note: "returned to the queue unstarted: its worker is shutting down".into(),
                },
            ),
            (
                "stale success after a rescue",
                processing(2),
                Event::RunSucceeded { run: OTHER_RUN },
                Transition::Stale,
            ),
            (
                "stale failure after a requeue",
                at_rest(Queued),
                run_failed(Permanent("x".into())),
                Transition::Stale,
            ),
            (
                "stale success after a cancel",
                at_rest(Cancelled),
                Event::RunSucceeded { run: RUN },
                Transition::Stale,
            ),
            (
                "stale rescue",
                at_rest(Succeeded),
                Event::WorkerLost {
                    run: RUN,
                    started: true,
                },
                Transition::Stale,
            ),
            (
                "cancel queued",
                at_rest(Queued),
                Event::CancelRequested,
                Transition::Cancel,
            ),
            (
                "cancel running",
                processing(1),
                Event::CancelRequested,
                Transition::Cancel,
            ),
            (
                "cancel finished",
                at_rest(Succeeded),
                Event::CancelRequested,
                Transition::Refused { status: Succeeded },
            ),
            (
                "cancel failed",
                at_rest(Failed),
                Event::CancelRequested,
                Transition::Refused { status: Failed },
            ),
            (
                "cancel twice",
                at_rest(Cancelled),
                Event::CancelRequested,
                Transition::Refused { status: Cancelled },
            ),
            (
                "requeue failed",
                at_rest(Failed),
                Event::RequeueRequested,
                Transition::Reset,
            ),
            (
                "requeue cancelled",
                at_rest(Cancelled),
                Event::RequeueRequested,
                Transition::Reset,
            ),
            (
                "requeue queued",
                at_rest(Queued),
                Event::RequeueRequested,
                Transition::Refused { status: Queued },
            ),
            (
                "requeue running",
                processing(1),
                Event::RequeueRequested,
                Transition::Refused { status: Processing },
            ),
            (
                "requeue succeeded",
                at_rest(Succeeded),
                Event::RequeueRequested,
                Transition::Refused { status: Succeeded },
            ),
        ];
        for (name, job, event, expected) in table {
            assert_eq!(decide(&job, &event, 1.0), expected, "{name}");
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        assert_eq!(backoff(0, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(3, 0.5), Duration::from_secs(4));
        assert_eq!(backoff(6, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(30, 1.0), Duration::from_secs(60));
        // Jitter outside 0.5–1.0 is clamped, so a bad draw cannot retry at once.
        assert_eq!(backoff(3, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(-1, 1.0), Duration::from_secs(1));
    }
}

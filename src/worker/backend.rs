//! The apalis side of the queue: [`JobsBackend`] implements apalis 1.0's
//! `Backend` over the `jobs` table, so the worker is an ordinary apalis
//! `Worker` with apalis layers (concurrency, tracing of tasks, graceful
//! drain). The backend hands out the runs the producer claimed, and its
//! middleware ([`CompleteLayer`]) acknowledges each: it frees the run's
//! slot for the producer and hands the outcome to the completer, returning
//! once it is committed. On shutdown, runs still buffered are handed back
//! unstarted.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use apalis::prelude::{Backend, BoxDynError, Task, WorkerContext};
use apalis_core::backend::{BackendConfig, finalize::Ephemeral};
use futures_util::FutureExt;
use tokio::sync::{Notify, mpsc};
use tower_layer::Layer;
use tower_service::Service;

use super::{
    completer::{Completer, RunRef},
    run::{RunOutcome, RunReport},
};
use crate::{db::jobs::queue::Claimed, jobs::state::Failure};

/// How many runs a worker holds (claimed, buffered or running): the
/// producer claims only into free slots, so a busy worker leaves work to
/// the others.
pub struct Slots {
    capacity: usize,
    held: AtomicUsize,
    freed: Notify,
}

impl Slots {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            held: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    pub fn free(&self) -> usize {
        self.capacity
            .saturating_sub(self.held.load(Ordering::Acquire))
    }

    pub fn hold(&self, runs: usize) {
        self.held.fetch_add(runs, Ordering::AcqRel);
    }

    pub fn release(&self, runs: usize) {
        self.held.fetch_sub(runs, Ordering::AcqRel);
        self.freed.notify_one();
    }

    /// Resolves after the next `release`.
    pub async fn freed(&self) {
        self.freed.notified().await;
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

type CloseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The `Backend`: the stream of claimed runs.
pub struct JobsBackend {
    claims: mpsc::Receiver<Claimed>,
    completer: Completer,
    slots: Arc<Slots>,
    closing: Option<CloseFuture>,
}

impl JobsBackend {
    pub fn new(claims: mpsc::Receiver<Claimed>, completer: Completer, slots: Arc<Slots>) -> Self {
        Self {
            claims,
            completer,
            slots,
            closing: None,
        }
    }
}

/// The backend never fails: claim errors are the producer's to retry.
#[derive(Debug, thiserror::Error)]
#[error("the jobs backend stopped")]
pub struct BackendError;

impl Backend for JobsBackend {
    type Task = Task<Claimed>;
    type Error = BackendError;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        self.claims
            .poll_recv(cx)
            .map(|claimed| claimed.map(|claimed| Ok(Task::new(claimed))))
    }

    /// Called once the running tasks are done: hands back every claimed
    /// run still buffered (no attempt lost), then waits until the completer
    /// has written it.
    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        if self.closing.is_none() {
            self.claims.close();
            let mut unstarted = Vec::new();
            while let Ok(claimed) = self.claims.try_recv() {
                unstarted.push(RunRef::from(&claimed));
            }
            let completer = self.completer.clone();
            let slots = Arc::clone(&self.slots);
            self.closing = Some(Box::pin(async move {
                for run in &unstarted {
                    completer.release(*run).await;
                    slots.release(1);
                }
                if !unstarted.is_empty() {
                    tracing::info!(
                        runs = unstarted.len(),
                        "handed back runs that never started"
                    );
                }
            }));
        }
        match self.closing.as_mut().map(|f| f.poll_unpin(cx)) {
            Some(Poll::Pending) => Poll::Pending,
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl BackendConfig for JobsBackend {
    type Args = Claimed;
    type Id = uuid::Uuid;
    // apalis's name for "tasks come out typed, with no codec to decode
    // them": the durability is the jobs table's, not apalis's.
    type Kind = Ephemeral;
    type Config = ();
    type Layer = CompleteLayer;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        CompleteLayer {
            completer: self.completer.clone(),
            slots: Arc::clone(&self.slots),
        }
    }
}

/// Acknowledges runs: see the module docs.
#[derive(Clone)]
pub struct CompleteLayer {
    completer: Completer,
    slots: Arc<Slots>,
}

impl<S> Layer<S> for CompleteLayer {
    type Service = CompleteService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CompleteService {
            inner,
            completer: self.completer.clone(),
            slots: Arc::clone(&self.slots),
        }
    }
}

#[derive(Clone)]
pub struct CompleteService<S> {
    inner: S,
    completer: Completer,
    slots: Arc<Slots>,
}

impl<S> Service<Task<Claimed>> for CompleteService<S>
where
    S: Service<Task<Claimed>, Response = RunReport>,
    S::Error: Into<BoxDynError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = BoxDynError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxDynError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Claimed>) -> Self::Future {
        let run = RunRef::from(&task.args);
        let started = chrono::Utc::now();
        let completer = self.completer.clone();
        let slots = Arc::clone(&self.slots);
        let future = self.inner.call(task);
        Box::pin(async move {
            completer.started(run, started).await;
            let report = future.await.unwrap_or_else(|err| RunReport {
                outcome: RunOutcome::Failed(Failure::Unhandled(format!(
                    "the worker could not run the job: {}",
                    err.into()
                ))),
                started_at: started,
                elapsed: std::time::Duration::ZERO,
            });
            // The slot is free as soon as the run is: recording it is the
            // completer's work, and it keeps this task until it is done.
            slots.release(1);
            completer.finish(run, report).await;
            Ok(())
        })
    }
}

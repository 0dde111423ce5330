//! Live job status: the path from a committed status change to every client
//! watching that job.
//!
//! - The durable record is `job_events` (per-job `seq`), written in the same
//!   transaction as the change. Everything here is a notification that an
//!   event exists; a lost notification costs latency, never an event, because
//!   streams re-read Postgres whenever they may have missed something.
//! - After commit the writer (API or worker) calls [`Publisher::publish`]:
//!   one Redis PUBLISH, or a direct hand-off to the [`Hub`] on a single node.
//! - Each API process holds ONE Redis subscription ([`fanout`]) that feeds
//!   its [`Hub`], which hands events to the streams of that job in-process.
//! - A stream ([`stream::follow`]) subscribes first, then reads Postgres, and
//!   de-duplicates by `seq`, so an event committed while it connects is seen
//!   once; it reads Postgres again only to fill a gap.
//! - The hub's [`poller`] reads Postgres for all watched jobs at once (one
//!   statement): every second while Redis is unavailable, every
//!   `SSE_KEEPALIVE_SECS` otherwise (a writer may have failed to publish),
//!   and at each change of connection state.

pub mod admission;
pub mod fanout;
pub mod poller;
pub mod stream;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    db::job_events::JobEvent,
    domain::{JobEventKind, JobId},
    ephemeral::RedisStore,
};

/// The pub/sub topic (under REDIS_KEY_PREFIX) status events travel on.
pub const TOPIC: &str = "job-status";

/// Revocations a process's streams may fall behind by.
const REVOCATIONS_BUFFER: usize = 256;

/// The topic revoked sessions are announced on (under the key prefix).
pub const SESSIONS_TOPIC: &str = "session-revoked";

/// Events a slow stream may fall behind by before it re-reads Postgres.
const PER_JOB_BUFFER: usize = 16;

/// One status change of a job: the `data` of an SSE `status` event, and the
/// message on the pub/sub channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StatusEvent {
    pub job_id: Uuid,
    /// The event's number within its job (also the SSE `id`).
    pub seq: i32,
    pub status: JobEventKind,
    pub attempts: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl StatusEvent {
    /// After `succeeded`, `failed` or `cancelled` nothing more happens
    /// (unless an admin requeues the job, which a new stream then reports).
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }
}

impl From<JobEvent> for StatusEvent {
    fn from(event: JobEvent) -> Self {
        Self {
            job_id: event.job_id.0,
            seq: event.seq,
            status: event.status,
            attempts: event.attempts,
            error: event.error,
            updated_at: event.created_at,
        }
    }
}

/// Whether notifications are flowing, and a counter bumped whenever streams
/// should re-read Postgres because some may have been missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub connected: bool,
    pub epoch: u64,
}

/// Per-process dispatch of status events to the streams watching each job.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    jobs: Mutex<HashMap<JobId, broadcast::Sender<Arc<StatusEvent>>>>,
    /// Sessions revoked (logout, refresh-token reuse) anywhere: their open
    /// streams end.
    revoked: broadcast::Sender<Uuid>,
    streams: admission::Admission,
    health: watch::Sender<Health>,
    closed: CancellationToken,
}

impl Hub {
    /// `connected`: whether notifications flow from the start (in-process:
    /// yes; Redis: not until the subscription is confirmed).
    pub fn new(connected: bool) -> Self {
        Self {
            inner: Arc::new(HubInner {
                jobs: Mutex::new(HashMap::new()),
                streams: admission::Admission::default(),
                revoked: broadcast::channel(REVOCATIONS_BUFFER).0,
                health: watch::Sender::new(Health {
                    connected,
                    epoch: 0,
                }),
                closed: CancellationToken::new(),
            }),
        }
    }

    /// Ends the open streams of `session` in this process.
    pub fn revoke_session(&self, session: Uuid) {
        // No receivers (no open streams) is fine.
        let _ = self.inner.revoked.send(session);
    }

    /// Resolves when `session` is revoked (or the hub closes): what a
    /// stream of that session ends on.
    pub fn session_revoked(
        &self,
        session: Uuid,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut revocations = self.inner.revoked.subscribe();
        async move {
            loop {
                match revocations.recv().await {
                    Ok(revoked) if revoked == session => return,
                    // A missed revocation ends the stream at its time cap,
                    // and the token no longer opens a new one.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }

    /// Admits one more stream of `user`'s, within `caps`; its place is
    /// given back when the returned guard drops.
    pub fn admit(
        &self,
        user: crate::domain::UserId,
        caps: admission::StreamCaps,
    ) -> Result<admission::Admitted, admission::Refused> {
        self.inner.streams.admit(user, caps)
    }

    /// Starts receiving `job_id`'s events; stops when the subscription drops.
    pub fn subscribe(&self, job_id: JobId) -> Subscription {
        let mut jobs = self.lock();
        let receiver = jobs
            .entry(job_id)
            .or_insert_with(|| broadcast::channel(PER_JOB_BUFFER).0)
            .subscribe();
        Subscription {
            hub: self.clone(),
            job_id,
            receiver: Some(receiver),
        }
    }

    /// Hands an event to the streams watching its job, if any.
    pub fn dispatch(&self, event: StatusEvent) {
        let jobs = self.lock();
        if let Some(sender) = jobs.get(&JobId(event.job_id)) {
            // No receivers left is fine: they are being dropped right now.
            let _ = sender.send(Arc::new(event));
        }
    }

    pub fn health(&self) -> watch::Receiver<Health> {
        self.inner.health.subscribe()
    }

    /// Marks notifications as flowing again (or still flowing, but possibly
    /// with a gap): the poller reads every watched job once.
    pub fn mark_connected(&self) {
        self.inner.health.send_modify(|health| {
            health.connected = true;
            health.epoch += 1;
        });
    }

    /// Marks notifications as not flowing: streams poll Postgres meanwhile.
    pub fn mark_disconnected(&self) {
        self.inner.health.send_if_modified(|health| {
            let was = health.connected;
            health.connected = false;
            was
        });
    }

    pub fn is_connected(&self) -> bool {
        self.inner.health.borrow().connected
    }

    /// Jobs with at least one open stream in this process.
    pub fn watched_jobs(&self) -> usize {
        self.lock().len()
    }

    fn watched(&self) -> Vec<JobId> {
        self.lock().keys().copied().collect()
    }

    /// Ends every stream (server shutdown), so graceful draining does not
    /// wait for them.
    pub fn close(&self) {
        self.inner.closed.cancel();
    }

    pub fn closed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.inner.closed.cancelled()
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<JobId, broadcast::Sender<Arc<StatusEvent>>>> {
        self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A stream's registration for one job's events.
pub struct Subscription {
    hub: Hub,
    job_id: JobId,
    /// Always `Some` until dropped (taken in `Drop`, under the hub's lock).
    receiver: Option<broadcast::Receiver<Arc<StatusEvent>>>,
}

impl Subscription {
    pub async fn recv(&mut self) -> Result<Arc<StatusEvent>, broadcast::error::RecvError> {
        match self.receiver.as_mut() {
            Some(receiver) => receiver.recv().await,
            None => Err(broadcast::error::RecvError::Closed),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Drop our receiver and look at the count under the lock, so that of
        // two streams closing at once the last one removes the entry, and a
        // concurrent `subscribe` either keeps it alive or creates a new one.
        let mut jobs = self.hub.lock();
        drop(self.receiver.take());
        if jobs
            .get(&self.job_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            jobs.remove(&self.job_id);
        }
    }
}

/// Where a process announces the status events it has committed.
#[derive(Clone)]
pub enum Publisher {
    /// To every API replica through Redis pub/sub.
    Redis(RedisStore),
    /// Straight to this process's hub (`all-in-one` without Redis).
    Local(Hub),
    /// Nowhere: a worker without REDIS_URL. Streams still see its events
    /// through their hub's poller, within SSE_KEEPALIVE_SECS.
    Off,
}

impl Publisher {
    /// Announces committed events, all in one message (a worker's batch of
    /// runs is one PUBLISH). Best effort by design: Postgres has them, and
    /// a stream that misses the announcement finds them there.
    pub async fn publish(&self, events: impl IntoIterator<Item = JobEvent>) {
        let events: Vec<StatusEvent> = events.into_iter().map(StatusEvent::from).collect();
        if events.is_empty() {
            return;
        }
        match self {
            Self::Redis(redis) => {
                let payload = match serde_json::to_string(&events) {
                    Ok(payload) => payload,
                    Err(err) => {
                        tracing::error!(error = %err, "cannot encode status events");
                        return;
                    }
                };
                if let Err(err) = redis.publish(TOPIC, payload).await {
                    tracing::warn!(
                        error = %err,
                        events = events.len(),
                        "cannot publish status events; streams will find them in Postgres"
                    );
                }
            }
            Self::Local(hub) => {
                for event in events {
                    hub.dispatch(event);
                }
            }
            Self::Off => {}
        }
    }

    /// Announces that `session` was revoked, so every API process ends its
    /// open streams at once. Best effort: missed, they end at their time
    /// cap and cannot reopen.
    pub async fn revoke_session(&self, session: Uuid) {
        match self {
            Self::Redis(redis) => {
                if let Err(err) = redis.publish(SESSIONS_TOPIC, session.to_string()).await {
                    tracing::warn!(error = %err, "cannot announce a revoked session; its streams end at their time cap");
                }
            }
            Self::Local(hub) => hub.revoke_session(session),
            Self::Off => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(job_id: JobId, seq: i32) -> StatusEvent {
        StatusEvent {
            job_id: job_id.0,
            seq,
            status: JobEventKind::Processing,
            attempts: 1,
            error: None,
            updated_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn dispatch_reaches_only_that_jobs_subscribers_and_cleans_up() {
        let hub = Hub::new(true);
        let (a, b) = (JobId::generate(), JobId::generate());
        let mut first = hub.subscribe(a);
        let mut second = hub.subscribe(a);
        let mut other = hub.subscribe(b);
        hub.dispatch(event(a, 2));
        assert_eq!(first.recv().await.expect("event").seq, 2);
        assert_eq!(second.recv().await.expect("event").seq, 2);
        assert!(
            other
                .receiver
                .as_mut()
                .is_some_and(|receiver| receiver.try_recv().is_err())
        );
        assert_eq!(hub.watched_jobs(), 2);
        drop(first);
        assert_eq!(hub.watched_jobs(), 2, "a's second stream is still open");
        drop(second);
        drop(other);
        assert_eq!(hub.watched_jobs(), 0);
        // Dispatching to a job nobody watches is a no-op.
        hub.dispatch(event(a, 3));
    }

    #[test]
    fn health_epochs_advance_on_every_reconnect() {
        let hub = Hub::new(false);
        let health = hub.health();
        hub.mark_connected();
        hub.mark_disconnected();
        hub.mark_connected();
        assert_eq!(
            *health.borrow(),
            Health {
                connected: true,
                epoch: 2
            }
        );
    }
}

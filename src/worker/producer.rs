//! The producer: claims runs into this worker's free slots and feeds them
//! to the backend. It claims when woken (a NOTIFY that a job became
//! claimable, a slot freed after a full claim, its completer's write while
//! it holds runs) or on a jittered poll, the backstop for scheduled retries
//! and missed notifications. The same LISTEN connection carries
//! cancellations, which stop a run in progress.
//!
//! It keeps the list of owners it serves: found by a scan over the claim
//! index every second or so (and whenever a claim comes back short), and
//! grown at once by the owner each NOTIFY names. A claim then reads only
//! those owners' jobs, so the claim itself never walks the whole queue.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};
use tracing::Instrument;

use rand::Rng;
use sqlx::{PgPool, postgres::PgListener};
use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Handler, backend::Slots};
use crate::{
    db::{
        self,
        jobs::queue::{ClaimLimits, Claimed},
    },
    domain::JobId,
};

/// The channel a committed `queued` job is announced on (by the statement
/// that creates or requeues it), with its owners' ids, comma-separated.
pub const JOBS_CHANNEL: &str = "docflow_jobs";
/// The channel a cancel is announced on, with the job id.
pub const CANCEL_CHANNEL: &str = "docflow_cancel";

/// Between polls when no notification comes: 0.5–1.5 × this.
const POLL: Duration = Duration::from_secs(1);
/// How long a list of owners is trusted: 0.5–1.5 × this.
const OWNERS_FRESH: Duration = Duration::from_secs(1);
/// Pause after a failed claim (Postgres unreachable).
const CLAIM_RETRY: Duration = Duration::from_millis(500);

/// Owners announced by NOTIFY since the producer last looked.
#[derive(Default)]
pub struct Announced(Mutex<HashSet<Uuid>>);

impl Announced {
    fn add(&self, owner: Uuid) {
        self.lock().insert(owner);
    }

    fn take(&self) -> HashSet<Uuid> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Producer {
    pub db: PgPool,
    pub worker: Uuid,
    pub slots: Arc<Slots>,
    /// Most jobs one claim takes.
    pub max_claim: usize,
    /// Owners served at a time.
    pub owners_per_claim: i32,
    /// Running jobs per owner, across all workers.
    pub per_owner_running: i32,
    pub announced: Arc<Announced>,
}

/// The owners this producer serves, in turn order.
struct Owners {
    list: Vec<Uuid>,
    /// When the list must be looked up again.
    stale_at: Instant,
}

impl Producer {
    /// Claims until `shutdown`, sending each run to `runs`. Waits between
    /// claims for a NOTIFY, the poll, or its completer's next write: what a
    /// short claim left behind (a user at their running cap, rows another
    /// worker had locked) may be claimable once those runs are recorded.
    pub async fn run(
        self,
        runs: mpsc::Sender<Claimed>,
        wake: Arc<Notify>,
        committed: Arc<Notify>,
        shutdown: CancellationToken,
    ) {
        let mut owners = Owners {
            list: Vec::new(),
            stale_at: Instant::now(),
        };
        loop {
            self.claim_while_work(&mut owners, &runs, &shutdown).await;
            let poll = POLL.mul_f64(rand::rng().random_range(0.5..1.5));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = wake.notified() => {}
                () = committed.notified() => {}
                () = tokio::time::sleep(poll) => owners.stale_at = Instant::now(),
            }
        }
    }

    /// Claims as long as slots are free and claims come back full.
    async fn claim_while_work(
        &self,
        owners: &mut Owners,
        runs: &mpsc::Sender<Claimed>,
        shutdown: &CancellationToken,
    ) {
        let mut looked_up = false;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let mut free = self.slots.free().min(self.max_claim);
            if free == 0 {
                // Full: claim again as soon as a run ends.
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = self.slots.freed() => continue,
                }
            }
            if free < self.max_claim / 4 {
                // Runs end in bursts: let the burst finish, so one claim
                // takes many instead of one claim per ended run.
                for _ in 0..8 {
                    tokio::task::yield_now().await;
                }
                free = self.slots.free().min(self.max_claim);
            }
            let announced = self.announced.take();
            for owner in announced {
                if !owners.list.contains(&owner) {
                    owners.list.push(owner);
                }
            }
            if owners.list.is_empty() || Instant::now() >= owners.stale_at {
                if !self.look_up_owners(owners, shutdown).await {
                    continue;
                }
                looked_up = true;
            }
            if owners.list.is_empty() {
                return;
            }
            let limits = ClaimLimits {
                jobs: i32::try_from(free).unwrap_or(i32::MAX),
                per_owner_running: self.per_owner_running,
            };
            let claimed = match db::jobs::queue::claim(&self.db, self.worker, &owners.list, limits)
                .instrument(tracing::info_span!("db.claim", free))
                .await
            {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::warn!(error = %err, "claiming jobs failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(CLAIM_RETRY) => continue,
                    }
                }
            };
            // Whoever went first this time goes last next time.
            owners.list.rotate_left(1);
            let got = claimed.len();
            if got > 0 {
                self.slots.hold(got);
                for run in claimed {
                    // The channel holds as many runs as there are slots, so
                    // this never waits; it fails only if the worker has
                    // stopped, and then the lease's expiry returns the run.
                    if runs.send(run).await.is_err() {
                        return;
                    }
                }
            }
            if got < free {
                // Short: those owners are drained (or capped). Others may
                // have work: look once, then wait to be woken.
                if looked_up {
                    return;
                }
                owners.stale_at = Instant::now();
            }
        }
    }

    /// Replaces the list of owners with those who have work now (plus any
    /// announced meanwhile). `false` if the lookup failed.
    async fn look_up_owners(&self, owners: &mut Owners, shutdown: &CancellationToken) -> bool {
        match db::jobs::queue::owners_with_work(&self.db, self.owners_per_claim).await {
            Ok(found) => {
                owners.list = found;
                for owner in self.announced.take() {
                    if !owners.list.contains(&owner) {
                        owners.list.push(owner);
                    }
                }
                owners.stale_at =
                    Instant::now() + OWNERS_FRESH.mul_f64(rand::rng().random_range(0.5..1.5));
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, "finding queued jobs failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(CLAIM_RETRY) => {}
                }
                false
            }
        }
    }
}

/// Follows NOTIFYs on a connection of its own: wakes the producer when
/// jobs become claimable (noting whose) and stops runs that were
/// cancelled. Reconnects on its own (notifications sent meanwhile are
/// covered by the poll and by the lease check of running jobs).
pub async fn listen<H: Handler>(
    db: PgPool,
    wake: Arc<Notify>,
    announced: Arc<Announced>,
    runner: Arc<H>,
    shutdown: CancellationToken,
) {
    loop {
        let mut listener = match PgListener::connect_with(&db).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, "cannot LISTEN for jobs yet; polling meanwhile");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(err) = listener.listen_all([JOBS_CHANNEL, CANCEL_CHANNEL]).await {
            tracing::warn!(error = %err, "cannot LISTEN for jobs yet; polling meanwhile");
            continue;
        }
        // Anything announced while we were not listening: look now.
        wake.notify_one();
        loop {
            let notification = tokio::select! {
                () = shutdown.cancelled() => return,
                received = listener.recv() => received,
            };
            match notification {
                Ok(n) if n.channel() == CANCEL_CHANNEL => {
                    if let Ok(id) = n.payload().parse::<Uuid>()
                        && runner.cancel(JobId(id))
                    {
                        tracing::info!(job_id = %id, "stopping a cancelled run");
                    }
                }
                Ok(n) => {
                    // The owners with new jobs, comma-separated.
                    for owner in n.payload().split(',') {
                        if let Ok(owner) = owner.parse::<Uuid>() {
                            announced.add(owner);
                        }
                    }
                    wake.notify_one();
                }
                Err(err) => {
                    tracing::warn!(error = %err, "LISTEN connection lost; reconnecting");
                    wake.notify_one();
                    break;
                }
            }
        }
    }
}

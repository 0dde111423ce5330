//! This worker's lease and, when it wins the election, the queue's
//! maintenance.
//!
//! - The lease (`queue_workers` row) is renewed every third of its TTL on a
//!   connection of its own, so a busy request pool can never starve it.
//!   A worker whose lease lapses is gone as far as the queue is concerned.
//! - The same connection holds a session advisory lock while this process
//!   is the leader: Postgres releases it when the connection or the process
//!   dies, and another worker takes over at its next heartbeat.
//! - The leader rescues the runs of workers that are gone (decided by the
//!   state machine: a run that had started keeps its attempt, one only
//!   claimed gets it back), refreshes the queue gauges, and prunes expired
//!   refresh tokens in bounded batches through their index.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Handler, completer};
use crate::{db, domain::JobId, jobs::state::Transition, live::Publisher};

/// The advisory lock key of queue leadership ("docflow" in ASCII).
const LEADER_LOCK: i64 = 0x0064_6f63_666c_6f77;
/// Runs rescued per statement.
const RESCUE_BATCH: i64 = 500;
/// Expired refresh tokens deleted per statement, and at most per round.
const PRUNE_BATCH: i64 = 1_000;
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const GAUGES_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// A lease not renewed for this long belongs to a worker that is gone.
    pub ttl: Duration,
}

impl LeaseConfig {
    pub fn heartbeat(&self) -> Duration {
        self.ttl / 3
    }
}

/// Holds the lease of worker `id` until `shutdown`, and leads when elected.
pub async fn hold<H: Handler>(
    db: PgPool,
    id: Uuid,
    config: LeaseConfig,
    handler: Arc<H>,
    publisher: Publisher,
    shutdown: CancellationToken,
) {
    let leader = Arc::new(AtomicBool::new(false));
    let maintenance = tokio::spawn(maintain(
        db.clone(),
        config.clone(),
        Arc::clone(&leader),
        publisher,
        shutdown.clone(),
    ));
    let mut connection: Option<PgConnection> = None;
    let mut ticker = tokio::time::interval(config.heartbeat());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if connection.is_none() {
            connection = connect(&db).await;
        }
        let Some(conn) = connection.as_mut() else {
            lose_leadership(&leader);
            continue;
        };
        if let Err(err) = beat(conn, id, handler.as_ref(), &leader).await {
            tracing::warn!(error = %err, "lease renewal failed; reconnecting");
            // Dropping the connection drops the leader lock with it.
            connection = None;
            lose_leadership(&leader);
        }
    }
    maintenance.abort();
    if let Some(mut conn) = connection {
        let _ = db::queue_workers::deregister(&mut conn, id).await;
        let _ = conn.close().await;
    }
}

async fn connect(db: &PgPool) -> Option<PgConnection> {
    let options = db.connect_options().as_ref().clone();
    match PgConnection::connect_with(&options).await {
        Ok(conn) => Some(conn),
        Err(err) => {
            tracing::warn!(error = %err, "cannot open the lease connection yet");
            None
        }
    }
}

/// One heartbeat: renew (or retake) the lease, stop runs the queue has
/// taken away from us, and try for leadership.
async fn beat(
    conn: &mut PgConnection,
    id: Uuid,
    runner: &impl Handler,
    leader: &AtomicBool,
) -> Result<(), sqlx::Error> {
    if !db::queue_workers::heartbeat(&mut *conn, id).await? {
        let host = hostname();
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        db::queue_workers::register(&mut *conn, id, &host, pid).await?;
        tracing::info!(worker = %id, "lease taken");
    }
    // Runs this process still works on whose job is no longer ours
    // (cancelled, or rescued after a lapse): stop them. A cancel normally
    // arrives by NOTIFY within milliseconds; this covers a missed one.
    let running = runner.running_jobs();
    if !running.is_empty() {
        for job in db::jobs::queue::not_held_by(&mut *conn, id, &running).await? {
            if runner.cancel(JobId(job)) {
                tracing::info!(job_id = %job, "stopping a run this worker no longer holds");
            }
        }
    }
    if !leader.load(Ordering::Acquire) {
        let won: bool =
            sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1) AS "won!""#, LEADER_LOCK)
                .fetch_one(&mut *conn)
                .await?;
        if won {
            tracing::info!(worker = %id, "elected queue leader");
            leader.store(true, Ordering::Release);
            crate::metrics::set_leader(true);
        }
    }
    Ok(())
}

fn lose_leadership(leader: &AtomicBool) {
    if leader.swap(false, Ordering::AcqRel) {
        tracing::warn!("no longer the queue leader");
        crate::metrics::set_leader(false);
    }
}

/// The leader's work, on the pool (not the lease connection, so heartbeats
/// never wait on it).
async fn maintain(
    db: PgPool,
    config: LeaseConfig,
    leader: Arc<AtomicBool>,
    publisher: Publisher,
    shutdown: CancellationToken,
) {
    let ttl_secs = config.ttl.as_secs_f64();
    let mut rescue = tokio::time::interval(Duration::from_secs(1));
    let mut gauges = tokio::time::interval(GAUGES_EVERY);
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    for ticker in [&mut rescue, &mut gauges, &mut prune] {
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        let task = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = rescue.tick() => Task::Rescue,
            _ = gauges.tick() => Task::Gauges,
            _ = prune.tick() => Task::Prune,
        };
        if !leader.load(Ordering::Acquire) {
            continue;
        }
        let outcome = match task {
            Task::Rescue => rescue_orphans(&db, ttl_secs, &publisher).await,
            Task::Gauges => refresh_gauges(&db, ttl_secs).await,
            Task::Prune => match rescue_unknown(&db, ttl_secs, &publisher).await {
                Ok(()) => prune_refresh_tokens(&db).await,
                Err(err) => Err(err),
            },
        };
        if let Err(err) = outcome {
            tracing::warn!(error = %err, ?task, "queue maintenance failed");
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Task {
    Rescue,
    Gauges,
    Prune,
}

/// Rescues the runs of workers that are gone, then forgets those workers.
pub async fn rescue_orphans(
    db: &PgPool,
    ttl_secs: f64,
    publisher: &Publisher,
) -> Result<(), sqlx::Error> {
    let gone = db::jobs::queue::lapsed_workers(db, ttl_secs).await?;
    rescue_runs_of(db, &gone, ttl_secs, publisher).await
}

/// Rescues the runs of lease holders that have no lease row at all.
async fn rescue_unknown(
    db: &PgPool,
    ttl_secs: f64,
    publisher: &Publisher,
) -> Result<(), sqlx::Error> {
    let unknown = db::jobs::queue::unknown_lease_holders(db).await?;
    if !unknown.is_empty() {
        tracing::warn!(
            holders = unknown.len(),
            "runs leased to workers the queue does not know"
        );
    }
    rescue_runs_of(db, &unknown, ttl_secs, publisher).await
}

async fn rescue_runs_of(
    db: &PgPool,
    gone: &[Uuid],
    ttl_secs: f64,
    publisher: &Publisher,
) -> Result<(), sqlx::Error> {
    if gone.is_empty() {
        return Ok(());
    }
    loop {
        let orphans = db::jobs::queue::orphans(db, gone, RESCUE_BATCH).await?;
        if orphans.is_empty() {
            break;
        }
        let decided = completer::rescue_moves(&orphans);
        let moves: Vec<_> = decided.iter().map(|(mv, _)| mv.clone()).collect();
        let events = db::jobs::queue::apply(db, &moves, &[]).await?;
        for (_, transition) in &decided {
            match transition {
                Transition::Return { .. } => crate::metrics::job_returned(),
                Transition::Retry { .. } => crate::metrics::orphan_rescued(),
                Transition::Fail { reason, .. } => {
                    crate::metrics::orphan_rescued();
                    crate::metrics::job_failed(*reason, Duration::ZERO);
                }
                _ => {}
            }
        }
        tracing::warn!(
            runs = orphans.len(),
            "rescued the runs of workers that are gone"
        );
        publisher.publish(events).await;
        if (orphans.len() as i64) < RESCUE_BATCH {
            break;
        }
    }
    let forgotten = db::queue_workers::forget(db, gone, ttl_secs).await?;
    tracing::info!(workers = forgotten, "forgot workers whose lease lapsed");
    Ok(())
}

async fn refresh_gauges(db: &PgPool, ttl_secs: f64) -> Result<(), sqlx::Error> {
    let stats = db::jobs::queue_stats(db).await?;
    crate::metrics::set_queue(
        stats.queued,
        stats.processing,
        stats.oldest_queued_age_secs,
        stats.dead_letters,
    );
    crate::metrics::set_queue_workers(db::queue_workers::count_live(db, ttl_secs).await?);
    Ok(())
}

async fn prune_refresh_tokens(db: &PgPool) -> Result<(), sqlx::Error> {
    let mut total = 0;
    // Bounded per round: a huge backlog drains over several minutes.
    for _ in 0..10 {
        let deleted = db::refresh_tokens::prune_expired(db, PRUNE_BATCH).await?;
        total += deleted;
        if deleted < PRUNE_BATCH as u64 {
            break;
        }
    }
    if total > 0 {
        tracing::info!(deleted = total, "pruned expired refresh tokens");
    }
    Ok(())
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

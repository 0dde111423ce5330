//! Postgres as the hub's backstop. While Redis delivers, a writer that
//! could not publish (its Redis was down) would leave streams waiting; while
//! Redis is down nothing is delivered at all. Either way the hub, not each
//! stream, reads Postgres: one statement for all the jobs this process's
//! streams watch (the latest event of each), every second while
//! disconnected, every `safety` interval while connected, and once at each
//! change of connection state. It dispatches what it reads like a
//! published event; a stream that finds a gap reads only its own job's
//! missing events. 1,500 idle streams during a Redis outage cost 1,493
//! queries a second before (issue #13); they now cost one.

use std::time::Duration;

use sqlx::PgPool;

use super::{Hub, StatusEvent};
use crate::db;

/// How often the hub reads Postgres while Redis is unavailable.
pub const FALLBACK_POLL: Duration = Duration::from_secs(1);

/// Runs until the hub closes.
pub fn spawn(hub: Hub, db: PgPool, safety: Duration) {
    tokio::spawn(run(hub, db, safety));
}

async fn run(hub: Hub, db: PgPool, safety: Duration) {
    let mut health = hub.health();
    loop {
        let every = if health.borrow_and_update().connected {
            safety
        } else {
            FALLBACK_POLL
        };
        tokio::select! {
            () = hub.closed() => return,
            () = tokio::time::sleep(every) => {}
            changed = health.changed() => if changed.is_err() { return },
        }
        poll(&hub, &db).await;
    }
}

/// Reads the latest event of every watched job and hands it to its streams.
pub async fn poll(hub: &Hub, db: &PgPool) {
    let watched = hub.watched();
    if watched.is_empty() {
        return;
    }
    match db::job_events::latest_of(db, &watched).await {
        Ok(events) => {
            for event in events {
                hub.dispatch(StatusEvent::from(event));
            }
        }
        Err(err) => tracing::warn!(error = %err, "status poller cannot read events; retrying"),
    }
}

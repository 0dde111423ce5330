//! One client's stream of a job's status events: what it has missed from
//! Postgres, then live events from the hub, de-duplicated by `seq`.

use std::time::Duration;

use futures_util::Stream;
use sqlx::PgPool;
use tokio::sync::broadcast::error::RecvError;

use super::{StatusEvent, Subscription};
use crate::{db, domain::JobId};

#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// The stream ends after this long; clients resume with Last-Event-ID.
    pub max_duration: Duration,
}

/// Where a stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The current state (the latest event), then what follows.
    Snapshot,
    /// The events after this `seq` (a reconnect's Last-Event-ID).
    After(i32),
}

/// Opens the stream of the subscription's job (whose ownership the caller
/// checked).
///
/// The caller subscribes (`Hub::subscribe`) before this reads Postgres: an
/// event committed in between is then both read and received, and the
/// second copy is dropped by `seq`. The stream ends after the job's latest
/// event if that is terminal (an earlier `failed` followed by a requeue does
/// not end it), at `max_duration`, or when the hub closes; a job that is
/// already finished yields its final event and ends. `None`: the client's
/// Last-Event-ID already is the final event, so there is nothing to send
/// (the handler answers 204, which stops EventSource's reconnects).
pub async fn follow(
    mut subscription: Subscription,
    db: PgPool,
    start: Start,
    limits: StreamLimits,
) -> Result<Option<impl Stream<Item = StatusEvent> + Send + 'static>, sqlx::Error> {
    let hub = subscription.hub.clone();
    let job_id = subscription.job_id;
    let Some((mut pending, mut last_seq)) = initial_events(&db, job_id, start).await? else {
        return Ok(None);
    };

    Ok(Some(async_stream::stream! {
        let deadline = tokio::time::sleep(limits.max_duration);
        tokio::pin!(deadline);
        loop {
            // A terminal event ends the stream only if nothing follows it:
            // a job failed, then requeued, has its old `failed` in history.
            let newest = pending.iter().map(|event| event.seq).max().unwrap_or(last_seq);
            for event in pending.drain(..) {
                // Events arrive in order; anything at or below the last sent
                // one is a copy (read and received, or re-read).
                if event.seq <= last_seq {
                    continue;
                }
                last_seq = event.seq;
                let ends = event.is_terminal() && event.seq >= newest;
                yield event;
                if ends {
                    return;
                }
            }
            // Redis's notifications and the hub's Postgres poller (see
            // `poller`) both arrive as dispatched events; this stream reads
            // Postgres itself only to fill a gap in them.
            let next = tokio::select! {
                biased;
                () = hub.closed() => Next::End,
                () = &mut deadline => Next::End,
                received = subscription.recv() => match received {
                    Ok(event) if event.seq <= last_seq => Next::Wait,
                    Ok(event) if event.seq == last_seq + 1 => Next::Deliver(event.as_ref().clone()),
                    // A gap (or we fell behind): Postgres has the order.
                    Ok(_) | Err(RecvError::Lagged(_)) => Next::CatchUp,
                    Err(RecvError::Closed) => Next::End,
                },
            };
            match next {
                Next::End => return,
                Next::Wait => {}
                Next::Deliver(event) => pending.push(event),
                Next::CatchUp => match db::job_events::list_after(&db, job_id, last_seq).await {
                    Ok(events) => pending.extend(events.into_iter().map(StatusEvent::from)),
                    Err(err) => {
                        tracing::warn!(error = %err, %job_id, "status stream cannot read events; retrying");
                    }
                },
            }
        }
    }))
}

enum Next {
    End,
    Wait,
    Deliver(StatusEvent),
    CatchUp,
}

/// What a stream sends before it follows live events, and the `seq` it
/// counts as already delivered; `None` when the client has seen the job's
/// final event.
async fn initial_events(
    db: &PgPool,
    job_id: JobId,
    start: Start,
) -> Result<Option<(Vec<StatusEvent>, i32)>, sqlx::Error> {
    let Some(latest) = db::job_events::latest(db, job_id).await? else {
        return Ok(Some((Vec::new(), 0)));
    };
    let latest = StatusEvent::from(latest);
    Ok(Some(match start {
        Start::After(seen) if seen < latest.seq => {
            let missed = db::job_events::list_after(db, job_id, seen).await?;
            (missed.into_iter().map(StatusEvent::from).collect(), seen)
        }
        // Up to date with a finished job: nothing more will come.
        Start::After(seen) if seen == latest.seq && latest.is_terminal() => return Ok(None),
        Start::After(seen) if seen == latest.seq => (Vec::new(), seen),
        // No id, or one we never issued: the current state.
        Start::After(_) | Start::Snapshot => (vec![latest], 0),
    }))
}

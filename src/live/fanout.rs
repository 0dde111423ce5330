//! The one Redis subscription of an API process: it feeds the process's
//! [`Hub`] and tells it whether notifications are flowing.

use std::time::Duration;

use fred::{
    interfaces::{ClientLike, EventInterface, PubsubInterface},
    prelude::Client,
};
use tokio::sync::broadcast::error::RecvError;

use super::{Hub, SESSIONS_TOPIC, StatusEvent, TOPIC};
use crate::ephemeral::{EphemeralError, redis_client};

/// Messages fred buffers for this process before it reports a lag (every
/// status change of every job passes through here; a lag makes every open
/// stream re-read Postgres at once, so it must be rare). fred's default: 32.
const FANOUT_BUFFER: usize = 4_096;

/// How often the connection state is checked besides fred's own events.
const HEALTH_CHECK: Duration = Duration::from_millis(250);

/// Connects a dedicated client (a subscribed connection can run nothing
/// else) and starts following `{prefix}job-status` and
/// `{prefix}session-revoked` in the background until the hub closes.
pub fn spawn(url: &str, prefix: &str, hub: Hub) -> Result<(), EphemeralError> {
    let client = redis_client(url, FANOUT_BUFFER)?;
    let channels = Channels {
        status: format!("{prefix}{TOPIC}"),
        sessions: format!("{prefix}{SESSIONS_TOPIC}"),
    };
    tokio::spawn(follow(client, channels, hub));
    Ok(())
}

struct Channels {
    status: String,
    sessions: String,
}

async fn follow(client: Client, channels: Channels, hub: Hub) {
    let mut messages = client.message_rx();
    let mut reconnects = client.reconnect_rx();
    let mut check = tokio::time::interval(HEALTH_CHECK);
    client.connect();
    loop {
        tokio::select! {
            () = hub.closed() => break,
            received = messages.recv() => match received {
                Ok(message) if message.channel == channels.status.as_str() => {
                    match message.value.as_bytes().map(serde_json::from_slice::<Vec<StatusEvent>>) {
                        Some(Ok(events)) => {
                            for event in events {
                                hub.dispatch(event);
                            }
                        }
                        _ => tracing::warn!(channel = %channels.status, "ignoring an undecodable status message"),
                    }
                }
                Ok(message) if message.channel == channels.sessions.as_str() => {
                    match message.value.as_str().and_then(|raw| raw.parse::<uuid::Uuid>().ok()) {
                        Some(session) => hub.revoke_session(session),
                        None => tracing::warn!(channel = %channels.sessions, "ignoring an undecodable revocation"),
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    // Streams re-read Postgres, so nothing is lost.
                    tracing::warn!(missed, "status fan-out fell behind");
                    hub.mark_connected();
                }
                Err(RecvError::Closed) => break,
            },
            // Also fires on the first connection. A new connection has no
            // subscriptions: subscribe again before saying we are live.
            reconnected = reconnects.recv() => {
                if !matches!(reconnected, Err(RecvError::Closed)) {
                    hub.mark_disconnected();
                    subscribe(&client, &channels, &hub).await;
                }
            }
            _ = check.tick() => {
                if !client.is_connected() {
                    if hub.is_connected() {
                        tracing::warn!("status fan-out lost Redis; streams poll Postgres meanwhile");
                    }
                    hub.mark_disconnected();
                } else if !hub.is_connected() {
                    subscribe(&client, &channels, &hub).await;
                }
            }
        }
    }
    let _ = client.quit().await;
}

async fn subscribe(client: &Client, channels: &Channels, hub: &Hub) {
    match client
        .subscribe(vec![channels.status.clone(), channels.sessions.clone()])
        .await
    {
        Ok(()) => {
            tracing::info!(channel = %channels.status, "status fan-out subscribed");
            hub.mark_connected();
        }
        Err(err) => {
            tracing::warn!(error = %err, "status fan-out cannot subscribe yet");
            hub.mark_disconnected();
        }
    }
}

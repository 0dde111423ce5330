//! State we can afford to lose: rate-limit counters, the access-token
//! blocklist, and the pub/sub channel that fans live job status out to every
//! API replica. Redis when `REDIS_URL` is set (shared by every replica), or
//! in-process for a single-node `all-in-one`.
//!
//! Nothing here is a source of truth. Jobs, users and refresh tokens live in
//! Postgres, so losing Redis costs at most a rate-limit window and lets a
//! logged-out access token live out its remaining (≤ 15 minute) lifetime.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use fred::{
    interfaces::{ClientLike, EventInterface, KeysInterface, LuaInterface, PubsubInterface},
    prelude::{Builder, Client, Config as RedisConfig, Expiration, ReconnectPolicy},
};

/// How long a Redis command may take before we treat Redis as down. Short,
/// because callers degrade gracefully and a request should not hang on it.
const REDIS_COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// How long start-up waits for the first Redis connection.
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(2);

/// Above this many entries the in-process maps drop expired ones on insert.
const IN_PROCESS_PRUNE_THRESHOLD: usize = 10_000;

/// Fixed-window counter: the first hit of a window sets its expiry.
const RATE_LIMIT_SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
";

#[derive(Debug, thiserror::Error)]
pub enum EphemeralError {
    #[error("redis is not connected")]
    Disconnected,
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
}

/// The outcome of counting one request against a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    Limited { retry_after: Duration },
}

#[derive(Clone)]
pub enum Ephemeral {
    Redis(RedisStore),
    InProcess(Arc<InProcessStore>),
}

#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    prefix: String,
}

impl Ephemeral {
    /// Starts a Redis client that keeps reconnecting in the background. It
    /// waits briefly for the first connection (so the first requests are
    /// counted), but a Redis outage at start-up shows in readiness instead of
    /// stopping the process.
    pub async fn redis(url: &str, prefix: String) -> Result<Self, EphemeralError> {
        let client = redis_client(url, DEFAULT_BROADCAST_BUFFER)?;
        watch_connection(&client);
        client.connect();
        match tokio::time::timeout(FIRST_CONNECT_WAIT, client.wait_for_connect()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(
                error = %err,
                "redis not reachable at start-up; retrying in the background"
            ),
            Err(_) => tracing::warn!("redis not reachable at start-up; retrying in the background"),
        }
        Ok(Self::Redis(RedisStore { client, prefix }))
    }

    pub fn in_process() -> Self {
        Self::InProcess(Arc::new(InProcessStore::default()))
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Redis(_) => "redis",
            Self::InProcess(_) => "in-process",
        }
    }

    pub async fn ping(&self) -> Result<(), EphemeralError> {
        match self {
            Self::Redis(redis) => {
                redis.connected()?;
                redis.client.ping::<String>(None).await?;
                Ok(())
            }
            Self::InProcess(_) => Ok(()),
        }
    }

    /// Counts one request in `bucket` against `limit` per `window`.
    pub async fn hit_rate_limit(
        &self,
        bucket: &str,
        limit: u32,
        window: Duration,
    ) -> Result<RateDecision, EphemeralError> {
        let (count, remaining_window) = match self {
            Self::Redis(redis) => {
                redis.connected()?;
                let key = format!("{}ratelimit:{bucket}", redis.prefix);
                let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
                let (count, ttl_ms): (i64, i64) = redis
                    .client
                    .eval(RATE_LIMIT_SCRIPT, vec![key], vec![window_ms])
                    .await?;
                (
                    u64::try_from(count).unwrap_or(0),
                    Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0)),
                )
            }
            Self::InProcess(store) => store.hit(bucket, window),
        };
        Ok(if count > u64::from(limit) {
            RateDecision::Limited {
                retry_after: remaining_window,
            }
        } else {
            RateDecision::Allowed
        })
    }

    /// Blocks an access token id until `ttl` from now (its remaining lifetime).
    pub async fn block_token(&self, jti: &str, ttl: Duration) -> Result<(), EphemeralError> {
        if ttl.is_zero() {
            return Ok(());
        }
        match self {
            Self::Redis(redis) => {
                redis.connected()?;
                let key = format!("{}blocklist:{jti}", redis.prefix);
                let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
                redis
                    .client
                    .set::<(), _, _>(key, 1, Some(Expiration::PX(ttl_ms)), None, false)
                    .await?;
            }
            Self::InProcess(store) => store.block(jti, ttl),
        }
        Ok(())
    }

    pub async fn is_token_blocked(&self, jti: &str) -> Result<bool, EphemeralError> {
        match self {
            Self::Redis(redis) => {
                redis.connected()?;
                let key = format!("{}blocklist:{jti}", redis.prefix);
                let found: i64 = redis.client.exists(key).await?;
                Ok(found > 0)
            }
            Self::InProcess(store) => Ok(store.is_blocked(jti)),
        }
    }
}

/// fred's own default size of its event and pub/sub buffers.
pub const DEFAULT_BROADCAST_BUFFER: usize = 32;

/// A Redis client that keeps reconnecting in the background, from its first
/// attempt on (not connected yet: call `connect`). Commands fail fast while
/// it is disconnected: callers check `is_connected` first (see
/// `RedisStore::connected`) and the command timeout bounds the rest.
/// `broadcast_buffer`: messages held for a slow pub/sub reader.
pub fn redis_client(url: &str, broadcast_buffer: usize) -> Result<Client, EphemeralError> {
    let mut config = RedisConfig::from_url(url)?;
    // fred's `fail_fast` also means "give up for good if the first connect
    // fails": a process started during a Redis outage then never connected,
    // even after Redis came back.
    config.fail_fast = false;
    Ok(Builder::from_config(config)
        .with_performance_config(|perf| {
            perf.default_command_timeout = REDIS_COMMAND_TIMEOUT;
            perf.broadcast_channel_capacity = broadcast_buffer;
        })
        .with_connection_config(|conn| {
            conn.connection_timeout = Duration::from_secs(2);
            conn.internal_command_timeout = Duration::from_secs(2);
            conn.max_command_attempts = 1;
        })
        // Retry forever, backing off from 100 ms to 2 s.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .build()?)
}

/// Logs and counts the client's connection changes: one line when the
/// connection is lost, one when it is back (not one per retry), and the
/// `redis_connected` gauge. Ends when the client is dropped.
pub fn watch_connection(client: &Client) {
    use tokio::sync::broadcast::error::RecvError;
    let mut reconnects = client.reconnect_rx();
    let mut errors = client.error_rx();
    crate::metrics::set_redis_connected(false);
    tokio::spawn(async move {
        let mut connected = false;
        loop {
            tokio::select! {
                event = reconnects.recv() => match event {
                    Ok(server) => {
                        if !connected {
                            tracing::info!(%server, "redis connected");
                        }
                        connected = true;
                        crate::metrics::set_redis_connected(true);
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                },
                event = errors.recv() => match event {
                    Ok((err, _)) => {
                        if connected {
                            tracing::warn!(
                                error = %err,
                                "redis connection lost; reconnecting in the background \
                                 (the service runs degraded meanwhile)"
                            );
                        }
                        connected = false;
                        crate::metrics::set_redis_connected(false);
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                },
            }
        }
    });
}

impl RedisStore {
    /// The full name of a pub/sub channel, under this deployment's prefix.
    pub fn channel(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }

    /// Publishes on `topic` (under the key prefix); answers at once when
    /// Redis is down.
    pub async fn publish(&self, topic: &str, payload: String) -> Result<(), EphemeralError> {
        self.connected()?;
        self.client
            .publish::<i64, _, _>(self.channel(topic), payload)
            .await?;
        Ok(())
    }

    /// Answers at once while disconnected, instead of queueing the command
    /// until the command timeout.
    fn connected(&self) -> Result<(), EphemeralError> {
        if self.client.is_connected() {
            Ok(())
        } else {
            Err(EphemeralError::Disconnected)
        }
    }
}

/// The single-node stand-in for Redis. Documented as such: with several
/// replicas each would count and block on its own.
#[derive(Default)]
pub struct InProcessStore {
    windows: Mutex<HashMap<String, (u64, Instant)>>,
    blocked: Mutex<HashMap<String, Instant>>,
}

impl InProcessStore {
    fn hit(&self, bucket: &str, window: Duration) -> (u64, Duration) {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() > IN_PROCESS_PRUNE_THRESHOLD {
            windows.retain(|_, (_, ends)| *ends > now);
        }
        let entry = windows
            .entry(bucket.to_owned())
            .or_insert((0, now + window));
        if entry.1 <= now {
            *entry = (0, now + window);
        }
        entry.0 += 1;
        (entry.0, entry.1 - now)
    }

    fn block(&self, jti: &str, ttl: Duration) {
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        if blocked.len() > IN_PROCESS_PRUNE_THRESHOLD {
            blocked.retain(|_, until| *until > now);
        }
        blocked.insert(jti.to_owned(), now + ttl);
    }

    fn is_blocked(&self, jti: &str) -> bool {
        let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        blocked
            .get(jti)
            .is_some_and(|until| *until > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_process_rate_limit_counts_per_bucket_and_window() {
        let store = Ephemeral::in_process();
        let window = Duration::from_millis(200);
        for _ in 0..3 {
            assert_eq!(
                store.hit_rate_limit("a", 3, window).await.expect("hit"),
                RateDecision::Allowed
            );
        }
        assert!(matches!(
            store.hit_rate_limit("a", 3, window).await.expect("hit"),
            RateDecision::Limited { retry_after } if retry_after <= window
        ));
        assert_eq!(
            store.hit_rate_limit("b", 3, window).await.expect("hit"),
            RateDecision::Allowed
        );
        tokio::time::sleep(window).await;
        assert_eq!(
            store.hit_rate_limit("a", 3, window).await.expect("hit"),
            RateDecision::Allowed
        );
    }

    #[tokio::test]
    async fn in_process_blocklist_expires() {
        let store = Ephemeral::in_process();
        store
            .block_token("jti-1", Duration::from_millis(100))
            .await
            .expect("block");
        assert!(store.is_token_blocked("jti-1").await.expect("check"));
        assert!(!store.is_token_blocked("jti-2").await.expect("check"));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(!store.is_token_blocked("jti-1").await.expect("check"));
    }
}

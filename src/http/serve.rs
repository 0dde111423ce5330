//! The API's accept loop: every connection is bounded before any request
//! is read. `axum::serve` accepts without limit and reads headers with no
//! deadline, so one anonymous client holding half-sent requests could take
//! every file descriptor of the process (issue #13). Here:
//!
//! - a connection must deliver a request's header within
//!   `HTTP_HEADER_READ_TIMEOUT_SECS`, and an idle keep-alive connection is
//!   closed after the same time (hyper starts the timer whenever it waits
//!   for a header);
//! - at most `HTTP_MAX_CONNECTIONS` are open at once, and at most
//!   `HTTP_MAX_CONNECTIONS_PER_IP` from one client address (a trusted
//!   proxy's connections count only against the global cap: they carry
//!   many clients). Past either cap a connection is answered at once with
//!   the error envelope (503 or 429, `Connection: close`) and closed;
//! - running out of file descriptors pauses accepting briefly instead of
//!   spinning;
//! - request headers are bounded twice: past [`MAX_HEADER_BYTES`] or
//!   [`MAX_HEADERS`] the router answers 431 with the error envelope
//!   (`limit_headers`); hyper itself stops reading at four times that
//!   (its own bare 431, then closes), which bounds what one connection
//!   buffers.

use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_service::Service;

use crate::config::ConnectionLimits;

/// A request's headers (request line included), as nginx's default
/// `large_client_header_buffers` (4 × 8 KiB) allows.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Header fields in one request.
pub const MAX_HEADERS: usize = 100;

/// File descriptors kept free of client connections: the database and
/// Redis pools, storage, logs, extractor pipes.
const RESERVED_FDS: u64 = 512;

/// The connection cap this process can honour: `configured`, lowered (with
/// a warning) to what its file-descriptor limit allows after raising the
/// soft limit to the hard one.
pub fn fit_to_fd_limit(configured: usize) -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let room = usize::try_from(limit.saturating_sub(RESERVED_FDS).max(16)).unwrap_or(usize::MAX);
    if configured > room {
        tracing::warn!(
            configured,
            fd_limit = limit,
            effective = room,
            "HTTP_MAX_CONNECTIONS is above what the file-descriptor limit allows; lowered"
        );
        room
    } else {
        configured
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting, runs `on_shutdown` (which ends long-lived streams) and waits
/// for open connections to finish their requests.
pub async fn serve_bounded(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    trusted_proxies: Vec<IpNet>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_shutdown: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = PerIp::new(limits.max_connections_per_ip, trusted_proxies);
    let draining = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Room above our limits, so that a request past them still gets
        // parsed and answered with the envelope by `limit_headers`.
        .max_buf_size(4 * MAX_HEADER_BYTES)
        .max_headers(4 * MAX_HEADERS);
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    pause_after_accept_error(&err).await;
                    continue;
                }
            },
        };
        let Ok(slot) = open.clone().try_acquire_owned() else {
            refuse(&stream, Refusal::Busy);
            continue;
        };
        let Some(from_peer) = per_ip.take(peer.ip()) else {
            refuse(&stream, Refusal::TooManyFromPeer);
            continue;
        };
        let http = http.clone();
        let router = router.clone();
        let draining = draining.clone();
        connections.spawn(serve_connection(
            stream,
            peer,
            router,
            http,
            draining,
            (slot, from_peer),
        ));
    }
    drop(listener);
    on_shutdown();
    draining.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    http: Arc<http1::Builder>,
    draining: CancellationToken,
    // Held until the connection ends: its places under both caps.
    _held: (OwnedSemaphorePermit, PeerSlot),
) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        async move { router.call(request).await }
    });
    let connection = http
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = draining.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// `accept` fails when the process is out of file descriptors (or the
/// kernel out of buffers); retrying at once would spin. Other errors
/// (a connection reset before it was accepted) concern one client only.
async fn pause_after_accept_error(err: &std::io::Error) {
    use nix::errno::Errno;
    let out_of_resources = matches!(
        err.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
    );
    if out_of_resources {
        tracing::warn!(error = %err, "cannot accept connections: out of file descriptors; pausing 50 ms");
        tokio::time::sleep(Duration::from_millis(50)).await;
    } else {
        tracing::debug!(error = %err, "accept failed");
    }
}

#[derive(Clone, Copy)]
enum Refusal {
    Busy,
    TooManyFromPeer,
}

/// Answers a connection over a cap with the error envelope and closes it.
/// The answer is small enough for the socket's send buffer, so it is written
/// without waiting (`try_write`): the accept loop never blocks on a client.
fn refuse(stream: &TcpStream, refusal: Refusal) {
    let (status, code, message) = match refusal {
        Refusal::Busy => (
            "503 Service Unavailable",
            "overloaded",
            "The server has too many open connections; retry shortly.",
        ),
        Refusal::TooManyFromPeer => (
            "429 Too Many Requests",
            "too_many_connections",
            "Too many open connections from your address; close some and retry.",
        ),
    };
    let body = serde_json::json!({"error": {
        "code": code,
        "message": message,
        "request_id": uuid::Uuid::new_v4().to_string(),
    }})
    .to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
    match refusal {
        Refusal::Busy => crate::metrics::connection_refused("global_cap"),
        Refusal::TooManyFromPeer => crate::metrics::connection_refused("per_ip_cap"),
    }
}

/// Open connections per client address (addresses with none are removed).
type OpenByAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

#[derive(Clone)]
struct PerIp {
    limit: usize,
    trusted: Arc<Vec<IpNet>>,
    open: OpenByAddress,
}

/// One connection's place in its address's count; given back on drop.
struct PeerSlot {
    counted: Option<(IpAddr, OpenByAddress)>,
}

impl PerIp {
    fn new(limit: usize, trusted: Vec<IpNet>) -> Self {
        Self {
            limit,
            trusted: Arc::new(trusted),
            open: Arc::default(),
        }
    }

    fn take(&self, ip: IpAddr) -> Option<PeerSlot> {
        if self.trusted.iter().any(|net| net.contains(&ip)) {
            return Some(PeerSlot { counted: None });
        }
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(ip).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            counted: Some((ip, self.open.clone())),
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Some((ip, open)) = self.counted.take() {
            let mut open = open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(count) = open.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

/// Answers 431 with the error envelope when a request's headers pass
/// [`MAX_HEADER_BYTES`] or [`MAX_HEADERS`]. Runs inside the request-id
/// layer, so the answer carries the request's id like any other error.
pub async fn limit_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let headers = request.headers();
    let bytes = request.method().as_str().len()
        + request.uri().to_string().len()
        + " HTTP/1.1\r\n".len()
        + headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
            .sum::<usize>();
    if bytes > MAX_HEADER_BYTES || headers.len() > MAX_HEADERS {
        use axum::response::IntoResponse;
        return crate::http::error::ApiError::new(
            axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "The request's headers are too large: at most {} KiB in {MAX_HEADERS} fields.",
                MAX_HEADER_BYTES / 1024
            ),
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_places_back_when_connections_end() {
        let per_ip = PerIp::new(2, vec!["10.0.0.1/32".parse().expect("net")]);
        let client: IpAddr = "192.0.2.7".parse().expect("ip");
        let first = per_ip.take(client).expect("first");
        let _second = per_ip.take(client).expect("second");
        assert!(per_ip.take(client).is_none(), "a third is over the cap");
        drop(first);
        assert!(per_ip.take(client).is_some(), "a place came back");
        // A trusted proxy carries many clients: never capped per address.
        let proxy: IpAddr = "10.0.0.1".parse().expect("ip");
        let held: Vec<_> = (0..10)
            .map(|_| per_ip.take(proxy).expect("proxy"))
            .collect();
        assert_eq!(held.len(), 10);
        drop(held);
        assert!(per_ip.open.lock().expect("lock").get(&proxy).is_none());
    }
}

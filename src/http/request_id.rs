//! Request correlation and accounting: every request gets an id (the
//! client's X-Request-ID when it is a sane token, else a fresh one), echoed
//! in the response and carried by every log line written while serving it;
//! a span that continues the caller's W3C trace; an access log line and the
//! HTTP metrics, labelled by route template.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};
use tracing::Instrument;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longer ids are replaced: they bloat every log line and index.
const MAX_REQUEST_ID_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served on this task ("unknown" outside one).
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Accepts ids made of characters that are safe in logs and headers, so a
/// client cannot inject log lines or fake fields through its id.
fn is_sane(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

pub async fn propagate_request_id(mut request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_sane(id))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        request.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }

    // `route` is filled in by `record_route` once routing has matched; it is
    // the path template, never the raw path: ids would make every line unique,
    // and a token in a query string must not reach a log.
    let method = request.method().clone();
    let span = tracing::info_span!("request", request_id = %request_id, method = %method, route = "unmatched");

    crate::telemetry::continue_trace(&span, request.headers());

    let started = Instant::now();
    let mut response = REQUEST_ID
        .scope(
            request_id.clone(),
            next.run(request).instrument(span.clone()),
        )
        .await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    span.in_scope(|| {
        tracing::info!(status, latency_ms, "request completed");
    });
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map_or("unmatched", |route| route.0.as_str());
    crate::metrics::record_http(method.as_str(), route, status, elapsed);

    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

/// The matched route template, handed from the route layer back out to
/// `propagate_request_id` for the metrics labels.
#[derive(Clone)]
struct RouteLabel(String);

/// Runs after routing (as a route layer), where the matched template is known.
pub async fn record_route(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    if let Some(route) = &route {
        tracing::Span::current().record("route", route.as_str());
    }
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(RouteLabel(route));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanity_rules() {
        assert!(is_sane("abc-123_DEF.4:5"));
        assert!(is_sane(&"a".repeat(128)));
        assert!(!is_sane(""));
        assert!(!is_sane(&"a".repeat(129)));
        assert!(!is_sane("has space"));
        assert!(!is_sane("new\nline"));
        assert!(!is_sane("quote\"inject"));
    }
}

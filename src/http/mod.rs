//! The HTTP API: routing, cross-cutting middleware and the server loop.
//! Handlers translate HTTP to domain calls and back; nothing else.

pub mod docs;
pub mod error;
pub mod extract;
pub mod pagination;
mod rate_limit;
pub mod request_id;
pub mod routes;
pub mod serve;
mod web;

use std::{future::Future, sync::Arc};

use aide::{axum::ApiRouter, openapi::OpenApi};
use axum::{
    Extension, Router,
    extract::DefaultBodyLimit,
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowOrigin, CorsLayer},
    set_header::SetResponseHeaderLayer,
};

use crate::{
    auth::AuthService,
    config::Config,
    documents::DocumentService,
    ephemeral::Ephemeral,
    jobs::JobService,
    live::{Hub, Publisher},
    storage::Storage,
};
use error::ApiError;

/// JSON bodies are small; uploads (multipart) set their own, larger limit.
const JSON_BODY_LIMIT: usize = 64 * 1024;

/// Everything a handler may need, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub ephemeral: Ephemeral,
    pub storage: Storage,
    pub auth: AuthService,
    pub documents: DocumentService,
    pub jobs: JobService,
    /// Hands status events to this process's live streams.
    pub hub: Hub,
    /// Announces status changes this process commits.
    pub publisher: Publisher,
}

/// The documented API routes, before state and middleware: shared by the
/// server and by the OpenAPI snapshot test.
fn api_routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .nest("/api/v1/auth", routes::auth::router())
        .nest("/api/v1/health", routes::health::router())
        .nest("/api/v1/documents", routes::documents::router())
        .nest(
            "/api/v1/jobs",
            routes::jobs::router().merge(routes::job_events::router()),
        )
        .nest("/api/v1/admin", routes::admin::router())
}

/// The OpenAPI document, exactly as `/openapi.json` serves it.
pub fn openapi() -> OpenApi {
    let mut api = OpenApi::default();
    let _ = api_routes().finish_api_with(&mut api, docs::describe_api);
    api
}

pub fn router(state: AppState) -> Router {
    aide::generate::extract_schemas(true);
    crate::metrics::handle();
    crate::metrics::register_api_series();
    let mut api = OpenApi::default();
    let timeouts = Timeouts {
        default: state.config.http.request_timeout,
        upload: state.config.uploads.timeout,
    };
    let cors = cors_layer(&state.config);

    api_routes()
        .merge(docs::router())
        .finish_api_with(&mut api, docs::describe_api)
        .merge(web::router())
        .route("/metrics", axum::routing::get(render_metrics))
        .route_layer(middleware::from_fn(move |req, next| {
            enforce_timeout(timeouts, req, next)
        }))
        .route_layer(middleware::from_fn(request_id::record_route))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(Arc::new(api)))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(cors)
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(middleware::from_fn(serve::limit_headers))
        .layer(middleware::from_fn(request_id::propagate_request_id))
        .with_state(state)
}

/// Serves the API until `shutdown` resolves, then stops accepting, ends the
/// live status streams (which would otherwise hold the drain open) and lets
/// in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let hub = state.hub.clone();
    let mut limits = state.config.http.connections;
    limits.max_connections = serve::fit_to_fd_limit(limits.max_connections);
    let trusted = state.config.http.trusted_proxies.clone();
    serve::serve_bounded(
        listener,
        router(state),
        limits,
        trusted,
        shutdown,
        move || {
            hub.close();
        },
    )
    .await
}

fn cors_layer(config: &Config) -> CorsLayer {
    let origins: Vec<HeaderValue> = config
        .http
        .cors_origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
            request_id::X_REQUEST_ID.clone(),
        ])
        .expose_headers([request_id::X_REQUEST_ID.clone(), header::RETRY_AFTER])
}

#[derive(Clone, Copy)]
struct Timeouts {
    default: std::time::Duration,
    upload: std::time::Duration,
}

/// The route whose request body is a whole file, and so gets its own limits.
const UPLOAD_ROUTE: &str = "/api/v1/documents/upload";

/// Runs as a route layer, after routing, so it knows which route it guards.
async fn enforce_timeout(
    timeouts: Timeouts,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let is_upload = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|path| path.as_str() == UPLOAD_ROUTE);
    let limit = if is_upload {
        timeouts.upload
    } else {
        timeouts.default
    };
    // Bounds the time to the response head; streaming bodies (SSE) go on.
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::unavailable(
            "timeout",
            format!("The request took longer than {}s.", limit.as_secs()),
        )
        .into_response(),
    }
}

/// Prometheus exposition of this process's metrics. Not in the OpenAPI
/// document (it is for Prometheus, not API clients) and not routed by the
/// reverse proxy.
async fn render_metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::handle().render(),
    )
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("No such route.")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This route does not support that method.",
    )
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    ApiError::internal(anyhow::anyhow!("handler panicked: {detail}")).into_response()
}

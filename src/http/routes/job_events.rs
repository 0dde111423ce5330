//! `/api/v1/jobs/{id}/events` (live status over SSE) and the stream tokens a
//! browser's EventSource opens it with.

use std::{convert::Infallible, time::Duration};

use aide::{
    OperationOutput,
    axum::{
        ApiRouter,
        routing::{get_with, post_with},
    },
    generate::GenContext,
    openapi::{
        MediaType, Operation, Response as OpenApiResponse, SchemaObject,
        StatusCode as OpenApiStatus,
    },
    transform::TransformOperation,
};
use axum::{
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::jobs::JobPath;
use crate::{
    domain::{JobId, UserId},
    http::{
        AppState,
        docs::error_responses,
        error::ApiError,
        extract::{CurrentUser, Json, Path, Query, bearer_token},
    },
    live::{
        StatusEvent,
        admission::{Admitted, Refused, StreamCaps},
        stream::{self, Start, StreamLimits},
    },
};

pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route("/{id}/events", get_with(job_events, events_docs))
        .api_route("/{id}/stream-token", post_with(stream_token, token_docs))
        .with_path_items(|item| item.tag("jobs"))
}

#[derive(Deserialize, JsonSchema)]
pub struct EventsParams {
    /// A stream token from `POST /jobs/{id}/stream-token`, for clients that
    /// cannot send an Authorization header (a browser's EventSource).
    /// Documented as the `streamToken` security scheme, not as a plain
    /// parameter: it is a credential, and a client (or schemathesis) that
    /// drops credentials must drop it too.
    #[schemars(skip)]
    pub token: Option<String>,
    /// Resume after this event; the `Last-Event-ID` header, which browsers
    /// send on reconnect, takes precedence.
    #[schemars(range(min = 0))]
    pub last_event_id: Option<i32>,
}

async fn job_events(
    State(state): State<AppState>,
    Path(path): Path<JobPath>,
    Query(params): Query<EventsParams>,
    headers: HeaderMap,
) -> Result<EventStream, ApiError> {
    let job_id = JobId(path.id);
    let (owner, session) = stream_caller(&state, &headers, params.token.as_deref(), job_id).await?;
    state.jobs.get(owner, job_id).await?;
    let caps = StreamCaps {
        per_user: state.config.live.max_streams_per_user,
        total: state.config.live.max_streams,
    };
    let admitted = state.hub.admit(owner, caps).map_err(|refused| {
        let message = match refused {
            Refused::PerUser => format!(
                "You have {} live status streams open, the most allowed; close one first.",
                caps.per_user
            ),
            Refused::Total => "This server holds as many live status streams as it can; \
                               retry shortly."
                .to_owned(),
        };
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_streams", message)
            .with_retry_after(Duration::from_secs(5))
    })?;
    if params.last_event_id.is_some_and(|seq| seq < 0) {
        return Err(invalid_last_event_id());
    }
    let start = match last_event_id(&headers)?.or(params.last_event_id) {
        Some(seq) => Start::After(seq),
        None => Start::Snapshot,
    };
    let limits = StreamLimits {
        max_duration: state.config.live.max_stream,
    };
    // Subscribed before `follow` reads Postgres, so nothing slips between.
    let subscription = state.hub.subscribe(job_id);
    let events = stream::follow(subscription, state.db.clone(), start, limits)
        .await
        .map_err(ApiError::database)?;
    Ok(match events {
        // A logout (or a detected token theft) ends the session's streams.
        Some(events) => EventStream::new(
            events.take_until(state.hub.session_revoked(session)),
            admitted,
            state.config.live.keepalive,
        ),
        None => EventStream::finished(),
    })
}

/// The job's owner and the caller's session, from a stream token (good for
/// its one job only) or a bearer access token.
async fn stream_caller(
    state: &AppState,
    headers: &HeaderMap,
    stream_token: Option<&str>,
    job_id: JobId,
) -> Result<(UserId, uuid::Uuid), ApiError> {
    if let Some(token) = stream_token {
        let claims = state.auth.authenticate_stream(token).await?;
        if claims.job_id != job_id {
            // The token is valid, but not for this job: as if it did not exist.
            return Err(ApiError::not_found("No such job."));
        }
        return Ok((claims.user_id, claims.session));
    }
    let token = bearer_token(headers).ok_or_else(|| {
        ApiError::unauthorized(
            "unauthenticated",
            "Send an access token as `Authorization: Bearer <token>`, or a stream token as `?token=`.",
        )
    })?;
    let access = state.auth.authenticate(token).await?;
    Ok((access.user_id, access.session))
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<i32>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let raw = value.to_str().unwrap_or_default().trim();
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse::<i32>()
        .ok()
        .filter(|seq| *seq >= 0)
        .map(Some)
        .ok_or_else(invalid_last_event_id)
}

fn invalid_last_event_id() -> ApiError {
    ApiError::bad_request(
        "invalid_last_event_id",
        "Last-Event-ID must be an event id this API sent.",
    )
}

fn events_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("job_events")
            .summary("Follow a job's status live (Server-Sent Events)")
            .description(
                "A `text/event-stream` of `status` events, each with `id: <seq>` and a JSON \
                 `data` payload. First the current state (or, with `Last-Event-ID`, every event \
                 after that id), then each change as it commits; the stream ends after \
                 the job's final event (`succeeded`, `failed`, `cancelled`; an earlier \
                 `failed` that a requeue followed does not end it), and after SSE_MAX_STREAM_SECS (reconnect with \
                 `Last-Event-ID` to resume without gaps or repeats). A comment every \
                 SSE_KEEPALIVE_SECS keeps proxies from closing it. A reconnect whose \
                 `Last-Event-ID` is already the final event gets 204 (EventSource then stops \
                 reconnecting). One user may hold SSE_MAX_STREAMS_PER_USER streams per \
                 server (429 `too_many_streams` past it). Authenticate with the \
                 Authorization header or, from a browser, `?token=` from `POST \
                 /jobs/{id}/stream-token`.",
            )
            .security_requirement(crate::http::extract::BEARER_SCHEME)
            .security_requirement(crate::http::extract::STREAM_TOKEN_SCHEME)
            .response_with::<204, (), _>(|r| {
                r.description("The Last-Event-ID given is the job's final event: nothing follows")
            })
            .response_with::<401, ApiError, _>(|r| {
                r.description("Missing, invalid, expired or revoked token")
            }),
        &[400, 404, 429],
    )
}

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct StreamToken {
    /// Opens this job's event stream (`?token=`) until `expires_at`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    /// The stream's URL with the token, ready for `new EventSource(...)`.
    pub events_url: String,
}

async fn stream_token(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(path): Path<JobPath>,
) -> Result<(StatusCode, Json<StreamToken>), ApiError> {
    let job = state.jobs.get(user.user_id, JobId(path.id)).await?;
    let (token, expires_at) = state.auth.issue_stream_token(&user, job.id)?;
    let events_url = format!("/api/v1/jobs/{}/events?token={token}", job.id);
    Ok((
        StatusCode::CREATED,
        Json(StreamToken {
            token,
            expires_at,
            events_url,
        }),
    ))
}

fn token_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("create_stream_token")
            .summary("A short-lived token that opens one job's event stream")
            .description(
                "For browsers, whose EventSource cannot send an Authorization header. The token \
                 opens only this job's stream, expires after STREAM_TOKEN_TTL_SECS, and stops \
                 working when its session logs out. Tokens in URLs never reach our logs.",
            )
            .response_with::<201, Json<StreamToken>, _>(|r| r.description("Created")),
        &[404],
    )
}

/// An SSE response of status events, unbuffered by proxies.
pub struct EventStream(Response);

impl EventStream {
    /// The client already has the job's final event: 204, which makes
    /// EventSource stop reconnecting.
    fn finished() -> Self {
        Self(StatusCode::NO_CONTENT.into_response())
    }

    fn new(
        events: impl Stream<Item = StatusEvent> + Send + 'static,
        admitted: Admitted,
        keepalive: Duration,
    ) -> Self {
        let mut first = true;
        // Counted while the response body lives: dropped with the stream.
        let gauge = crate::metrics::StreamGauge::open();
        let frames = events.map(move |event| {
            let _counted = (&gauge, &admitted);
            let mut frame = Event::default().event("status").id(event.seq.to_string());
            if std::mem::take(&mut first) {
                // Reconnect quickly after the stream's time cap.
                frame = frame.retry(Duration::from_secs(1));
            }
            Ok::<_, Infallible>(match frame.json_data(&event) {
                Ok(frame) => frame,
                Err(err) => Event::default().comment(format!("unencodable event: {err}")),
            })
        });
        let mut response = Sse::new(frames)
            .keep_alive(KeepAlive::new().interval(keepalive).text("keepalive"))
            .into_response();
        // nginx would otherwise hold events back in its buffer.
        response.headers_mut().insert(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        );
        Self(response)
    }
}

impl IntoResponse for EventStream {
    fn into_response(self) -> Response {
        self.0
    }
}

impl OperationOutput for EventStream {
    type Inner = StatusEvent;

    fn operation_response(
        ctx: &mut GenContext,
        _operation: &mut Operation,
    ) -> Option<OpenApiResponse> {
        // Each event as an EventSource client sees it: the JSON of a
        // `StatusEvent` in `data`, its `seq` in `id`.
        let status = ctx.schema.subschema_for::<StatusEvent>();
        let schema = schemars::json_schema!({
            "type": "object",
            "required": ["event", "id", "data"],
            "properties": {
                "event": { "const": "status" },
                "id": { "type": "string", "pattern": "^[0-9]+$" },
                "retry": { "type": "integer", "minimum": 0 },
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": status
                }
            }
        });
        Some(OpenApiResponse {
            description: "An event stream of `status` events".into(),
            content: IndexMap::from_iter([(
                "text/event-stream".into(),
                MediaType {
                    schema: Some(SchemaObject {
                        json_schema: schema,
                        example: None,
                        external_docs: None,
                    }),
                    ..Default::default()
                },
            )]),
            ..Default::default()
        })
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<OpenApiStatus>, OpenApiResponse)> {
        Self::operation_response(ctx, operation)
            .map(|response| vec![(Some(OpenApiStatus::Code(200)), response)])
            .unwrap_or_default()
    }
}

//! `ApiError`: the one error type of the HTTP layer, rendered as the single
//! envelope `{"error":{"code","message","request_id"}}`.
//!
//! Internal causes are logged here, once, with the request id, and never
//! shown to the client.

use std::time::Duration;

use aide::{
    OperationOutput,
    generate::GenContext,
    openapi::{Operation, Response as OpenApiResponse, StatusCode as OpenApiStatus},
};
use axum::{
    Json,
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use schemars::JsonSchema;
use serde::Serialize;

use super::request_id::current_request_id;
use crate::{auth::AuthError, domain::InvalidInput};

/// The body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, JsonSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, serde::Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code, e.g. `not_found`, `rate_limited`.
    pub code: String,
    /// A sentence for people; may change between releases.
    pub message: String,
    /// The request's X-Request-ID; quote it when reporting a problem.
    pub request_id: String,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
    www_authenticate: bool,
    /// Logged, never sent.
    cause: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            www_authenticate: false,
            cause: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            www_authenticate: true,
            ..Self::new(StatusCode::UNAUTHORIZED, code, message)
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            message,
        )
    }

    pub fn rate_limited(retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests; retry after the number of seconds in Retry-After.",
            )
        }
    }

    /// Tells the client when to come back (`Retry-After`, whole seconds).
    #[must_use]
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// A database error: 503 when Postgres cannot be reached (the client
    /// may retry), else our bug, 500.
    pub fn database(err: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&err) {
            tracing::warn!(error = %err, "database unavailable");
            Self::unavailable(
                "dependency_unavailable",
                "The database is temporarily unavailable; try again shortly.",
            )
        } else {
            Self::internal(err)
        }
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self {
            cause: Some(cause.into()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "An unexpected error occurred; it has been logged.",
            )
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = current_request_id();
        if let Some(cause) = &self.cause {
            tracing::error!(
                error = format!("{cause:#}"),
                code = self.code,
                "request failed"
            );
        } else if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "request failed");
        }
        let body = ErrorEnvelope {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                request_id,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(retry_after) = self.retry_after {
            // Whole seconds, rounded up, so a client never retries too early.
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if self.www_authenticate {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl OperationOutput for ApiError {
    type Inner = ErrorEnvelope;

    fn operation_response(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Option<OpenApiResponse> {
        let mut response = Json::<ErrorEnvelope>::operation_response(ctx, operation)?;
        response.description = "Error envelope".into();
        Some(response)
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<OpenApiStatus>, OpenApiResponse)> {
        Self::operation_response(ctx, operation)
            .map(|response| vec![(None, response)])
            .unwrap_or_default()
    }
}

impl From<InvalidInput> for ApiError {
    fn from(err: InvalidInput) -> Self {
        Self::unprocessable(err.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::InvalidInput(invalid) => invalid.into(),
            AuthError::EmailTaken => Self::new(
                StatusCode::CONFLICT,
                "email_taken",
                "An account with this email already exists.",
            ),
            AuthError::InvalidCredentials => {
                Self::unauthorized("invalid_credentials", "Invalid email or password.")
            }
            AuthError::TokenExpired => {
                Self::unauthorized("token_expired", "The token has expired.")
            }
            AuthError::InvalidToken => {
                Self::unauthorized("invalid_token", "The token is invalid or has been revoked.")
            }
            AuthError::RefreshTokenReused => Self::unauthorized(
                "refresh_token_reused",
                "This refresh token was already used; the session has been revoked. Sign in again.",
            ),
            AuthError::Unavailable(what) => Self::unavailable(
                "dependency_unavailable",
                format!("{what} is temporarily unavailable; try again shortly."),
            ),
            AuthError::Busy => Self::unavailable(
                "overloaded",
                "Too many sign-ins are being checked at once; retry after the seconds in Retry-After.",
            )
            .with_retry_after(Duration::from_secs(1)),
            AuthError::Internal(cause) => Self::internal(cause),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(err) => Self::unprocessable(err.body_text()),
            JsonRejection::JsonSyntaxError(err) => {
                Self::bad_request("malformed_json", err.body_text())
            }
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Expected a request body with Content-Type: application/json.",
            ),
            other => body_rejection(other.status(), other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        tracing::debug!(reason = %rejection.body_text(), "unparseable path parameter");
        Self::not_found("No such resource.")
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            rejection.body_text(),
        )
    }
}

/// A body that could not be read: too large, or the connection broke.
pub fn body_rejection(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            "payload_too_large",
            "The request body is too large.",
        )
    } else {
        ApiError::bad_request("unreadable_body", text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Saturated password hashing is the client's cue to come back: 503
    /// with Retry-After and the envelope, never a 500.
    #[tokio::test]
    async fn saturated_hashing_is_503_with_retry_after() {
        let response = ApiError::from(AuthError::Busy).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["error"]["code"], "overloaded");
    }
}

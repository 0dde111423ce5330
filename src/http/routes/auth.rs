//! `/api/v1/auth`: register, login, refresh, logout, me.

use aide::{
    axum::{
        ApiRouter,
        routing::{get_with, post_with},
    },
    transform::TransformOperation,
};
use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    auth::Session,
    db::users::User,
    domain::Role,
    http::{
        AppState,
        docs::error_responses,
        error::ApiError,
        extract::{ClientIp, CurrentUser, Json, OptionalJson},
        rate_limit::limit_auth_endpoint,
    },
};

pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route("/register", post_with(register, register_docs))
        .api_route("/login", post_with(login, login_docs))
        .api_route("/refresh", post_with(refresh, refresh_docs))
        .api_route("/logout", post_with(logout, logout_docs))
        .api_route("/me", get_with(me, me_docs))
        .with_path_items(|item| item.tag("auth"))
}

/// A new account. The schema states the rules exactly; anything else is 422.
#[derive(Deserialize, JsonSchema)]
pub struct Registration {
    /// An ASCII address, stored lower-cased.
    #[schemars(length(max = 254), regex(pattern = crate::domain::EMAIL_PATTERN))]
    pub email: String,
    /// 10 to 128 characters of any kind (NIST SP 800-63B: length, not
    /// composition rules).
    #[schemars(length(min = 10, max = 128))]
    pub password: String,
}

/// Sign-in. Anything that does not match an account is 401.
#[derive(Deserialize, JsonSchema)]
pub struct Credentials {
    pub email: String,
    pub password: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct LogoutRequest {
    /// Optional: the session's refresh token (it must be the caller's). The
    /// session ends either way; tokens issued before sessions were named
    /// need it to end their refresh tokens too.
    pub refresh_token: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct UserOut {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

impl From<User> for UserOut {
    fn from(user: User) -> Self {
        Self {
            id: user.id.0,
            email: user.email,
            role: user.role,
            created_at: user.created_at,
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: i64,
}

impl From<Session> for TokenPair {
    fn from(session: Session) -> Self {
        let now = Utc::now();
        Self {
            access_token: session.access_token,
            refresh_token: session.refresh_token,
            token_type: "bearer".to_owned(),
            expires_in: (session.access_expires_at - now).num_seconds().max(0),
            refresh_expires_in: (session.refresh_expires_at - now).num_seconds().max(0),
        }
    }
}

async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<Registration>,
) -> Result<(StatusCode, Json<UserOut>), ApiError> {
    limit_auth_endpoint(&state, "register", ip).await?;
    let user = state
        .auth
        .register(&body.email, body.password, Role::User)
        .await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

fn register_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("register_user")
            .summary("Create an account")
            .response::<201, Json<UserOut>>(),
        &[400, 409, 415, 422, 429],
    )
}

async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<Credentials>,
) -> Result<Json<TokenPair>, ApiError> {
    limit_auth_endpoint(&state, "login", ip).await?;
    let session = state.auth.login(&body.email, body.password).await?;
    Ok(Json(session.into()))
}

fn login_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("login")
            .summary("Exchange credentials for an access + refresh token pair")
            .response::<200, Json<TokenPair>>(),
        &[400, 401, 415, 422, 429],
    )
}

async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<RefreshRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    limit_auth_endpoint(&state, "refresh", ip).await?;
    let session = state.auth.refresh(&body.refresh_token).await?;
    Ok(Json(session.into()))
}

fn refresh_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("refresh_tokens")
            .summary("Rotate a refresh token")
            .description(
                "Spends the refresh token and returns a new pair. Presenting a \
                 token that was already rotated revokes every token of its session.",
            )
            .response::<200, Json<TokenPair>>(),
        &[400, 401, 415, 422, 429],
    )
}

async fn logout(
    State(state): State<AppState>,
    CurrentUser(access): CurrentUser,
    OptionalJson(body): OptionalJson<LogoutRequest>,
) -> Result<StatusCode, ApiError> {
    let refresh_token = body.and_then(|b| b.refresh_token);
    state.auth.logout(&access, refresh_token.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn logout_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("logout")
            .summary("End the session: every access, stream and refresh token it issued")
            .response::<204, ()>(),
        &[400, 401, 415, 422, 503],
    )
}

async fn me(
    State(state): State<AppState>,
    CurrentUser(access): CurrentUser,
) -> Result<Json<UserOut>, ApiError> {
    let user = state.auth.current_user(&access).await?;
    Ok(Json(user.into()))
}

fn me_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("get_current_user")
            .summary("The signed-in user")
            .response::<200, Json<UserOut>>(),
        &[401],
    )
}

//! The auth use cases, independent of HTTP.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    passwords,
    tokens::{AccessClaims, StreamClaims, TokenError, TokenKeys},
};
use crate::{
    db::{self, users::User},
    domain::{Email, InvalidInput, Password, Role},
    ephemeral::Ephemeral,
    live::Publisher,
};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("token has expired")]
    TokenExpired,
    #[error("token is invalid or revoked")]
    InvalidToken,
    /// A rotated refresh token came back: someone holds a stolen copy.
    #[error("refresh token was already used; the session has been revoked")]
    RefreshTokenReused,
    /// A dependency we need for this operation (Redis) is down.
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    /// Every password-hashing slot stayed busy: come back shortly.
    #[error("too many sign-ins at once")]
    Busy,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<passwords::HashingError> for AuthError {
    fn from(err: passwords::HashingError) -> Self {
        match err {
            passwords::HashingError::Busy => Self::Busy,
            passwords::HashingError::Failed(reason) => Self::Internal(anyhow::anyhow!(reason)),
        }
    }
}

impl From<sqlx::Error> for AuthError {
    fn from(err: sqlx::Error) -> Self {
        if db::is_unavailable(&err) {
            tracing::warn!(error = %err, "database unavailable");
            Self::Unavailable("the database")
        } else {
            Self::Internal(err.into())
        }
    }
}

impl From<TokenError> for AuthError {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::Expired => Self::TokenExpired,
            TokenError::Invalid => Self::InvalidToken,
        }
    }
}

/// An access + refresh pair.
#[derive(Debug)]
pub struct Session {
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct AuthService {
    db: PgPool,
    keys: TokenKeys,
    ephemeral: Ephemeral,
    /// Announces revoked sessions, so their open streams end everywhere.
    publisher: Publisher,
    stream_token_ttl: std::time::Duration,
}

/// What deleting an account leaves to its caller.
pub struct DeletedAccount {
    /// The stored objects of its documents.
    pub storage_keys: Vec<String>,
    /// Whether every session went on the token blocklist.
    pub sessions_blocked: bool,
}

impl AuthService {
    pub fn new(
        db: PgPool,
        keys: TokenKeys,
        ephemeral: Ephemeral,
        publisher: Publisher,
        stream_token_ttl: std::time::Duration,
    ) -> Self {
        passwords::warm_up();
        Self {
            db,
            keys,
            ephemeral,
            publisher,
            stream_token_ttl,
        }
    }

    pub async fn register(
        &self,
        email: &str,
        password: String,
        role: Role,
    ) -> Result<User, AuthError> {
        let email = Email::parse(email)?;
        let password = Password::parse_new(password)?;
        let hash = passwords::hash(password.expose().to_owned()).await?;
        db::users::insert(&self.db, &email, &hash, role)
            .await
            .map_err(|err| match db::unique_violation(&err) {
                Some(db::users::EMAIL_UNIQUE) => AuthError::EmailTaken,
                _ => err.into(),
            })
    }

    /// Unknown email and wrong password are indistinguishable, in the answer
    /// and in the time it takes.
    pub async fn login(&self, email: &str, password: String) -> Result<Session, AuthError> {
        // A malformed email cannot belong to an account; still verify against
        // the dummy hash so the timing matches a real miss.
        let credentials = match Email::for_lookup(email) {
            Some(email) => db::users::find_credentials(&self.db, &email).await?,
            None => None,
        };
        let (user_id, hash) = match credentials {
            Some(found) => (Some(found.user.id), Some(found.password_hash)),
            None => (None, None),
        };
        let rehash = hash
            .as_deref()
            .is_some_and(passwords::needs_rehash)
            .then(|| password.clone());
        let matches = passwords::verify(password, hash).await?;
        let user_id = user_id
            .filter(|_| matches)
            .ok_or(AuthError::InvalidCredentials)?;
        if let Some(password) = rehash {
            // An imported (bcrypt) hash: store ours now that the password
            // is known, so the weaker one is verified only once.
            let ours = passwords::hash(password).await?;
            db::users::set_password_hash(&self.db, user_id, &ours).await?;
        }

        let now = Utc::now();
        let family_id = Uuid::new_v4();
        let refresh_jti = Uuid::new_v4();
        let (refresh_token, refresh_expires_at) =
            self.keys
                .issue_refresh(user_id, refresh_jti, family_id, now)?;
        db::refresh_tokens::insert(
            &self.db,
            refresh_jti,
            user_id,
            family_id,
            refresh_expires_at,
        )
        .await?;
        let (access_token, access) = self.keys.issue_access(user_id, family_id, now)?;
        Ok(Session {
            access_token,
            access_expires_at: access.expires_at,
            refresh_token,
            refresh_expires_at,
        })
    }

    /// Exchanges a refresh token for a new pair. The old token is spent; if
    /// it comes back, its whole family is revoked.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Session, AuthError> {
        let claims = self.keys.verify_refresh(refresh_token)?;
        let mut tx = self.db.begin().await?;
        let row = db::refresh_tokens::lock(&mut tx, claims.jti)
            .await?
            .filter(|row| row.user_id == claims.user_id)
            .ok_or(AuthError::InvalidToken)?;
        if row.revoked_at.is_some() {
            return Err(AuthError::InvalidToken);
        }
        if row.rotated_at.is_some() {
            let revoked = db::refresh_tokens::revoke_family(&mut *tx, row.family_id).await?;
            tx.commit().await?;
            tracing::warn!(
                user_id = %row.user_id,
                family_id = %row.family_id,
                revoked,
                "refresh token reuse detected; revoked its family"
            );
            // The access tokens the family issued die with it. Best effort:
            // the thief's refresh token is dead in Postgres either way.
            if let Err(err) = self.block_session(row.family_id).await {
                tracing::error!(error = %err, family_id = %row.family_id, "cannot block the reused session's access tokens");
            }
            self.publisher.revoke_session(row.family_id).await;
            return Err(AuthError::RefreshTokenReused);
        }
        let now = Utc::now();
        if row.expires_at <= now {
            return Err(AuthError::TokenExpired);
        }
        // A deleted account's tokens go with it (ON DELETE CASCADE), so a row
        // here means the user still exists.
        db::refresh_tokens::mark_rotated(&mut tx, row.jti).await?;
        let next_jti = Uuid::new_v4();
        let (refresh_token, refresh_expires_at) =
            self.keys
                .issue_refresh(row.user_id, next_jti, row.family_id, now)?;
        db::refresh_tokens::insert(
            &mut *tx,
            next_jti,
            row.user_id,
            row.family_id,
            refresh_expires_at,
        )
        .await?;
        tx.commit().await?;

        let (access_token, access) = self.keys.issue_access(row.user_id, row.family_id, now)?;
        Ok(Session {
            access_token,
            access_expires_at: access.expires_at,
            refresh_token,
            refresh_expires_at,
        })
    }

    /// Verifies an access token: signature, expiry, type, and the blocklist.
    ///
    /// If the blocklist cannot be read (Redis down) the token is accepted:
    /// access tokens expire within 15 minutes, and refusing every request
    /// during a Redis outage would turn a cache failure into a full outage.
    pub async fn authenticate(&self, access_token: &str) -> Result<AccessClaims, AuthError> {
        let claims = self.keys.verify_access(access_token)?;
        self.ensure_not_blocked(claims.session).await?;
        Ok(claims)
    }

    /// A short-lived token that opens one job's status stream (the caller
    /// checked that the job is theirs). It dies with the session it was
    /// issued under.
    pub fn issue_stream_token(
        &self,
        access: &AccessClaims,
        job_id: crate::domain::JobId,
    ) -> Result<(String, DateTime<Utc>), AuthError> {
        Ok(self
            .keys
            .issue_stream(access, job_id, Utc::now(), self.stream_token_ttl)?)
    }

    /// Verifies a stream token: signature, expiry, type, and that its
    /// session has not logged out.
    pub async fn authenticate_stream(&self, token: &str) -> Result<StreamClaims, AuthError> {
        let claims = self.keys.verify_stream(token)?;
        self.ensure_not_blocked(claims.session).await?;
        Ok(claims)
    }

    /// Whether `session` was revoked (one blocklist key per session: a
    /// logout or reuse ends every access and stream token it issued).
    async fn ensure_not_blocked(&self, session: Uuid) -> Result<(), AuthError> {
        match self.ephemeral.is_token_blocked(&session.to_string()).await {
            Ok(true) => Err(AuthError::InvalidToken),
            Ok(false) => Ok(()),
            Err(err) => {
                tracing::warn!(error = %err, "token blocklist unavailable; accepting unexpired token");
                Ok(())
            }
        }
    }

    /// Ends the session: its refresh tokens are revoked in Postgres and
    /// every access and stream token it issued (older ones included) is
    /// blocked until the last of them expires. A refresh token, when given,
    /// must be the caller's; its family is revoked too (for access tokens
    /// from before sessions were named).
    pub async fn logout(
        &self,
        access: &AccessClaims,
        refresh_token: Option<&str>,
    ) -> Result<(), AuthError> {
        let mut tx = self.db.begin().await?;
        if let Some(refresh_token) = refresh_token {
            let claims = self.keys.verify_refresh(refresh_token)?;
            if claims.user_id != access.user_id {
                return Err(AuthError::InvalidToken);
            }
            if let Some(row) = db::refresh_tokens::lock(&mut tx, claims.jti).await? {
                db::refresh_tokens::revoke_family(&mut *tx, row.family_id).await?;
            }
        }
        db::refresh_tokens::revoke_family(&mut *tx, access.session).await?;
        tx.commit().await?;
        self.block_session(access.session).await.map_err(|err| {
            tracing::error!(error = %err, "cannot block the session on logout");
            AuthError::Unavailable("the token blocklist")
        })?;
        // Its open live-status streams end too, in every API process.
        self.publisher.revoke_session(access.session).await;
        Ok(())
    }

    /// Blocks every access and stream token of `session` for as long as
    /// any can live: the newest was issued at most now, so it expires
    /// within the access lifetime (plus the validation leeway).
    async fn block_session(&self, session: Uuid) -> Result<(), crate::ephemeral::EphemeralError> {
        self.ephemeral
            .block_token(
                &session.to_string(),
                super::tokens::ACCESS_TOKEN_TTL + super::tokens::LEEWAY,
            )
            .await
    }

    /// Deletes an account with everything it owns in Postgres, and ends
    /// every session it has: each is blocked like a logout, so its access
    /// and stream tokens are refused everywhere at once and its open
    /// streams close. Returns the storage keys of its documents, for the
    /// caller to delete (`None`: no such account). The blocks need Redis;
    /// the rows are gone once this returns `Some`, even if a session could not be
    /// blocked (`sessions_blocked` says), so the caller must still remove
    /// the stored objects it names.
    pub async fn delete_account(&self, email: &Email) -> Result<Option<DeletedAccount>, AuthError> {
        let mut tx = self.db.begin().await?;
        let Some(deleted) = db::users::delete(&mut tx, email).await? else {
            return Ok(None);
        };
        tx.commit().await?;
        let mut sessions_blocked = true;
        for session in &deleted.sessions {
            if let Err(err) = self.block_session(*session).await {
                tracing::error!(error = %err, %session, "cannot block a deleted account's session");
                sessions_blocked = false;
            }
            self.publisher.revoke_session(*session).await;
        }
        Ok(Some(DeletedAccount {
            storage_keys: deleted.storage_keys,
            sessions_blocked,
        }))
    }

    pub async fn current_user(&self, access: &AccessClaims) -> Result<User, AuthError> {
        db::users::find(&self.db, access.user_id)
            .await?
            .ok_or(AuthError::InvalidToken)
    }
}

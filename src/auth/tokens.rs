//! JWT (HS256) issue and verification.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{JobId, UserId};

pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
pub const REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Clock skew tolerated when checking `exp` (whole seconds).
pub const LEEWAY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TokenType {
    Access,
    Refresh,
    /// Opens one job's status stream, for clients that cannot send headers
    /// (a browser's EventSource).
    Stream,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    jti: Uuid,
    typ: TokenType,
    iat: i64,
    exp: i64,
    /// Refresh and access tokens: the session (login) they descend from,
    /// the unit a logout or a detected refresh-token reuse revokes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fam: Option<Uuid>,
    /// Stream tokens only: the one job they open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job: Option<Uuid>,
    /// Stream tokens only: the session they were issued under, so
    /// revoking it also ends them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<Uuid>,
}

/// What a verified access token tells us.
#[derive(Debug, Clone)]
pub struct AccessClaims {
    pub user_id: UserId,
    pub jti: Uuid,
    /// The session it belongs to (its login's refresh-token family). Access
    /// tokens issued before sessions were named carry none: their own
    /// `jti` stands for their session then.
    pub session: Uuid,
    pub expires_at: DateTime<Utc>,
}

/// What a verified refresh token tells us (its state lives in Postgres).
#[derive(Debug, Clone)]
pub struct RefreshClaims {
    pub user_id: UserId,
    pub jti: Uuid,
}

/// What a verified stream token tells us.
#[derive(Debug, Clone)]
pub struct StreamClaims {
    pub user_id: UserId,
    pub job_id: JobId,
    /// The session of the access token it was issued under.
    pub session: Uuid,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token has expired")]
    Expired,
    #[error("token is invalid")]
    Invalid,
}

#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    pub fn new(secret: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        // Only HS256: this pins the algorithm, so `alg: none` or an RS/HS
        // confusion attempt fails before any signature check.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY.as_secs();
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
            validation,
        })
    }

    pub fn issue_access(
        &self,
        user_id: UserId,
        session: Uuid,
        now: DateTime<Utc>,
    ) -> anyhow::Result<(String, AccessClaims)> {
        let jti = Uuid::new_v4();
        let expires_at = now + ACCESS_TOKEN_TTL;
        let token = self.sign(&Claims {
            sub: user_id.0,
            jti,
            typ: TokenType::Access,
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            fam: Some(session),
            job: None,
            sid: None,
        })?;
        Ok((
            token,
            AccessClaims {
                user_id,
                jti,
                session,
                expires_at,
            },
        ))
    }

    /// Returns the token and its expiry; the caller records it in Postgres.
    pub fn issue_refresh(
        &self,
        user_id: UserId,
        jti: Uuid,
        family_id: Uuid,
        now: DateTime<Utc>,
    ) -> anyhow::Result<(String, DateTime<Utc>)> {
        let expires_at = now + REFRESH_TOKEN_TTL;
        let token = self.sign(&Claims {
            sub: user_id.0,
            jti,
            typ: TokenType::Refresh,
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            fam: Some(family_id),
            job: None,
            sid: None,
        })?;
        Ok((token, expires_at))
    }

    /// A token that opens `job_id`'s status stream until `now + ttl`, and
    /// never past the access token it is issued under: logging out blocks
    /// that access token for its own lifetime, which then covers this one.
    pub fn issue_stream(
        &self,
        access: &AccessClaims,
        job_id: JobId,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> anyhow::Result<(String, DateTime<Utc>)> {
        let expires_at = (now + ttl).min(access.expires_at);
        let token = self.sign(&Claims {
            sub: access.user_id.0,
            jti: Uuid::new_v4(),
            typ: TokenType::Stream,
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            fam: None,
            job: Some(job_id.0),
            sid: Some(access.session),
        })?;
        Ok((token, expires_at))
    }

    pub fn verify_stream(&self, token: &str) -> Result<StreamClaims, TokenError> {
        let claims = self.verify(token, TokenType::Stream)?;
        Ok(StreamClaims {
            user_id: UserId(claims.sub),
            job_id: JobId(claims.job.ok_or(TokenError::Invalid)?),
            session: claims.sid.ok_or(TokenError::Invalid)?,
        })
    }

    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let claims = self.verify(token, TokenType::Access)?;
        Ok(AccessClaims {
            user_id: UserId(claims.sub),
            jti: claims.jti,
            session: claims.fam.unwrap_or(claims.jti),
            expires_at: DateTime::from_timestamp(claims.exp, 0).ok_or(TokenError::Invalid)?,
        })
    }

    pub fn verify_refresh(&self, token: &str) -> Result<RefreshClaims, TokenError> {
        let claims = self.verify(token, TokenType::Refresh)?;
        Ok(RefreshClaims {
            user_id: UserId(claims.sub),
            jti: claims.jti,
        })
    }

    fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        Ok(encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.encoding,
        )?)
    }

    fn verify(&self, token: &str, expected: TokenType) -> Result<Claims, TokenError> {
        let data =
            decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                    _ => TokenError::Invalid,
                }
            })?;
        if data.claims.typ != expected {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn access_round_trip_and_type_confusion() {
        let keys = TokenKeys::new(SECRET).expect("keys");
        let user = UserId(Uuid::new_v4());
        let session = Uuid::new_v4();
        let (access, claims) = keys.issue_access(user, session, Utc::now()).expect("issue");
        let verified = keys.verify_access(&access).expect("valid");
        assert_eq!((verified.jti, verified.session), (claims.jti, session));
        assert!(matches!(
            keys.verify_refresh(&access),
            Err(TokenError::Invalid)
        ));

        let (refresh, _) = keys
            .issue_refresh(user, Uuid::new_v4(), Uuid::new_v4(), Utc::now())
            .expect("issue");
        assert!(matches!(
            keys.verify_access(&refresh),
            Err(TokenError::Invalid)
        ));

        let job = JobId::generate();
        let (stream, _) = keys
            .issue_stream(&claims, job, Utc::now(), Duration::from_secs(60))
            .expect("issue");
        let verified = keys.verify_stream(&stream).expect("valid");
        assert_eq!(verified.job_id, job);
        assert_eq!(
            verified.session, session,
            "a stream token names its session"
        );
        assert!(matches!(
            keys.verify_access(&stream),
            Err(TokenError::Invalid)
        ));
        assert!(matches!(
            keys.verify_stream(&access),
            Err(TokenError::Invalid)
        ));
    }

    #[test]
    fn rejects_expired_foreign_and_unsigned_tokens() {
        let keys = TokenKeys::new(SECRET).expect("keys");
        let user = UserId(Uuid::new_v4());
        let long_ago = Utc::now() - chrono::Duration::hours(1);
        let (expired, _) = keys
            .issue_access(user, Uuid::new_v4(), long_ago)
            .expect("issue");
        assert!(matches!(
            keys.verify_access(&expired),
            Err(TokenError::Expired)
        ));

        let other = TokenKeys::new(b"another-secret-another-secret-xx").expect("keys");
        let (foreign, _) = other
            .issue_access(user, Uuid::new_v4(), Utc::now())
            .expect("issue");
        assert!(matches!(
            keys.verify_access(&foreign),
            Err(TokenError::Invalid)
        ));

        let (valid, _) = keys
            .issue_access(user, Uuid::new_v4(), Utc::now())
            .expect("issue");
        let payload = valid.split('.').nth(1).expect("payload");
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{none_header}.{payload}.");
        assert!(matches!(
            keys.verify_access(&unsigned),
            Err(TokenError::Invalid)
        ));
    }
}

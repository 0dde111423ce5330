//! The `refresh_tokens` table: one row per issued refresh token.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::UserId;

#[derive(Debug)]
pub struct RefreshTokenRow {
    pub jti: Uuid,
    pub user_id: UserId,
    pub family_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    jti: Uuid,
    user_id: UserId,
    family_id: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO refresh_tokens (jti, user_id, family_id, expires_at) VALUES ($1, $2, $3, $4)",
        jti,
        user_id.0,
        family_id,
        expires_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Locks the row for the rest of the transaction, so two concurrent refreshes
/// with the same token are serialised and the second one sees the rotation.
pub async fn lock(
    conn: &mut PgConnection,
    jti: Uuid,
) -> Result<Option<RefreshTokenRow>, sqlx::Error> {
    sqlx::query_as!(
        RefreshTokenRow,
        r#"SELECT jti, user_id AS "user_id: UserId", family_id, expires_at, rotated_at, revoked_at
           FROM refresh_tokens WHERE jti = $1 FOR UPDATE"#,
        jti
    )
    .fetch_optional(conn)
    .await
}

pub async fn mark_rotated(conn: &mut PgConnection, jti: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE refresh_tokens SET rotated_at = now() WHERE jti = $1",
        jti
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes every still-valid token of a family; returns how many it revoked.
pub async fn revoke_family(db: impl PgExecutor<'_>, family_id: Uuid) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
        family_id
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes up to `limit` expired tokens, oldest first, through
/// `refresh_tokens_expires_at_idx`. An expired token is refused whatever
/// its row says, so its row only takes space.
pub async fn prune_expired(db: impl PgExecutor<'_>, limit: i64) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query!(
        r#"DELETE FROM refresh_tokens WHERE jti IN (
               SELECT jti FROM refresh_tokens WHERE expires_at < now()
               ORDER BY expires_at LIMIT $1
           )"#,
        limit
    )
    .execute(db)
    .await?;
    Ok(deleted.rows_affected())
}

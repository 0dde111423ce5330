//! The `users` table.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::{Email, Role, UserId};

pub const EMAIL_UNIQUE: &str = "users_email_key";

#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// A user with the hash needed to check a password; never leaves the auth layer.
#[derive(Debug)]
pub struct UserCredentials {
    pub user: User,
    pub password_hash: String,
}

struct UserRow {
    id: Uuid,
    email: String,
    role: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<UserRow> for User {
    type Error = sqlx::Error;

    fn try_from(row: UserRow) -> Result<Self, Self::Error> {
        Ok(Self {
            id: UserId(row.id),
            email: row.email,
            role: row
                .role
                .parse()
                .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
            created_at: row.created_at,
        })
    }
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    email: &Email,
    password_hash: &str,
    role: Role,
) -> Result<User, sqlx::Error> {
    sqlx::query_as!(
        UserRow,
        r#"INSERT INTO users (id, email, password_hash, role)
           VALUES ($1, $2, $3, $4)
           RETURNING id, email, role, created_at"#,
        Uuid::now_v7(),
        email.as_str(),
        password_hash,
        role.as_str(),
    )
    .fetch_one(db)
    .await?
    .try_into()
}

pub async fn find(db: impl PgExecutor<'_>, id: UserId) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        UserRow,
        "SELECT id, email, role, created_at FROM users WHERE id = $1",
        id.0
    )
    .fetch_optional(db)
    .await?
    .map(User::try_from)
    .transpose()
}

pub async fn find_credentials(
    db: impl PgExecutor<'_>,
    email: &Email,
) -> Result<Option<UserCredentials>, sqlx::Error> {
    let Some(row) = sqlx::query!(
        "SELECT id, email, role, created_at, password_hash FROM users WHERE email = $1",
        email.as_str()
    )
    .fetch_optional(db)
    .await?
    else {
        return Ok(None);
    };
    let user = User::try_from(UserRow {
        id: row.id,
        email: row.email,
        role: row.role,
        created_at: row.created_at,
    })?;
    Ok(Some(UserCredentials {
        user,
        password_hash: row.password_hash,
    }))
}

/// Replaces an account's password hash (an imported one, upgraded at login).
pub async fn set_password_hash(
    db: impl PgExecutor<'_>,
    id: UserId,
    password_hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE users SET password_hash = $2 WHERE id = $1",
        id.0,
        password_hash,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Returns the updated user, or `None` when no account has that email.
pub async fn set_role(
    db: impl PgExecutor<'_>,
    email: &Email,
    role: Role,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        UserRow,
        r#"UPDATE users SET role = $2 WHERE email = $1
           RETURNING id, email, role, created_at"#,
        email.as_str(),
        role.as_str(),
    )
    .fetch_optional(db)
    .await?
    .map(User::try_from)
    .transpose()
}

/// Adds accounts imported from the original DocFlow (`rows`: a JSON array
/// of `{id, email, password_hash, role, created_at}`); an id or email that
/// exists already is left as it is. Returns how many were added.
pub async fn import(db: impl PgExecutor<'_>, rows: &serde_json::Value) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        r#"INSERT INTO users (id, email, password_hash, role, created_at)
           SELECT r.id, lower(btrim(r.email)), r.password_hash, r.role, r.created_at
           FROM jsonb_to_recordset($1)
                AS r(id uuid, email text, password_hash text, role text, created_at timestamptz)
           WHERE r.role IN ('user', 'admin') AND btrim(r.email) <> ''
           ON CONFLICT DO NOTHING"#,
        rows,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// What deleting an account took with it, for what lives outside Postgres.
pub struct DeletedAccount {
    /// Its sessions (refresh-token families), to block their access tokens.
    pub sessions: Vec<uuid::Uuid>,
    /// Its documents' objects in storage.
    pub storage_keys: Vec<String>,
}

/// Deletes an account and, by cascade, its documents, jobs, results and
/// refresh tokens; returns what must be cleaned up elsewhere, or `None`
/// when no account has that email.
pub async fn delete(
    conn: &mut sqlx::PgConnection,
    email: &Email,
) -> Result<Option<DeletedAccount>, sqlx::Error> {
    let Some(id) = sqlx::query_scalar!(
        "SELECT id FROM users WHERE email = $1 FOR UPDATE",
        email.as_str()
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let sessions = sqlx::query_scalar!(
        "SELECT DISTINCT family_id FROM refresh_tokens WHERE user_id = $1",
        id
    )
    .fetch_all(&mut *conn)
    .await?;
    let storage_keys =
        sqlx::query_scalar!("SELECT storage_key FROM documents WHERE owner_id = $1", id)
            .fetch_all(&mut *conn)
            .await?;
    sqlx::query!("DELETE FROM users WHERE id = $1", id)
        .execute(&mut *conn)
        .await?;
    Ok(Some(DeletedAccount {
        sessions,
        storage_keys,
    }))
}

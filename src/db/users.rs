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

//! The `documents` table. Every read and delete is scoped to an owner, so
//! another user's document is indistinguishable from a missing one.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::Cursor;
use crate::domain::{DocumentId, UserId};

#[derive(Debug, Clone)]
pub struct Document {
    pub id: DocumentId,
    pub owner_id: UserId,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub storage_key: String,
    pub created_at: DateTime<Utc>,
}

pub struct NewDocument<'a> {
    pub id: DocumentId,
    pub owner_id: UserId,
    pub filename: &'a str,
    pub content_type: &'a str,
    pub size_bytes: i64,
    pub sha256: &'a str,
    pub storage_key: &'a str,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    new: &NewDocument<'_>,
) -> Result<Document, sqlx::Error> {
    sqlx::query_as!(
        Document,
        r#"INSERT INTO documents (id, owner_id, filename, content_type, size_bytes, sha256, storage_key)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           RETURNING id AS "id: DocumentId", owner_id AS "owner_id: UserId", filename,
                     content_type, size_bytes, sha256, storage_key, created_at"#,
        new.id.0,
        new.owner_id.0,
        new.filename,
        new.content_type,
        new.size_bytes,
        new.sha256,
        new.storage_key,
    )
    .fetch_one(db)
    .await
}

pub async fn find_owned(
    db: impl PgExecutor<'_>,
    owner: UserId,
    id: DocumentId,
) -> Result<Option<Document>, sqlx::Error> {
    sqlx::query_as!(
        Document,
        r#"SELECT id AS "id: DocumentId", owner_id AS "owner_id: UserId", filename,
                  content_type, size_bytes, sha256, storage_key, created_at
           FROM documents WHERE id = $1 AND owner_id = $2"#,
        id.0,
        owner.0,
    )
    .fetch_optional(db)
    .await
}

/// For signed download links, whose signature already proves the grant.
pub async fn find(
    db: impl PgExecutor<'_>,
    id: DocumentId,
) -> Result<Option<Document>, sqlx::Error> {
    sqlx::query_as!(
        Document,
        r#"SELECT id AS "id: DocumentId", owner_id AS "owner_id: UserId", filename,
                  content_type, size_bytes, sha256, storage_key, created_at
           FROM documents WHERE id = $1"#,
        id.0,
    )
    .fetch_optional(db)
    .await
}

/// One page of an owner's documents, newest first, and the owner's total.
pub async fn list_owned(
    db: impl PgExecutor<'_>,
    owner: UserId,
    after: Option<Cursor>,
    limit: i64,
    offset: i64,
) -> Result<Vec<Document>, sqlx::Error> {
    sqlx::query_as!(
        Document,
        r#"SELECT id AS "id: DocumentId", owner_id AS "owner_id: UserId", filename,
                  content_type, size_bytes, sha256, storage_key, created_at
           FROM documents
           WHERE owner_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
           ORDER BY created_at DESC, id DESC
           LIMIT $4 OFFSET $5"#,
        owner.0,
        after.map(|c| c.created_at),
        after.map(|c| c.id),
        limit,
        offset,
    )
    .fetch_all(db)
    .await
}

/// How many documents the owner has, counting at most `cap` + 1.
pub async fn count_owned_capped(
    db: impl PgExecutor<'_>,
    owner: UserId,
    cap: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM (
               SELECT 1 FROM documents WHERE owner_id = $1 LIMIT $2
           ) AS capped"#,
        owner.0,
        cap + 1,
    )
    .fetch_one(db)
    .await
}

/// Deletes and returns the row, if the owner has it.
pub async fn delete_owned(
    db: impl PgExecutor<'_>,
    owner: UserId,
    id: DocumentId,
) -> Result<Option<Document>, sqlx::Error> {
    sqlx::query_as!(
        Document,
        r#"DELETE FROM documents WHERE id = $1 AND owner_id = $2
           RETURNING id AS "id: DocumentId", owner_id AS "owner_id: UserId", filename,
                     content_type, size_bytes, sha256, storage_key, created_at"#,
        id.0,
        owner.0,
    )
    .fetch_optional(db)
    .await
}

/// Adds documents imported from the original DocFlow (`rows`: a JSON array
/// of `{id, owner_id, filename, content_type, size_bytes, sha256,
/// storage_key, created_at}`), keeping their storage keys. Rows whose owner
/// was not imported, or that break this schema's rules (empty files, a
/// malformed hash), are skipped, as are ids already here. Returns how many
/// were added.
pub async fn import(db: impl PgExecutor<'_>, rows: &serde_json::Value) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        r#"INSERT INTO documents (id, owner_id, filename, content_type, size_bytes, sha256, storage_key, created_at)
           SELECT r.id, r.owner_id, coalesce(nullif(left(btrim(r.filename), 255), ''), 'document'),
                  r.content_type, r.size_bytes, lower(r.sha256), r.storage_key, r.created_at
           FROM jsonb_to_recordset($1)
                AS r(id uuid, owner_id uuid, filename text, content_type text, size_bytes bigint,
                     sha256 text, storage_key text, created_at timestamptz)
           WHERE r.size_bytes > 0 AND lower(r.sha256) ~ '^[0-9a-f]{64}$'
             AND EXISTS (SELECT 1 FROM users u WHERE u.id = r.owner_id)
           ON CONFLICT DO NOTHING"#,
        rows,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Those of these documents that exist (any owner: for the importer).
pub async fn any_of(
    db: impl PgExecutor<'_>,
    ids: &[uuid::Uuid],
) -> Result<Vec<Document>, sqlx::Error> {
    sqlx::query_as!(
        Document,
        r#"SELECT id AS "id: DocumentId", owner_id AS "owner_id: UserId", filename,
                  content_type, size_bytes, sha256, storage_key, created_at
           FROM documents WHERE id = ANY($1)"#,
        ids,
    )
    .fetch_all(db)
    .await
}

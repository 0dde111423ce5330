//! `docflow import-original`: copies the original (Python) DocFlow's
//! accounts, documents, jobs and dead letters into this database, and its
//! stored objects into this storage (docs/migrating.md).
//!
//! Rows are read in batches of [`BATCH`] by key and written with one
//! statement per batch (`db::<table>::import`); ids already here are left
//! alone, so an interrupted import is finished by running it again. What
//! this schema cannot hold is skipped and counted, never forced in.

use std::fmt::Write as _;

use anyhow::Context;
use futures_util::{StreamExt, TryStreamExt, stream};
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::{
    config::{Config, StorageConfig, legacy_env},
    db,
    documents::content_disposition,
    storage::Storage,
};

const BATCH: i64 = 500;
/// Objects copied at once (each streams through a bounded writer).
const COPIES_AT_ONCE: usize = 4;

/// One of the original's tables, read under this schema's column names.
/// This is the one place that knows its schema (Alembic head
/// `0002_dlq_and_admin`: `users.hashed_password`, `is_admin`, `is_active`;
/// `dead_letter_jobs.requeued_at`); the fixture in tests/api/fixtures is a
/// dump of it. Its SQL is checked when the import runs, not at build time:
/// sqlx's compile-time check knows only our own schema.
struct Table {
    name: &'static str,
    key: &'static str,
    select: &'static str,
}

const USERS: Table = Table {
    name: "accounts",
    key: "id",
    // A deactivated account is not brought back to life: this DocFlow
    // has no deactivation, so it is left behind (and counted).
    select: "SELECT id, email, hashed_password AS password_hash,
                    CASE WHEN is_admin THEN 'admin' ELSE 'user' END AS role, created_at
             FROM users WHERE is_active",
};
const DOCUMENTS: Table = Table {
    name: "documents",
    key: "id",
    select: "SELECT id, owner_id, filename, content_type, size_bytes, sha256, storage_key,
                    created_at
             FROM documents",
};
const JOBS: Table = Table {
    name: "jobs",
    key: "id",
    select: "SELECT id, owner_id, document_id, status, attempts, max_attempts, last_error,
                    idempotency_key, created_at, updated_at, completed_at
             FROM jobs",
};
const DEAD_LETTERS: Table = Table {
    name: "dead letters",
    key: "job_id",
    // A requeued entry is history there; the job's own row says the rest.
    select: "SELECT job_id, reason, error, attempts, failed_at
             FROM dead_letter_jobs WHERE requeued_at IS NULL",
};

/// Where the original's things are.
pub struct Source {
    /// Its database: `postgres://` or SQLAlchemy's `postgresql+psycopg://`.
    pub database_url: String,
    /// Its objects, as a STORAGE_URL; `None`: already in this DocFlow's
    /// storage (the same bucket), only checked.
    pub storage_url: Option<String>,
}

#[derive(Default)]
struct Count {
    read: u64,
    added: u64,
}

#[derive(Default)]
struct Objects {
    present: u64,
    copied: u64,
    copied_bytes: u64,
    missing: Vec<String>,
}

/// Runs the import; returns the report for the operator.
pub async fn run(config: &Config, target: &PgPool, source: Source) -> anyhow::Result<String> {
    let url = legacy_env::postgres_url(&source.database_url).unwrap_or(source.database_url);
    let original = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .context("--from-database: cannot connect")?;
    let storage = Storage::open(&config.storage)?;
    let original_storage = source
        .storage_url
        .as_deref()
        .map(|url| {
            StorageConfig::at(url, "--from-storage")
                .map_err(anyhow::Error::from)
                .and_then(|c| Storage::open(&c))
        })
        .transpose()?;
    let ttl = config.jobs.idempotency_ttl.as_secs_f64();

    let mut users = Count::default();
    let mut batches = Batches::of(&original, &USERS);
    while let Some(rows) = batches.next().await? {
        users.read += batch_len(&rows);
        users.added += db::users::import(target, &rows).await?;
    }
    let (mut documents, mut objects) = (Count::default(), Objects::default());
    let mut batches = Batches::of(&original, &DOCUMENTS);
    while let Some(rows) = batches.next().await? {
        documents.read += batch_len(&rows);
        documents.added += db::documents::import(target, &rows).await?;
        let ids = keys(&rows, DOCUMENTS.key);
        let imported = db::documents::any_of(target, &ids).await?;
        copy_objects(&imported, &storage, original_storage.as_ref(), &mut objects).await?;
    }
    let mut jobs = Count::default();
    let mut batches = Batches::of(&original, &JOBS);
    while let Some(rows) = batches.next().await? {
        jobs.read += batch_len(&rows);
        jobs.added += u64::try_from(db::jobs::import(target, &rows, ttl).await?).unwrap_or(0);
    }
    let mut dead = Count::default();
    let mut batches = Batches::of(&original, &DEAD_LETTERS);
    while let Some(rows) = batches.next().await? {
        dead.read += batch_len(&rows);
        dead.added += db::dead_letter_jobs::import(target, &rows).await?;
    }
    let inactive: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE NOT is_active")
        .fetch_one(&original)
        .await
        .context("reading the original's users")?;

    let mut report = String::new();
    for (table, count) in [
        (USERS.name, &users),
        (DOCUMENTS.name, &documents),
        (JOBS.name, &jobs),
        (DEAD_LETTERS.name, &dead),
    ] {
        let _ = writeln!(
            report,
            "{table}: {} read, {} added, {} already here or skipped",
            count.read,
            count.added,
            count.read - count.added
        );
    }
    let _ = writeln!(
        report,
        "accounts deactivated in the original, not imported: {inactive}"
    );
    let _ = writeln!(
        report,
        "objects: {} copied ({} bytes), {} already in place, {} missing",
        objects.copied,
        objects.copied_bytes,
        objects.present,
        objects.missing.len()
    );
    for key in objects.missing.iter().take(20) {
        let _ = writeln!(report, "  missing: {key}");
    }
    let _ = write!(
        report,
        "jobs that had not failed are queued and run here (their results are made by this \
         extractor)"
    );
    Ok(report)
}

/// A table of the original, read batch by batch in key order, so memory
/// stays bounded whatever its size.
struct Batches<'a> {
    original: &'a PgPool,
    table: &'a Table,
    after: Option<Uuid>,
    done: bool,
}

impl<'a> Batches<'a> {
    fn of(original: &'a PgPool, table: &'a Table) -> Self {
        Self {
            original,
            table,
            after: None,
            done: false,
        }
    }

    /// The next batch, a JSON array of rows; `None` after the last.
    async fn next(&mut self) -> anyhow::Result<Option<serde_json::Value>> {
        if self.done {
            return Ok(None);
        }
        let Table { name, key, select } = self.table;
        let sql = format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(b) ORDER BY b.{key}), '[]'::jsonb)
             FROM (SELECT * FROM ({select}) t
                   WHERE $1::uuid IS NULL OR t.{key} > $1 ORDER BY t.{key} LIMIT $2) b"
        );
        // Built only from this module's constants; the cursor and size are
        // bound parameters.
        let rows: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(self.after)
            .bind(BATCH)
            .fetch_one(self.original)
            .await
            .with_context(|| format!("reading the original's {name}"))?;
        let found = keys(&rows, key);
        self.after = found.last().copied();
        self.done = found.len() < usize::try_from(BATCH).unwrap_or(usize::MAX);
        Ok((!found.is_empty()).then_some(rows))
    }
}

fn batch_len(rows: &serde_json::Value) -> u64 {
    rows.as_array().map_or(0, |rows| rows.len() as u64)
}

/// The `key` column of each row (in order).
fn keys(rows: &serde_json::Value, key: &str) -> Vec<Uuid> {
    rows.as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| row.get(key)?.as_str()?.parse().ok())
        .collect()
}

/// Puts each imported document's object in this storage: copied from the
/// original's storage when it is not here yet, or reported missing.
async fn copy_objects(
    documents: &[db::documents::Document],
    storage: &Storage,
    original: Option<&Storage>,
    objects: &mut Objects,
) -> anyhow::Result<()> {
    let outcomes: Vec<(String, Option<u64>, bool)> = stream::iter(documents)
        .map(|doc| async move {
            if storage.exists(&doc.storage_key).await? {
                return Ok::<_, anyhow::Error>((doc.storage_key.clone(), None, true));
            }
            let Some(original) = original else {
                return Ok((doc.storage_key.clone(), None, false));
            };
            let copied = copy_object(doc, storage, original).await?;
            Ok((doc.storage_key.clone(), copied, false))
        })
        .buffer_unordered(COPIES_AT_ONCE)
        .try_collect()
        .await?;
    for (key, copied, present) in outcomes {
        match (present, copied) {
            (true, _) => objects.present += 1,
            (false, Some(bytes)) => {
                objects.copied += 1;
                objects.copied_bytes += bytes;
            }
            (false, None) => objects.missing.push(key),
        }
    }
    Ok(())
}

/// Streams one object across; `None` when the original has no such object.
async fn copy_object(
    doc: &db::documents::Document,
    storage: &Storage,
    original: &Storage,
) -> anyhow::Result<Option<u64>> {
    let key = &doc.storage_key;
    let mut body = match original.get(key).await {
        Ok(found) => found.into_stream(),
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("reading {key} from --from-storage")),
    };
    let mut writer = storage.writer(key, &doc.content_type, &content_disposition(&doc.filename));
    let mut bytes = 0;
    let copied: anyhow::Result<()> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            bytes += chunk.len() as u64;
            writer.write_all(&chunk).await?;
        }
        writer.shutdown().await?;
        Ok(())
    }
    .await;
    if let Err(err) = copied {
        let _ = writer.abort().await;
        return Err(err).with_context(|| format!("copying {key}"));
    }
    Ok(Some(bytes))
}

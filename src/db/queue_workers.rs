//! The `queue_workers` table: one lease per live worker process. A worker
//! renews its row on a connection of its own; the leader treats a row older
//! than the lease TTL as a process that is gone.

use sqlx::PgExecutor;
use uuid::Uuid;

/// Takes (or takes back) the lease of worker `id`.
pub async fn register(
    db: impl PgExecutor<'_>,
    id: Uuid,
    hostname: &str,
    pid: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO queue_workers (id, hostname, pid) VALUES ($1, $2, $3)
           ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()"#,
        id,
        hostname,
        pid,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Renews the lease. `false` means the row is gone: the leader judged this
/// worker dead (and rescued its runs, which will record nothing now).
pub async fn heartbeat(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool, sqlx::Error> {
    let renewed = sqlx::query!(
        "UPDATE queue_workers SET heartbeat_at = now() WHERE id = $1",
        id
    )
    .execute(db)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// Gives the lease up (a clean shutdown, after its runs are recorded).
pub async fn deregister(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM queue_workers WHERE id = $1", id)
        .execute(db)
        .await?;
    Ok(())
}

/// Forgets workers whose runs were rescued, unless one renewed its lease
/// meanwhile (it is alive after all, and keeps its row).
pub async fn forget(
    db: impl PgExecutor<'_>,
    workers: &[Uuid],
    ttl_secs: f64,
) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query!(
        r#"DELETE FROM queue_workers
           WHERE id = ANY($1) AND heartbeat_at < now() - make_interval(secs => $2)"#,
        workers,
        ttl_secs,
    )
    .execute(db)
    .await?;
    Ok(deleted.rows_affected())
}

/// Live leases: the worker processes the queue has now.
pub async fn count_live(db: impl PgExecutor<'_>, ttl_secs: f64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM queue_workers
           WHERE heartbeat_at > now() - make_interval(secs => $1)"#,
        ttl_secs
    )
    .fetch_one(db)
    .await
}

//! Postgres access. One module per table or aggregate; every function takes an
//! executor or `&mut PgConnection`, so callers decide the transaction.

pub mod dead_letter_jobs;
pub mod documents;
pub mod job_events;
pub mod jobs;
pub mod processing_results;
pub mod refresh_tokens;
pub mod users;

use std::time::Duration;

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::Config;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens the pool lazily: the API starts (and reports not-ready) while
/// Postgres is down, instead of crash-looping.
pub fn connect_lazy(config: &Config) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = config.database_url.expose().parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options.application_name("docflow")))
}

/// Whether an error says Postgres could not be reached (down, restarting,
/// the pool exhausted) rather than that a statement failed: callers answer
/// 503, try again later, instead of 500.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
    )
}

/// One round trip, for readiness probes.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(drop)
}

/// Applies our migrations, then apalis-postgres's (kept in its own schema
/// and its own migrations table, `apalis._sqlx_migrations`).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await?;
    apalis_postgres::PostgresStorage::<()>::setup(pool)
        .await
        .map_err(|e| anyhow::anyhow!("apalis-postgres migrations: {e}"))?;
    Ok(())
}

/// The name of the constraint a statement violated, if it was a unique
/// violation: lets callers turn a race they lost into a 409.
pub fn unique_violation(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) if db.is_unique_violation() => db.constraint(),
        _ => None,
    }
}

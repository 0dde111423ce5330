//! Postgres access. One module per table or aggregate; every function takes an
//! executor or `&mut PgConnection`, so callers decide the transaction.

pub mod dead_letter_jobs;
pub mod documents;
pub mod job_events;
pub mod jobs;
pub mod queue_workers;
pub mod refresh_tokens;
pub mod users;

use std::time::Duration;

use secrecy::ExposeSecret;

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::Config;

/// Where a newest-first page of a list starts: after the row created at
/// `created_at` with this id (keyset paging over `(created_at, id)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub id: uuid::Uuid,
}

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens the pool lazily: the API starts (and reports not-ready) while
/// Postgres is down, instead of crash-looping.
pub fn connect_lazy(config: &Config) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = config.database.url.expose_secret().parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(config.database.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(oltp(options).application_name("docflow")))
}

/// Settings for short statements: JIT compilation off. Postgres compiles a
/// statement whose estimated cost passes `jit_above_cost`; the claim's
/// estimates (per-owner lateral limits it cannot know) pass it, and
/// compiling took 770 ms of a claim that runs in 2.
fn oltp(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("jit", "off")])
}

/// The worker's own small pool for the queue's statements (claims, batched
/// outcomes, rescue), on the same database as `db`: the API's request load
/// can never starve the queue of connections, nor the other way round.
///
/// Its statements are few and run thousands of times a second, so each is
/// planned once (`plan_cache_mode = force_generic_plan`: planning the claim
/// alone took 2.7 ms, longer than running it).
pub fn queue_pool(db: &PgPool) -> PgPool {
    let options = db.connect_options().as_ref().clone();
    PgPoolOptions::new()
        .max_connections(6)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(
            oltp(options)
                .options([("plan_cache_mode", "force_generic_plan")])
                .application_name("docflow-worker"),
        )
}

/// Whether an error says Postgres could not be reached (down, restarting,
/// the pool exhausted) rather than that a statement failed: callers answer
/// 503, try again later, instead of 500.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // Connection exceptions (class 08), operator intervention (57: a
        // shutdown or restart terminated the session, or the server is
        // still starting) and too many connections (53300): the server,
        // not the statement, is the problem, and a retry later may pass.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57") || code == "53300"
        }),
        _ => false,
    }
}

/// One round trip, for readiness probes.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(drop)
}

/// Applies our migrations (the last apalis-postgres tables of an older
/// install are folded into `jobs` and dropped by one of them).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await?;
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

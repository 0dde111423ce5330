//! What the benchmarks share: a scratch database, migrated, dropped at the
//! end whatever the run's outcome.

use sqlx::{PgPool, postgres::PgPoolOptions};

/// A database of the bench's own on the server at DATABASE_URL (default the
/// local one), named `docflow_bench_<name>_<pid>`.
pub struct ScratchDb {
    admin: PgPool,
    name: String,
    pub url: String,
    pub pool: PgPool,
}

impl ScratchDb {
    pub async fn create(name: &str, max_connections: u32) -> anyhow::Result<Self> {
        let admin_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
            "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into()
        });
        let name = format!("docflow_bench_{name}_{}", std::process::id());
        let admin = PgPool::connect(&admin_url).await?;
        // The name is ours: a fixed prefix, a literal and our pid.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await?;
        let mut url = url::Url::parse(&admin_url)?;
        url.set_path(&name);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect(url.as_str())
            .await?;
        docflow::db::migrate(&pool).await?;
        Ok(Self {
            admin,
            name,
            url: url.to_string(),
            pool,
        })
    }

    /// Drops the database, handing back the run's outcome.
    pub async fn drop_after<T>(self, outcome: anyhow::Result<T>) -> anyhow::Result<T> {
        self.pool.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await?;
        outcome
    }
}

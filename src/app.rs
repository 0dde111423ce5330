//! What each `docflow` subcommand does, so `main` only parses arguments.

use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{AuthService, TokenKeys},
    config::Config,
    db,
    documents::{DocumentService, LinkSigner},
    domain::{Email, Role},
    ephemeral::Ephemeral,
    http::{self, AppState},
    jobs::JobService,
    live::{self, Hub, Publisher},
    storage::Storage,
    worker::{self, WorkerSetup},
};

/// Whether this process is one of several replicas (`api`, `worker`) or the
/// whole system on one node (`all-in-one`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    Replicated,
    SingleNode,
}

/// Builds the shared state. Replicas need Redis: an in-process rate limiter
/// or blocklist would be per replica, which silently weakens both.
pub async fn build_state(config: Config, topology: Topology) -> anyhow::Result<AppState> {
    let db = db::connect_lazy(&config).context("DATABASE_URL: invalid")?;
    build_state_with_db(config, topology, db).await
}

/// As [`build_state`], on an existing pool (tests bring a fresh database).
pub async fn build_state_with_db(
    config: Config,
    topology: Topology,
    db: PgPool,
) -> anyhow::Result<AppState> {
    let ephemeral = match (&config.redis.url, topology) {
        (Some(url), _) => Ephemeral::redis(url.expose_secret(), config.redis.key_prefix.clone())
            .await
            .context("REDIS_URL: cannot build a Redis client")?,
        (None, Topology::SingleNode) => Ephemeral::in_process(),
        (None, Topology::Replicated) => anyhow::bail!(
            "configuration error: REDIS_URL: required by `docflow api` (replicas share rate limits \
             and the token blocklist through Redis); use `docflow all-in-one` for a single node without Redis"
        ),
    };
    // Status events reach this process's streams through one Redis
    // subscription, or straight from the in-process worker.
    let (hub, publisher) = match (&ephemeral, &config.redis.url) {
        (Ephemeral::Redis(redis), Some(url)) => {
            let hub = Hub::new(false);
            live::fanout::spawn(url.expose_secret(), &config.redis.key_prefix, hub.clone())
                .context("REDIS_URL: cannot build a Redis client")?;
            // Redis can be down, or a writer may fail to publish: the hub
            // reads Postgres for all its streams at once meanwhile.
            live::poller::spawn(hub.clone(), db.clone(), config.live.keepalive);
            (hub, Publisher::Redis(redis.clone()))
        }
        _ => {
            let hub = Hub::new(true);
            (hub.clone(), Publisher::Local(hub))
        }
    };
    let storage = Storage::open(&config.storage)?;
    let keys =
        TokenKeys::new(config.auth.jwt_secret.expose_secret()).context("JWT_SECRET: unusable")?;
    let auth = AuthService::new(
        db.clone(),
        keys,
        ephemeral.clone(),
        publisher.clone(),
        config.live.stream_token_ttl,
    );
    let jobs = JobService::new(
        db.clone(),
        config.jobs.max_attempts,
        config.jobs.idempotency_ttl,
        config.ocr.languages.clone(),
        publisher.clone(),
    );
    let documents = DocumentService::new(
        db.clone(),
        storage.clone(),
        LinkSigner::new(config.auth.jwt_secret.expose_secret()),
        config.uploads.max_bytes,
        config.uploads.allowed_content_types.clone(),
        config.uploads.download_url_ttl,
    );
    Ok(AppState {
        config: Arc::new(config),
        db,
        ephemeral,
        storage,
        auth,
        documents,
        jobs,
        hub,
        publisher,
    })
}

/// Resolves on SIGTERM or Ctrl-C, and cancels `token` so every part of the
/// process starts draining at once.
pub async fn shutdown_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        () = terminate => {},
        () = token.cancelled() => return,
    }
    tracing::info!("shutdown requested; draining");
    token.cancel();
}

async fn serve_api(state: AppState, shutdown: CancellationToken) -> anyhow::Result<()> {
    let addr = state.config.http.bind_addr;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("BIND_ADDR: cannot listen on {addr}"))?;
    tracing::info!(
        %addr,
        storage = state.storage.backend(),
        ephemeral = state.ephemeral.backend_name(),
        "API listening"
    );
    http::serve(listener, state, shutdown.cancelled_owned()).await?;
    Ok(())
}

pub async fn run_api(config: Config) -> anyhow::Result<()> {
    let state = build_state(config, Topology::Replicated).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(shutdown.clone()));
    serve_api(state, shutdown).await
}

pub async fn run_worker(config: Config) -> anyhow::Result<()> {
    worker::check_tesseract(config.ocr.enabled, config.ocr.languages.as_str())?;
    let db = db::connect_lazy(&config).context("DATABASE_URL: invalid")?;
    let storage = Storage::open(&config.storage)?;
    let mut setup = WorkerSetup::from_config(&config, db, storage);
    setup.publisher = match &config.redis.url {
        Some(url) => match Ephemeral::redis(url.expose_secret(), config.redis.key_prefix.clone())
            .await
            .context("REDIS_URL: cannot build a Redis client")?
        {
            Ephemeral::Redis(redis) => Publisher::Redis(redis),
            Ephemeral::InProcess(_) => Publisher::Off,
        },
        None => {
            tracing::warn!(
                "REDIS_URL is not set: live status streams will see this worker's updates only \
                 when they re-read Postgres (every SSE_KEEPALIVE_SECS)"
            );
            Publisher::Off
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(shutdown.clone()));
    worker::run(setup, shutdown).await
}

/// The whole system in one process: migrations, API and worker, with the
/// in-process ephemeral store when REDIS_URL is unset.
pub async fn run_all_in_one(config: Config) -> anyhow::Result<()> {
    let state = build_state(config, Topology::SingleNode).await?;
    db::migrate(&state.db).await.context("running migrations")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(shutdown.clone()));
    worker::check_tesseract(
        state.config.ocr.enabled,
        state.config.ocr.languages.as_str(),
    )?;
    let mut setup =
        WorkerSetup::from_config(&state.config, state.db.clone(), state.storage.clone());
    setup.publisher = state.publisher.clone();
    let worker = worker::run(setup, shutdown.clone());
    let api = serve_api(state, shutdown.clone());
    let (api, worker) = tokio::join!(
        async {
            let result = api.await;
            shutdown.cancel();
            result
        },
        async {
            let result = worker.await;
            shutdown.cancel();
            result
        }
    );
    api.and(worker)
}

pub async fn run_migrate(config: Config) -> anyhow::Result<()> {
    let db = db::connect_lazy(&config).context("DATABASE_URL: invalid")?;
    db::migrate(&db).await.context("running migrations")?;
    tracing::info!("migrations applied");
    Ok(())
}

/// Creates an account from the command line (the password comes from stdin
/// so it never shows in `ps` or shell history).
pub async fn create_user(
    config: Config,
    email: &str,
    password: String,
    admin: bool,
) -> anyhow::Result<String> {
    let state = build_state(config, Topology::SingleNode).await?;
    let role = if admin { Role::Admin } else { Role::User };
    let user = state
        .auth
        .register(email, password, role)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(format!(
        "created {} ({}) as {}",
        user.email,
        user.id,
        role.as_str()
    ))
}

/// Copies the original (Python) DocFlow's data in (migrations first, so
/// the schema it writes to is this release's).
pub async fn import_original(
    config: Config,
    source: crate::import_original::Source,
) -> anyhow::Result<String> {
    let db = db::connect_lazy(&config).context("DATABASE_URL: invalid")?;
    db::migrate(&db).await.context("running migrations")?;
    crate::import_original::run(&config, &db, source).await
}

/// Deletes an account, its documents (rows and stored objects), jobs and
/// sessions; its tokens stop working everywhere at once.
pub async fn delete_user(config: Config, email: &str) -> anyhow::Result<String> {
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("{e}"))?;
    let shared_blocklist = config.redis.url.is_some();
    let state = build_state(config, Topology::SingleNode).await?;
    let Some(deleted) = state.auth.delete_account(&email).await? else {
        anyhow::bail!("no account with email {email}");
    };
    // The rows are gone: the objects go too, whatever became of the sessions.
    let mut left = 0;
    for key in &deleted.storage_keys {
        if let Err(err) = state.storage.delete(key).await {
            tracing::warn!(error = %err, key, "cannot delete a deleted account's object");
            left += 1;
        }
    }
    let removed = format!(
        "deleted {email}: {} documents ({left} objects could not be removed from storage)",
        deleted.storage_keys.len()
    );
    if !deleted.sessions_blocked {
        anyhow::bail!(
            "{removed}, but its sessions could not all be ended (the token blocklist is \
             unavailable): its access tokens stay valid until they expire (at most 15 minutes)"
        );
    }
    if !shared_blocklist {
        // Without Redis the blocklist lives in each process: this one's is
        // not the running server's.
        return Ok(format!(
            "{removed}; its refresh tokens are revoked, but without REDIS_URL a running \
             server does not see the blocklist: its access tokens stay valid there until \
             they expire (at most 15 minutes)"
        ));
    }
    Ok(format!("{removed}, every session ended"))
}

/// Makes an existing account an admin: the only way to get one.
pub async fn promote_user(config: Config, email: &str) -> anyhow::Result<String> {
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("{e}"))?;
    let db = db::connect_lazy(&config).context("DATABASE_URL: invalid")?;
    let user = db::users::set_role(&db, &email, Role::Admin)
        .await?
        .with_context(|| format!("no account with email {email}"))?;
    Ok(format!("{} ({}) is now an admin", user.email, user.id))
}

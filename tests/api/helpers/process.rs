//! Real `docflow` processes, started by tests.

use sqlx::PgPool;

use super::app::{JWT_SECRET, database_url, redis_url};

/// A port nothing listens on right now, for a server a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The `docflow` binary with a clean environment: only what the caller sets.
pub fn docflow_command() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_docflow"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command.current_dir(std::env::temp_dir());
    command
}

/// A child process killed when the test ends, however it ends.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something accepts connections on `port`.
pub fn wait_until_live(port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("nothing started listening on {port}");
}

/// A deployment of real `docflow` processes on loopback: a migrated
/// database, storage and a Redis key prefix they share, and processes
/// started on demand (killed when their `Running` drops).
pub struct Deployment {
    database: String,
    storage: tempfile::TempDir,
    /// The processes' TMPDIR, so their scratch directories can be checked.
    temp: tempfile::TempDir,
    prefix: String,
}

impl Deployment {
    pub async fn new(db: &PgPool) -> Self {
        Self::on_database(database_url(db).await)
    }

    /// A deployment on the database at `url` (migrated here if it is not).
    pub fn on_database(url: String) -> Self {
        let deployment = Self {
            database: url,
            storage: tempfile::tempdir().expect("tempdir"),
            temp: tempfile::tempdir().expect("tempdir"),
            prefix: format!("docflow-test:{}:", uuid::Uuid::new_v4()),
        };
        // Under #[sqlx::test] the schema is applied already and `docflow
        // migrate` must find nothing left to do; on a fresh database it
        // applies it.
        let status = deployment
            .command("migrate", free_port())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("migrate");
        assert!(status.success());
        deployment
    }

    /// `docflow <role>` configured for this deployment, listening on `port`
    /// (the API's address, or the worker's probes and metrics).
    pub fn command(&self, role: &str, port: u16) -> std::process::Command {
        let mut command = docflow_command();
        command
            .arg(role)
            .env("JWT_SECRET", JWT_SECRET)
            .env("DATABASE_URL", &self.database)
            .env("REDIS_URL", redis_url())
            .env("REDIS_KEY_PREFIX", &self.prefix)
            .env("STORAGE_URL", self.storage.path())
            .env("TESSERACT_ENABLED", "false")
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("WORKER_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("TRUSTED_PROXIES", "127.0.0.1/32")
            .env("TMPDIR", self.temp.path());
        command
    }

    /// The deployment's storage directory (STORAGE_URL).
    pub fn storage_root(&self) -> &std::path::Path {
        self.storage.path()
    }

    /// The directory under which the workers keep their scratch
    /// directories, one per live process.
    pub fn scratch_root(&self) -> std::path::PathBuf {
        self.temp.path().join("docflow-worker")
    }

    /// Starts `role` on `port` and waits until it listens; its logs are
    /// discarded.
    pub fn start(&self, role: &str, port: u16) -> Running {
        self.spawn(role, port, &[], std::process::Stdio::null())
    }

    /// As `start`, with some of the deployment's settings replaced.
    pub fn start_with(&self, role: &str, port: u16, env: &[(&str, &str)]) -> Running {
        self.spawn(role, port, env, std::process::Stdio::null())
    }

    /// As `start`, with its stdout (JSON logs) piped for the test to read
    /// once it has stopped it: keep such runs short, a full pipe blocks it.
    pub fn start_logged(&self, role: &str, port: u16) -> Running {
        self.spawn(role, port, &[], std::process::Stdio::piped())
    }

    fn spawn(
        &self,
        role: &str,
        port: u16,
        env: &[(&str, &str)],
        stdout: std::process::Stdio,
    ) -> Running {
        let child = self
            .command(role, port)
            .envs(env.iter().copied())
            .stdout(stdout)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn docflow");
        wait_until_live(port);
        Running(child)
    }
}

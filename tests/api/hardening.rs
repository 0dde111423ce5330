//! Denial of service without logging in (issue #13): connections that send
//! nothing or half a request, and more connections than the process can
//! hold, against the real `docflow api` binary.

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use crate::helpers::{Deployment, Running, free_port, wait_until_live};

/// Opens a connection to the API from `source` (any 127.x.y.z address is
/// this machine), as a distinct client address would.
async fn connect_from(source: [u8; 4], port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind((std::net::Ipv4Addr::from(source), 0).into())
        .expect("bind");
    socket
        .connect(([127, 0, 0, 1], port).into())
        .await
        .expect("connect")
}

/// What the server sent before it closed the connection, or `None` if it
/// is still open after `within`.
async fn answer_and_close(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut received = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let mut buffer = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(String::from_utf8_lossy(&received).into_owned()),
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

/// The status line and the JSON body of a refusal.
fn refusal(answer: &str) -> (&str, Value) {
    let status = answer.lines().next().unwrap_or_default();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn live_from(source: [u8; 4], port: u16) -> String {
    let mut stream = connect_from(source, port).await;
    stream
        .write_all(b"GET /api/v1/health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    answer_and_close(&mut stream, Duration::from_secs(10))
        .await
        .expect("answered")
}

fn api(deployment: &Deployment, port: u16, settings: &[(&str, &str)]) -> Running {
    // No trusted proxy: every loopback address is a client of its own.
    let mut all = vec![("TRUSTED_PROXIES", "192.0.2.1/32")];
    all.extend_from_slice(settings);
    deployment.start_with("api", port, &all)
}

#[sqlx::test]
async fn silent_and_half_sent_connections_are_closed_at_the_header_deadline(db: PgPool) {
    let deployment = Deployment::new(&db).await;
    let port = free_port();
    let _api = api(&deployment, port, &[("HTTP_HEADER_READ_TIMEOUT_SECS", "1")]);

    let mut silent = connect_from([127, 0, 0, 1], port).await;
    let mut half = connect_from([127, 0, 0, 1], port).await;
    half.write_all(b"GET /api/v1/health/live HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .await
        .expect("write");
    let started = Instant::now();
    assert!(
        answer_and_close(&mut silent, Duration::from_secs(5))
            .await
            .is_some(),
        "a connection that sends nothing is closed"
    );
    assert!(
        answer_and_close(&mut half, Duration::from_secs(5))
            .await
            .is_some(),
        "a half-sent header is closed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // A keep-alive connection that goes idle after a request is closed too.
    let mut idle = connect_from([127, 0, 0, 1], port).await;
    idle.write_all(b"GET /api/v1/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let answer = answer_and_close(&mut idle, Duration::from_secs(5))
        .await
        .expect("closed after its idle time");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[sqlx::test]
async fn one_address_cannot_hold_more_than_its_share_of_connections(db: PgPool) {
    let deployment = Deployment::new(&db).await;
    let port = free_port();
    let _api = api(
        &deployment,
        port,
        &[
            ("HTTP_MAX_CONNECTIONS_PER_IP", "50"),
            ("HTTP_HEADER_READ_TIMEOUT_SECS", "60"),
        ],
    );
    let attacker = [127, 0, 0, 7];
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(connect_from(attacker, port).await);
    }
    // Accepted connections get no answer: they wait for a request.
    assert!(
        answer_and_close(&mut held[49], Duration::from_millis(300))
            .await
            .is_none()
    );
    let mut over = connect_from(attacker, port).await;
    let answer = answer_and_close(&mut over, Duration::from_secs(5))
        .await
        .expect("refused at once");
    let (status, body) = refusal(&answer);
    assert_eq!(status, "HTTP/1.1 429 Too Many Requests", "{answer}");
    assert_eq!(body["error"]["code"], "too_many_connections", "{answer}");
    assert!(body["error"]["request_id"].is_string(), "{answer}");

    // Everyone else is served meanwhile.
    let other = live_from([127, 0, 0, 8], port).await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");

    // Closing gives the places back.
    held.clear();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = live_from(attacker, port).await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
}

/// The process's file-descriptor limit is 1,024 and the configured cap far
/// above it: the cap is lowered to fit (1,024 − 512 reserved), connections
/// past it are refused with 503, and the process answers again as soon as
/// they close: it never reaches "Too many open files".
#[sqlx::test]
async fn connections_past_the_process_limit_are_refused_not_fatal(db: PgPool) {
    let deployment = Deployment::new(&db).await;
    let port = free_port();
    let inner = deployment.command("api", port);
    let mut command = std::process::Command::new("prlimit");
    command
        .arg("--nofile=1024:1024")
        .arg(inner.get_program())
        .args(inner.get_args())
        .envs(
            inner
                .get_envs()
                .filter_map(|(key, value)| value.map(|value| (key, value))),
        )
        .env("TRUSTED_PROXIES", "192.0.2.1/32")
        .env("HTTP_MAX_CONNECTIONS", "100000")
        .env("HTTP_HEADER_READ_TIMEOUT_SECS", "60")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _api = Running(command.spawn().expect("prlimit (util-linux)"));
    wait_until_live(port);

    // 600 silent connections from three addresses (200 each, under the
    // per-address cap of 256): 512 fit, the rest are refused.
    let mut held = Vec::new();
    let mut refused = 0;
    for n in 0..600u16 {
        let source = [127, 0, 1, u8::try_from(n % 3).expect("small")];
        let mut stream = connect_from(source, port).await;
        if n >= 520 {
            let answer = answer_and_close(&mut stream, Duration::from_secs(5))
                .await
                .expect("refused at once");
            let (status, body) = refusal(&answer);
            assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{answer}");
            assert_eq!(body["error"]["code"], "overloaded", "{answer}");
            refused += 1;
        } else {
            held.push(stream);
        }
    }
    assert_eq!(refused, 80);
    held.clear();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let live = live_from([127, 0, 2, 1], port).await;
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
}

/// A session Postgres terminates (a restart, `pg_terminate_backend`) is an
/// outage the client may retry, 503, never our bug, 500.
#[sqlx::test]
async fn a_terminated_database_session_is_unavailable_not_a_bug(db: PgPool) {
    let mut connection = db.acquire().await.expect("connection");
    let err = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
        .execute(&mut *connection)
        .await
        .expect_err("the session ends");
    assert!(docflow::db::is_unavailable(&err), "{err:?}");
    let answer = docflow::http::error::ApiError::database(err);
    assert_eq!(answer.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
}

/// The peak resident memory of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmHWM")
}

/// 96 logins at once for unknown emails (each verifies against a dummy
/// hash, ~19 MiB of Argon2 memory): hashing runs on one slot per core, so
/// the process's peak memory grows by a few hashes' worth, not 96.
#[sqlx::test]
async fn concurrent_logins_keep_memory_bounded(db: PgPool) {
    let deployment = Deployment::new(&db).await;
    let port = free_port();
    let api = api(
        &deployment,
        port,
        &[("AUTH_RATE_LIMIT_PER_MINUTE", "100000")],
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = crate::helpers::client();
    // Warm: one login, so the idle peak includes the first hash.
    let warm = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"email": "nobody@example.com", "password": "whatever-123"}))
        .send()
        .await
        .expect("login");
    assert_eq!(warm.status(), reqwest::StatusCode::UNAUTHORIZED);
    let before = peak_rss_kib(api.0.id());

    let logins = (0..96).map(|n| {
        let client = client.clone();
        let url = format!("{base}/api/v1/auth/login");
        async move {
            client
                .post(url)
                .json(&serde_json::json!({"email": format!("nobody{n}@example.com"), "password": "whatever-123"}))
                .send()
                .await
                .expect("login")
                .status()
        }
    });
    let statuses = futures_util::future::join_all(logins).await;
    let after = peak_rss_kib(api.0.id());
    // Each is either checked (401) or told to come back (503 overloaded).
    assert!(
        statuses
            .iter()
            .all(|status| *status == reqwest::StatusCode::UNAUTHORIZED
                || *status == reqwest::StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&reqwest::StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    eprintln!(
        "96 concurrent logins: peak RSS {before} -> {after} KiB; {} answered 401, {} 503",
        statuses
            .iter()
            .filter(|s| **s == reqwest::StatusCode::UNAUTHORIZED)
            .count(),
        statuses
            .iter()
            .filter(|s| **s == reqwest::StatusCode::SERVICE_UNAVAILABLE)
            .count()
    );
    let cores = std::thread::available_parallelism().map_or(2, usize::from) as u64;
    // Argon2's 19 MiB per slot, plus room for the requests themselves.
    let ceiling = cores * 20 * 1024 + 64 * 1024;
    assert!(
        after - before < ceiling,
        "peak grew {} KiB (before {before} KiB, ceiling {ceiling} KiB)",
        after - before
    );
}

/// A Postgres server of the test's own (initdb into a temporary directory,
/// run as the `postgres` system user), so the test can restart it.
struct OwnPostgres {
    bin: std::path::PathBuf,
    data: tempfile::TempDir,
    port: u16,
}

/// Whether this process runs as root (initdb refuses to).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|me| me.uid() == 0)
}

impl OwnPostgres {
    fn as_postgres(program: &std::path::Path) -> std::process::Command {
        let mut command = if running_as_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            std::process::Command::new(program)
        };
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command
    }

    fn start() -> Self {
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .expect("/usr/lib/postgresql (Debian's postgresql package)")
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .max()
            .expect("a Postgres version");
        let bin = version.join("bin");
        let data = tempfile::Builder::new()
            .prefix("docflow-pg-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        if running_as_root() {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(data.path())
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let status = Self::as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(data.path().join("db"))
            .status()
            .expect("initdb");
        assert!(status.success(), "initdb");
        let postgres = Self {
            bin,
            data,
            port: free_port(),
        };
        postgres.ctl("start");
        postgres
    }

    fn ctl(&self, action: &str) {
        let status = Self::as_postgres(&self.bin.join("pg_ctl"))
            .args(["-w", "-m", "fast", "-D"])
            .arg(self.data.path().join("db"))
            .args(["-l"])
            .arg(self.data.path().join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                self.data.path().display()
            ))
            .arg(action)
            .status()
            .expect("pg_ctl");
        assert!(status.success(), "pg_ctl {action}");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Self::as_postgres(&self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(self.data.path().join("db"))
            .arg("stop")
            .status();
    }
}

/// Requests keep coming while Postgres restarts three times (`pg_ctl
/// restart -m fast`, which terminates every session): each is answered
/// 200, 401 or 503, never 500, and the API serves again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_is_503_never_500() {
    let postgres = OwnPostgres::start();
    let deployment = Deployment::on_database(postgres.url());
    let port = free_port();
    let _api = api(
        &deployment,
        port,
        &[("AUTH_RATE_LIMIT_PER_MINUTE", "100000")],
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = crate::helpers::client();
    let tokens = crate::helpers::sign_in_at(&client, &base, "restart@example.com", None).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = (0..4).map(|n| {
        let (client, base, access, stop) = (
            client.clone(),
            base.clone(),
            tokens.access.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let response = if n % 2 == 0 {
                    client
                        .get(format!("{base}/api/v1/jobs?limit=5"))
                        .bearer_auth(&access)
                        .send()
                        .await
                } else {
                    client
                        .post(format!("{base}/api/v1/auth/login"))
                        .json(&serde_json::json!({"email": "restart@example.com", "password": "wrong-password-1"}))
                        .send()
                        .await
                };
                if let Ok(response) = response {
                    *statuses.entry(response.status().as_u16()).or_default() += 1;
                }
            }
            statuses
        })
    });
    let load: Vec<_> = load.collect();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        // Blocks this thread only; the load runs on the other.
        tokio::task::block_in_place(|| postgres.ctl("restart"));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = std::collections::BTreeMap::<u16, usize>::new();
    for task in load {
        for (status, count) in task.await.expect("load") {
            *all.entry(status).or_default() += count;
        }
    }
    eprintln!("statuses during three Postgres restarts: {all:?}");
    assert!(!all.contains_key(&500), "{all:?}");
    assert!(
        all.keys().all(|status| [200, 401, 503].contains(status)),
        "{all:?}"
    );
    let after = client
        .get(format!("{base}/api/v1/jobs?limit=5"))
        .bearer_auth(&tokens.access)
        .send()
        .await
        .expect("after");
    assert_eq!(after.status(), reqwest::StatusCode::OK);
}

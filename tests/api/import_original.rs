//! `docflow import-original` on a dump of the original (Python) DocFlow's
//! database (tests/api/fixtures/original/): accounts keep their passwords,
//! documents their bytes, jobs that had not failed run here, dead letters
//! stay for the admin; running it twice adds nothing.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};

use crate::helpers::{Deployment, client, free_port, is_terminal, log_in_at};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/fixtures/original");
const ALICE: &str = "6f1c2a10-0000-4000-8000-000000000001";
const PDF: &str = "7a2b3c40-0000-4000-8000-000000000001";
const TEXT: &str = "7a2b3c40-0000-4000-8000-000000000002";
const SUCCEEDED_THERE: &str = "8b3c4d50-0000-4000-8000-000000000001";
const FAILED_THERE: &str = "8b3c4d50-0000-4000-8000-000000000002";
const INTERRUPTED_THERE: &str = "8b3c4d50-0000-4000-8000-000000000003";

/// The original's database, loaded from the dump, dropped at the end.
struct OriginalDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl OriginalDatabase {
    async fn load() -> Self {
        let admin_url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
        let name = format!("docflow_original_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url).await.expect("connect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create");
        let mut url = url::Url::parse(&admin_url).expect("url");
        url.set_path(&name);
        let mut original = PgConnection::connect(url.as_str()).await.expect("connect");
        let dump =
            std::fs::read_to_string(format!("{FIXTURE}/original_docflow.sql")).expect("dump");
        sqlx::raw_sql(sqlx::AssertSqlSafe(dump))
            .execute(&mut original)
            .await
            .expect("load the dump");
        // As an operator would write it in the original's .env.
        let url = url
            .as_str()
            .replacen("postgres://", "postgresql+psycopg://", 1);
        Self {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for OriginalDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside the test's runtime: a thread of its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async {
                    if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut admin)
                        .await;
                    }
                });
        })
        .join();
    }
}

fn import(deployment: &Deployment, original: &OriginalDatabase) -> String {
    let output = deployment
        .command("import-original", free_port())
        .arg("--from-database")
        .arg(&original.url)
        .arg("--from-storage")
        .arg(format!("{FIXTURE}/objects"))
        .output()
        .expect("run import-original");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "import failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

async fn sign_in(base: &str, email: &str) -> reqwest::Response {
    client()
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": "original-password"}))
        .send()
        .await
        .expect("login")
}

#[sqlx::test]
async fn the_originals_data_comes_over_and_works_here(db: PgPool) {
    let original = OriginalDatabase::load().await;
    let deployment = Deployment::new(&db).await;

    let report = import(&deployment, &original);
    for line in [
        "accounts: 2 read, 2 added",
        // The empty upload does not fit this schema; the deactivated
        // account's document stays behind with it.
        "documents: 4 read, 2 added",
        // The deactivated account's document and job stay behind.
        "jobs: 4 read, 3 added",
        // The dead letter requeued there is history, not read.
        "dead letters: 1 read, 1 added",
        "accounts deactivated in the original, not imported: 1",
        "objects: 2 copied",
    ] {
        assert!(report.contains(line), "{line:?} not in:\n{report}");
    }
    // Stored as they were, under the same keys.
    for document in [PDF, TEXT] {
        let key = format!("documents/{ALICE}/{document}");
        assert_eq!(
            std::fs::read(deployment.storage_root().join(&key)).expect("copied"),
            std::fs::read(Path::new(FIXTURE).join("objects").join(&key)).expect("source"),
        );
    }
    // Again: nothing new, nothing copied twice.
    let again = import(&deployment, &original);
    assert!(again.contains("accounts: 2 read, 0 added"), "{again}");
    assert!(again.contains("jobs: 4 read, 0 added"), "{again}");
    assert!(
        again.contains("objects: 0 copied (0 bytes), 2 already in place"),
        "{again}"
    );

    let (api_port, worker_port) = (free_port(), free_port());
    let _api = deployment.start("api", api_port);
    let _worker = deployment.start("worker", worker_port);
    let base = format!("http://127.0.0.1:{api_port}");

    // The same password, under the email as this schema keeps it; the
    // bcrypt hash is replaced by an Argon2id one at that first login.
    let alice = log_in_at(&client(), &base, "alice@example.com", "original-password").await;
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1::uuid")
        .bind(ALICE)
        .fetch_one(&db)
        .await
        .expect("hash");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    log_in_at(&client(), &base, "alice@example.com", "original-password").await;
    assert_eq!(
        sign_in(&base, "gone@example.com").await.status(),
        StatusCode::UNAUTHORIZED
    );

    let http = client();
    let get = |path: String, token: &str| {
        http.get(format!("{base}/api/v1{path}"))
            .bearer_auth(token)
            .send()
    };
    let documents: Value = get("/documents".into(), &alice.access)
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let mut names: Vec<&str> = documents["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|d| d["filename"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["notes.txt", "report.pdf"]);
    let link: Value = get(format!("/documents/{TEXT}/download-url"), &alice.access)
        .await
        .expect("link")
        .json()
        .await
        .expect("json");
    let bytes = http
        .get(link["url"].as_str().expect("url"))
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(&bytes[..], b"Notes kept by the original DocFlow.\n");

    // What had not failed runs here, through this extractor.
    let finished = |job: &'static str| {
        let get = &get;
        let alice = &alice;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let body: Value = get(format!("/jobs/{job}"), &alice.access)
                    .await
                    .expect("job")
                    .json()
                    .await
                    .expect("json");
                if is_terminal(&body) {
                    return body;
                }
                assert!(Instant::now() < deadline, "{body}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    for job in [SUCCEEDED_THERE, INTERRUPTED_THERE] {
        let done = finished(job).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert!(done["result"]["result"]["kind"].is_string(), "{done}");
    }
    let pdf_job = finished(SUCCEEDED_THERE).await;
    assert!(
        pdf_job["result"]["result"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("Carried over from the original")),
        "{pdf_job}"
    );
    let failed = finished(FAILED_THERE).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["last_error"], "could not decode the text");

    // An idempotency key of the original still names its job.
    let replay = http
        .post(format!("{base}/api/v1/jobs"))
        .bearer_auth(&alice.access)
        .header("Idempotency-Key", "client-key-1")
        .json(&json!({"document_id": PDF}))
        .send()
        .await
        .expect("replay");
    assert_eq!(replay.status(), StatusCode::OK);
    let replayed: Value = replay.json().await.expect("json");
    assert_eq!(replayed["id"], SUCCEEDED_THERE);

    // The original's admin sees its dead letter.
    let ops = log_in_at(&client(), &base, "ops@example.com", "original-password").await;
    let dead: Value = get("/admin/failed-jobs".into(), &ops.access)
        .await
        .expect("dead letters")
        .json()
        .await
        .expect("json");
    assert_eq!(dead["total"], 1, "{dead}");
    assert_eq!(dead["items"][0]["job_id"], FAILED_THERE);
    assert_eq!(dead["items"][0]["reason"], "permanent");
}

//! Jobs end to end: the API enqueues in Postgres, a real worker (in process,
//! extracting in real `docflow extract` children, OCR by the real tesseract)
//! processes, and the results, retries and dead letters are checked.

use std::time::Duration;

use crate::helpers::{
    S3Server, TestApp, assert_error, create_job, event_kinds, get, get_json, is_terminal,
    job_events, jpeg, pdf, run_job, upload_id, wait_for_job,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

async fn owner_of(app: &TestApp, document: &str) -> String {
    sqlx::query_scalar("SELECT owner_id::text FROM documents WHERE id = $1::uuid")
        .bind(document)
        .fetch_one(&app.db)
        .await
        .expect("owner")
}

async fn count(db: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.expect("count")
}

/// Renders our one-page PDF to an image with poppler, as a scanner would.
fn scan(format: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("page.pdf");
    std::fs::write(&input, pdf()).expect("write");
    let flag = if format == "png" { "-png" } else { "-jpeg" };
    let status = std::process::Command::new("pdftoppm")
        .args([flag, "-r", "150", "-singlefile"])
        .arg(&input)
        .arg(dir.path().join("page"))
        .status()
        .expect("pdftoppm (poppler-utils) is installed");
    assert!(status.success());
    let ext = if format == "png" { "png" } else { "jpg" };
    std::fs::read(dir.path().join(format!("page.{ext}"))).expect("rendered page")
}

#[sqlx::test]
async fn each_kind_is_processed_end_to_end(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.start_worker();
    let tokens = app.signed_in("alice@example.com").await;

    let pdf_id = upload_id(&app, &tokens, pdf(), "hello.pdf", "application/pdf").await;
    let no_result = get(&app, &tokens, &format!("/api/v1/documents/{pdf_id}/result")).await;
    assert_error(no_result, StatusCode::NOT_FOUND, "not_found").await;

    let created = create_job(&app, &tokens, &pdf_id, None).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let job: Value = created.json().await.expect("json");
    assert_eq!(job["status"], "queued");
    let done = wait_for_job(
        &app,
        &tokens,
        job["id"].as_str().expect("id"),
        Duration::from_secs(30),
        is_terminal,
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1);
    let result = &done["result"]["result"];
    assert_eq!(result["kind"], "pdf");
    assert_eq!(result["page_count"], 1);
    assert_eq!(result["pdf_version"], "1.4");
    assert_eq!(result["encrypted"], false);
    assert!(
        result["text"]
            .as_str()
            .expect("text")
            .contains("Hello DocFlow"),
        "{result}"
    );
    assert_eq!(result["pages"][0]["width_pt"], 612.0);
    assert_eq!(result["pages"][0]["height_pt"], 792.0);
    assert_eq!(result["pages_without_text"], json!([]));
    assert_eq!(result["counts"]["words"], 2);

    let latest: Value =
        get_json(&app, &tokens, &format!("/api/v1/documents/{pdf_id}/result")).await;
    assert_eq!(latest["job_id"], done["id"]);

    let text_id = upload_id(
        &app,
        &tokens,
        "The quick brown fox jumps over the lazy dog.\nIt was not amused at all.\n"
            .as_bytes()
            .to_vec(),
        "fox.txt",
        "text/plain",
    )
    .await;
    let done = run_job(&app, &tokens, &text_id, Duration::from_secs(30)).await;
    let result = &done["result"]["result"];
    assert_eq!(result["kind"], "text", "{done}");
    assert_eq!(result["encoding"], "UTF-8");
    assert_eq!(result["language"], "eng");
    assert_eq!(
        result["counts"],
        json!({"chars": 71, "words": 15, "lines": 2})
    );

    for (format, content_type) in [("png", "image/png"), ("jpeg", "image/jpeg")] {
        let id = upload_id(
            &app,
            &tokens,
            scan(format),
            &format!("scan.{format}"),
            content_type,
        )
        .await;
        let done = run_job(&app, &tokens, &id, Duration::from_secs(60)).await;
        let result = &done["result"]["result"];
        assert_eq!(result["kind"], "image", "{done}");
        assert_eq!(result["format"], format);
        assert_eq!(result["width"], 1275, "{result}");
        assert_eq!(result["height"], 1650);
        let text = result["text"].as_str().expect("OCR text").to_lowercase();
        // Tesseract reads Helvetica's "Fl" with a gap; the words are there.
        assert!(
            text.contains("hello") && text.replace(' ', "").contains("docflow"),
            "OCR read {text:?}"
        );
        assert!(
            result["ocr"]["mean_confidence"]
                .as_f64()
                .expect("confidence")
                > 50.0,
            "{result}"
        );
        assert_eq!(
            result["ocr"]["dpi"], 150,
            "the image's own DPI is passed to tesseract"
        );
    }
}

#[sqlx::test]
async fn idempotency_keys_make_one_job(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("bob@example.com").await;
    let doc_a = upload_id(&app, &tokens, b"a".to_vec(), "a.txt", "text/plain").await;
    let doc_b = upload_id(&app, &tokens, b"b".to_vec(), "b.txt", "text/plain").await;

    let first = create_job(&app, &tokens, &doc_a, Some("key-1")).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.expect("json");
    let replay = create_job(&app, &tokens, &doc_a, Some("key-1")).await;
    assert_eq!(replay.status(), StatusCode::OK);
    let replay: Value = replay.json().await.expect("json");
    assert_eq!(replay["id"], first["id"]);
    assert_error(
        create_job(&app, &tokens, &doc_b, Some("key-1")).await,
        StatusCode::CONFLICT,
        "idempotency_key_reused",
    )
    .await;

    // Keys are per user.
    let carol = app.signed_in("carol@example.com").await;
    let doc_c = upload_id(&app, &carol, b"c".to_vec(), "c.txt", "text/plain").await;
    assert_eq!(
        create_job(&app, &carol, &doc_c, Some("key-1"))
            .await
            .status(),
        StatusCode::CREATED
    );

    // 20 concurrent requests with one new key: exactly one job.
    let before = count(&app.db, "SELECT count(*) FROM jobs").await;
    let requests = (0..20).map(|_| create_job(&app, &tokens, &doc_b, Some("key-2")));
    let responses = futures_util::future::join_all(requests).await;
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for response in responses {
        match response.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::OK => {}
            other => panic!("unexpected {other}"),
        }
        let job: Value = response.json().await.expect("json");
        ids.insert(job["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    assert_eq!(
        count(&app.db, "SELECT count(*) FROM jobs").await,
        before + 1
    );

    let bad = app
        .client
        .post(app.url("/api/v1/jobs"))
        .bearer_auth(&tokens.access)
        .header("idempotency-key", "x".repeat(300))
        .json(&json!({ "document_id": doc_a }))
        .send()
        .await
        .expect("request");
    assert_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
}

#[sqlx::test]
async fn expired_keys_name_new_jobs(db: PgPool) {
    let app = TestApp::spawn_with(db, &[("IDEMPOTENCY_TTL_SECS", "1")]).await;
    let tokens = app.signed_in("dave@example.com").await;
    let doc = upload_id(&app, &tokens, b"a".to_vec(), "a.txt", "text/plain").await;
    let first: Value = create_job(&app, &tokens, &doc, Some("k"))
        .await
        .json()
        .await
        .expect("json");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = create_job(&app, &tokens, &doc, Some("k")).await;
    assert_eq!(second.status(), StatusCode::CREATED);
    let second: Value = second.json().await.expect("json");
    assert_ne!(second["id"], first["id"]);
}

#[sqlx::test]
async fn a_job_is_queued_by_one_statement_that_wakes_workers(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("erin@example.com").await;
    let doc = upload_id(&app, &tokens, b"a".to_vec(), "a.txt", "text/plain").await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.db)
        .await
        .expect("listener");
    listener.listen("docflow_jobs").await.expect("listen");

    // A refused job (someone else's document) leaves no row, no event.
    let mallory = app.signed_in("mallory@example.com").await;
    assert_error(
        create_job(&app, &mallory, &doc, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM jobs) + (SELECT count(*) FROM job_events)",
    )
    .fetch_one(&app.db)
    .await
    .expect("count");
    assert_eq!(rows, 0);

    // A created job is a queued, due row with its first event; committing
    // it announced it to idle workers.
    let job: Value = create_job(&app, &tokens, &doc, None)
        .await
        .json()
        .await
        .expect("json");
    let (status, due, seq): (String, bool, i32) =
        sqlx::query_as("SELECT status, run_at <= now(), event_seq FROM jobs WHERE id = $1::uuid")
            .bind(job["id"].as_str().expect("id"))
            .fetch_one(&app.db)
            .await
            .expect("row");
    assert_eq!((status.as_str(), due, seq), ("queued", true, 1));
    let history = job_events(&app.db, job["id"].as_str().expect("id")).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].0, "queued");
    let woken = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("a NOTIFY within 5 s")
        .expect("notification");
    assert_eq!(woken.channel(), "docflow_jobs");
    assert_eq!(
        woken.payload(),
        owner_of(&app, &doc).await,
        "it names the owner"
    );

    // Jobs written in a transaction that rolls back wake nobody.
    let owner: uuid::Uuid =
        sqlx::query_scalar("SELECT owner_id FROM documents WHERE id = $1::uuid")
            .bind(&doc)
            .fetch_one(&app.db)
            .await
            .expect("owner");
    let mut tx = app.db.begin().await.expect("tx");
    let new = docflow::db::jobs::NewJob {
        id: docflow::domain::JobId::generate(),
        owner_id: docflow::domain::UserId(owner),
        document_id: docflow::domain::DocumentId(doc.parse().expect("uuid")),
        priority: docflow::domain::Priority::default(),
        ocr: docflow::domain::OcrMode::Auto,
        ocr_languages: None,
        max_attempts: 3,
        idempotency_key: None,
        idempotency_expires_at: None,
        traceparent: None,
        request_id: None,
    };
    let written = docflow::db::jobs::insert_many(&mut *tx, &[new])
        .await
        .expect("insert");
    assert!(matches!(
        written[0],
        docflow::db::jobs::Inserted::Created(_)
    ));
    tx.rollback().await.expect("rollback");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), listener.recv())
            .await
            .is_err(),
        "a rolled-back change must not notify"
    );
}

#[sqlx::test]
async fn jobs_are_listed_filtered_and_private(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("frank@example.com").await;
    let doc = upload_id(&app, &tokens, b"a".to_vec(), "a.txt", "text/plain").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let job: Value = create_job(&app, &tokens, &doc, None)
            .await
            .json()
            .await
            .expect("json");
        ids.push(job["id"].as_str().expect("id").to_owned());
    }
    let page: Value = get_json(&app, &tokens, "/api/v1/jobs?limit=2").await;
    assert_eq!(page["total"], 3);
    assert_eq!(page["items"][0]["id"], ids[2].as_str());
    let queued: Value = get_json(&app, &tokens, "/api/v1/jobs?status=queued").await;
    assert_eq!(queued["total"], 3);
    let failed: Value = get_json(&app, &tokens, "/api/v1/jobs?status=failed").await;
    assert_eq!(failed["total"], 0);
    let bad = get(&app, &tokens, "/api/v1/jobs?status=exploded").await;
    assert_error(bad, StatusCode::BAD_REQUEST, "invalid_query").await;

    let mallory = app.signed_in("mallory@example.com").await;
    assert_error(
        get(&app, &mallory, &format!("/api/v1/jobs/{}", ids[0])).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let theirs: Value = get_json(&app, &mallory, "/api/v1/jobs").await;
    assert_eq!(theirs["total"], 0);
    assert_error(
        get(&app, &mallory, &format!("/api/v1/documents/{doc}/result")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[sqlx::test]
async fn hostile_and_broken_files_fail_permanently_at_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.start_worker();
    let tokens = app.signed_in("grace@example.com").await;

    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("plain.pdf");
    let locked = dir.path().join("locked.pdf");
    std::fs::write(&plain, pdf()).expect("write");
    let status = std::process::Command::new("qpdf")
        .args(["--encrypt", "user-secret", "owner-secret", "256", "--"])
        .arg(&plain)
        .arg(&locked)
        .status()
        .expect("qpdf is installed");
    assert!(status.success());
    let encrypted = std::fs::read(&locked).expect("encrypted pdf");

    let mut corrupt = b"%PDF-1.7\n".to_vec();
    corrupt.extend(std::iter::repeat_n(b'\xa7', 4096));

    // A PNG whose header claims 40000x40000 pixels: refused from the header.
    let bomb = png_header_only(40_000, 40_000);

    for (name, bytes, content_type, expected) in [
        ("locked.pdf", encrypted, "application/pdf", "encrypted"),
        (
            "corrupt.pdf",
            corrupt,
            "application/pdf",
            "not a readable PDF",
        ),
        ("bomb.png", bomb, "image/png", "MP limit"),
    ] {
        let id = upload_id(&app, &tokens, bytes, name, content_type).await;
        let done = run_job(&app, &tokens, &id, Duration::from_secs(30)).await;
        assert_eq!(done["status"], "failed", "{name}: {done}");
        assert_eq!(
            done["attempts"], 1,
            "{name}: permanent failures are not retried"
        );
        let error = done["last_error"].as_str().expect("error");
        assert!(error.contains(expected), "{name}: {error}");
        let reason: String =
            sqlx::query_scalar("SELECT reason FROM dead_letter_jobs WHERE job_id = $1::uuid")
                .bind(done["id"].as_str().expect("id"))
                .fetch_one(&app.db)
                .await
                .expect("dead letter");
        assert_eq!(reason, "permanent");
    }

    // A truncated PDF never takes anything down: it is recovered or refused.
    let whole = pdf();
    let truncated = whole[..whole.len() * 2 / 3].to_vec();
    let id = upload_id(&app, &tokens, truncated, "cut.pdf", "application/pdf").await;
    let done = run_job(&app, &tokens, &id, Duration::from_secs(30)).await;
    assert_eq!(done["attempts"], 1, "{done}");
    if done["status"] == "succeeded" {
        // Recovered: the page is there; its cut-off text is reported missing.
        let result = &done["result"]["result"];
        assert_eq!(result["page_count"], 1, "{done}");
        let has_text = result["text"].as_str().expect("text").contains("Hello");
        assert!(
            has_text || result["pages_without_text"] == json!([1]),
            "{done}"
        );
    }
}

/// A valid PNG signature and IHDR for `width`x`height`, then an empty IDAT
/// and IEND: enough for a header read, a bomb for a naive decoder.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&u32::try_from(data.len()).expect("len").to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.finalize().to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

#[sqlx::test]
async fn transient_failures_retry_with_growing_delays_then_fail(db: PgPool) {
    // Storage that stops answering: every attempt fails transiently, for a
    // reason that has nothing to do with timing.
    let s3 = S3Server::start();
    let mut config: Vec<(&str, String)> = s3.app_config();
    config.push(("JOB_MAX_ATTEMPTS", "3".to_owned()));
    let overrides: Vec<(&str, &str)> = config.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::spawn_with(db, &overrides).await;
    let tokens = app.signed_in("heidi@example.com").await;
    let id = upload_id(
        &app,
        &tokens,
        b"Unreachable.".to_vec(),
        "u.txt",
        "text/plain",
    )
    .await;
    drop(s3);
    app.start_worker();
    let job: Value = create_job(&app, &tokens, &id, None)
        .await
        .json()
        .await
        .expect("json");
    let job_id = job["id"].as_str().expect("id").to_owned();
    let done = wait_for_job(&app, &tokens, &job_id, Duration::from_secs(60), is_terminal).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["attempts"], 3);
    assert!(
        done["last_error"]
            .as_str()
            .expect("error")
            .starts_with("storage:"),
        "{done}"
    );

    let history = job_events(&app.db, &job_id).await;
    let kinds: Vec<&str> = history.iter().map(|(kind, ..)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "queued",
            "processing",
            "retry_scheduled",
            "processing",
            "retry_scheduled",
            "processing",
            "failed"
        ]
    );
    let attempts: Vec<i32> = history.iter().map(|(_, attempts, ..)| *attempts).collect();
    assert_eq!(attempts, [0, 1, 1, 2, 2, 3, 3]);
    // Backoff after attempt n is 2^n × [0.5, 1] s: at least 1 s after the
    // first failure and 2 s after the second.
    let gap = |from: usize, to: usize| (history[to].3 - history[from].3).num_milliseconds();
    assert!(gap(2, 3) >= 1_000, "first retry after {} ms", gap(2, 3));
    assert!(gap(4, 5) >= 2_000, "second retry after {} ms", gap(4, 5));
    let reason: String =
        sqlx::query_scalar("SELECT reason FROM dead_letter_jobs WHERE job_id = $1::uuid")
            .bind(&job_id)
            .fetch_one(&app.db)
            .await
            .expect("dead letter");
    assert_eq!(reason, "transient_exhausted");
}

#[sqlx::test]
async fn the_dead_letter_queue_is_for_admins(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let stop_worker = tokio_util::sync::CancellationToken::new();
    let worker = app.start_worker_until(stop_worker.clone());
    let user = app.signed_in("ivan@example.com").await;
    let admin = app.signed_in_admin("root@example.com").await;

    let mut corrupt = b"%PDF-1.7\n".to_vec();
    corrupt.extend(std::iter::repeat_n(b'\xa7', 1024));
    let id = upload_id(&app, &user, corrupt, "bad.pdf", "application/pdf").await;
    let job: Value = create_job(&app, &user, &id, None)
        .await
        .json()
        .await
        .expect("json");
    let job_id = job["id"].as_str().expect("id").to_owned();
    wait_for_job(&app, &user, &job_id, Duration::from_secs(30), is_terminal).await;

    for path in [
        "/api/v1/admin/failed-jobs",
        "/api/v1/admin/failed-jobs/depth",
    ] {
        assert_error(
            get(&app, &user, path).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
    }
    let requeue_url = app.url(&format!("/api/v1/admin/failed-jobs/{job_id}/requeue"));
    let forbidden = app
        .client
        .post(&requeue_url)
        .bearer_auth(&user.access)
        .send()
        .await
        .expect("request");
    assert_error(forbidden, StatusCode::FORBIDDEN, "forbidden").await;

    let depth: Value = get_json(&app, &admin, "/api/v1/admin/failed-jobs/depth").await;
    assert_eq!(depth["depth"], 1);
    let list: Value = get_json(&app, &admin, "/api/v1/admin/failed-jobs?reason=permanent").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["job_id"], job_id.as_str());
    assert_eq!(list["items"][0]["reason"], "permanent");
    let other: Value = get_json(&app, &admin, "/api/v1/admin/failed-jobs?reason=timeout").await;
    assert_eq!(other["total"], 0);
    let future: Value = get(
        &app,
        &admin,
        "/api/v1/admin/failed-jobs?since=2999-01-01T00:00:00Z",
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(future["total"], 0);

    // Two concurrent requeues: one wins, the other finds it no longer failed
    // (with no worker running, so the job cannot fail again in between).
    stop_worker.cancel();
    worker.await.expect("worker stopped");
    let requeued = "SELECT count(*) FROM job_events WHERE status = 'requeued'";
    let before = count(&app.db, requeued).await;
    let (a, b) = tokio::join!(
        app.client
            .post(&requeue_url)
            .bearer_auth(&admin.access)
            .send(),
        app.client
            .post(&requeue_url)
            .bearer_auth(&admin.access)
            .send(),
    );
    let mut statuses = vec![a.expect("request").status(), b.expect("request").status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    assert_eq!(count(&app.db, requeued).await, before + 1, "requeued once");

    // Still corrupt: it fails again and is back in the queue of the dead.
    app.start_worker();
    let done = wait_for_job(&app, &user, &job_id, Duration::from_secs(30), is_terminal).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["attempts"], 1, "requeue resets attempts");
    let kinds: Vec<String> = event_kinds(&app.db, &job_id).await;
    assert_eq!(
        kinds,
        [
            "queued",
            "processing",
            "failed",
            "requeued",
            "processing",
            "failed"
        ]
    );
    let depth: Value = get_json(&app, &admin, "/api/v1/admin/failed-jobs/depth").await;
    assert_eq!(depth["depth"], 1);

    let missing = app
        .client
        .post(app.url(&format!(
            "/api/v1/admin/failed-jobs/{}/requeue",
            uuid::Uuid::new_v4()
        )))
        .bearer_auth(&admin.access)
        .send()
        .await
        .expect("request");
    assert_error(missing, StatusCode::NOT_FOUND, "not_found").await;

    // A date RFC 3339 allows but Postgres cannot store, and one that is not
    // RFC 3339 at all: both the client's mistake.
    for (since, status, code) in [
        (
            "-5000-01-01T00:00:00Z",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
        ),
        (
            "%2B300000-01-01T00:00:00Z",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
    ] {
        let path = format!("/api/v1/admin/failed-jobs?since={since}");
        assert_error(get(&app, &admin, &path).await, status, code).await;
    }
}

#[sqlx::test]
async fn a_document_cannot_be_deleted_mid_job(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("judy@example.com").await;
    let doc = upload_id(&app, &tokens, jpeg(), "a.jpg", "image/jpeg").await;
    let job: Value = create_job(&app, &tokens, &doc, None)
        .await
        .json()
        .await
        .expect("json");
    // A worker claims it (and stays away: no worker runs here).
    let limits = docflow::db::jobs::queue::ClaimLimits {
        jobs: 1,
        per_owner_running: 8,
    };
    let claimed = docflow::db::jobs::queue::claim_next(&app.db, uuid::Uuid::now_v7(), limits)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    // And starts it.
    let start = docflow::db::jobs::queue::Started {
        job: claimed[0].id,
        run: claimed[0].run_id,
        at: chrono::Utc::now(),
    };
    docflow::db::jobs::queue::apply(&app.db, &[], &[start])
        .await
        .expect("start");
    let url = app.url(&format!("/api/v1/documents/{doc}"));
    let busy = app
        .client
        .delete(&url)
        .bearer_auth(&tokens.access)
        .send()
        .await
        .expect("request");
    assert_error(busy, StatusCode::CONFLICT, "document_busy").await;
    // Once the job is cancelled, the document can go.
    let cancelled = app
        .client
        .post(app.url(&format!(
            "/api/v1/jobs/{}/cancel",
            job["id"].as_str().expect("id")
        )))
        .bearer_auth(&tokens.access)
        .send()
        .await
        .expect("request");
    assert_eq!(cancelled.status(), StatusCode::OK);
    let deleted = app
        .client
        .delete(&url)
        .bearer_auth(&tokens.access)
        .send()
        .await
        .expect("request");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    // Its jobs (and their results, derived from its content) go with it.
    let job_url = format!("/api/v1/jobs/{}", job["id"].as_str().expect("id"));
    assert_error(
        get(&app, &tokens, &job_url).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[sqlx::test]
async fn a_panic_during_a_run_fails_the_job_and_the_worker_goes_on(db: PgPool) {
    use docflow::{
        db::jobs::queue::{ClaimLimits, claim_next},
        worker::{
            completer::{Completer, RunRef},
            run::{RunReport, guarded},
        },
    };

    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("panic@example.com").await;
    let doc = upload_id(&app, &tokens, b"Panic.".to_vec(), "p.txt", "text/plain").await;
    let job: Value = create_job(&app, &tokens, &doc, None)
        .await
        .json()
        .await
        .expect("json");
    let job_id = job["id"].as_str().expect("id").to_owned();

    // The worker's own parts: a real claim, the run guard around work that
    // really panics (as a bug in extraction code or a dependency would),
    // and the completer recording what came of it.
    let limits = ClaimLimits {
        jobs: 1,
        per_owner_running: 8,
    };
    let claimed = claim_next(&app.db, uuid::Uuid::now_v7(), limits)
        .await
        .expect("claim")
        .pop()
        .expect("the job is claimed");
    let outcome = guarded(claimed.id, async {
        let pages: Vec<u32> = Vec::new();
        // An out-of-bounds index: a genuine panic, not a returned error.
        let first = pages[std::hint::black_box(0)];
        unreachable!("{first}")
    })
    .await;
    let (completer, writer) = Completer::spawn(app.db.clone(), app.state.publisher.clone());
    completer
        .finish(
            RunRef::from(&claimed),
            RunReport {
                outcome,
                started_at: chrono::Utc::now(),
                elapsed: Duration::ZERO,
            },
        )
        .await;
    drop(completer);
    writer.await.expect("completer");

    let failed = get(&app, &tokens, &format!("/api/v1/jobs/{job_id}"))
        .await
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["last_error"].as_str().expect("last_error");
    assert!(
        error.contains("the worker panicked") && error.contains("index out of bounds"),
        "{error}"
    );
    let reason: String =
        sqlx::query_scalar("SELECT reason FROM dead_letter_jobs WHERE job_id = $1::uuid")
            .bind(&job_id)
            .fetch_one(&app.db)
            .await
            .expect("dead letter");
    assert_eq!(reason, "unhandled");
    let history = job_events(&app.db, &job_id).await;
    let kinds: Vec<&str> = history.iter().map(|(kind, ..)| kind.as_str()).collect();
    assert_eq!(kinds, ["queued", "processing", "failed"]);

    // And the next job runs normally on a worker.
    app.start_worker();
    let done = run_job(&app, &tokens, &doc, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
}

//! The queue core: runs guarded by their run id, leases and rescue,
//! cancellation, fair scheduling across users, priorities, lists that do
//! not slow with history, the one-time move off apalis-postgres's tables,
//! and SIGKILL chaos against real worker processes.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use docflow::{
    db::jobs::queue::{ClaimLimits, Move, Started, apply, claim_next},
    domain::{FailureReason, JobEventKind, JobId, JobStatus, RunId},
    live::Publisher,
    worker::lease::rescue_orphans,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{
    Deployment, Running, TestApp, Tokens, assert_error, create_job, event_kinds, free_port,
    get_json, is_terminal, noise_png, sign_in_at, start_job, start_text_job, upload_id,
    wait_for_job, wait_until_live,
};

const LIMITS: ClaimLimits = ClaimLimits {
    jobs: 10,
    per_owner_running: 100,
};

/// A decided end of run `run`, as the completer writes it.
fn ended(job: JobId, run: RunId, status: JobStatus, event: JobEventKind) -> Move {
    Move {
        job,
        run,
        status,
        event: Some(event),
        delay_secs: 0.0,
        attempt_delta: 0,
        error: (status == JobStatus::Failed).then(|| "corrupt".to_owned()),
        dead_letter: (status == JobStatus::Failed).then_some(FailureReason::Permanent),
        result: (status == JobStatus::Succeeded).then(|| {
            r#"{"kind":"text","text":"x","encoding":"UTF-8","counts":{"chars":1,"words":1,"lines":1}}"#.to_owned()
        }),
        started_at: Some(chrono::Utc::now()),
        start_recorded: false,
    }
}

async fn text_document(app: &TestApp, tokens: &Tokens) -> String {
    upload_id(app, tokens, b"Queue me.".to_vec(), "q.txt", "text/plain").await
}

#[sqlx::test]
async fn a_stale_run_records_nothing(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let tokens = app.signed_in("stale@example.com").await;
    let document = text_document(&app, &tokens).await;
    let job_id = start_job(&app, &tokens, &document).await;

    // Run 1 fails; an admin requeues the job; run 1 then reports success
    // (a slow worker, late): it must record nothing.
    let first = claim_next(&db, uuid::Uuid::now_v7(), LIMITS)
        .await
        .expect("claim")
        .pop()
        .expect("claimed");
    let events = apply(
        &db,
        &[ended(
            first.id,
            first.run_id,
            JobStatus::Failed,
            JobEventKind::Failed,
        )],
        &[],
    )
    .await
    .expect("apply");
    let kinds: Vec<JobEventKind> = events.iter().map(|e| e.status).collect();
    assert_eq!(kinds, [JobEventKind::Processing, JobEventKind::Failed]);
    app.state.jobs.requeue(first.id).await.expect("requeue");
    let late = apply(
        &db,
        &[ended(
            first.id,
            first.run_id,
            JobStatus::Succeeded,
            JobEventKind::Succeeded,
        )],
        &[],
    )
    .await
    .expect("apply");
    assert!(late.is_empty(), "a stale run wrote {late:?}");
    let job = get_json(&app, &tokens, &format!("/api/v1/jobs/{job_id}")).await;
    assert_eq!(job["status"], "queued", "{job}");
    assert_eq!(job["attempts"], 0);
    let results: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE result IS NOT NULL")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(results, 0);

    // The new run (2) is the one that counts.
    let second = claim_next(&db, uuid::Uuid::now_v7(), LIMITS)
        .await
        .expect("claim")
        .pop()
        .expect("claimed");
    assert_ne!(second.run_id, first.run_id);
    let written = apply(
        &db,
        &[ended(
            second.id,
            second.run_id,
            JobStatus::Succeeded,
            JobEventKind::Succeeded,
        )],
        &[],
    )
    .await
    .expect("apply");
    assert_eq!(written.len(), 2, "processing and succeeded");
    let kinds: Vec<String> = event_kinds(&db, &job_id).await;
    assert_eq!(
        kinds,
        [
            "queued",
            "processing",
            "failed",
            "requeued",
            "processing",
            "succeeded"
        ]
    );
}

/// A run whose start was not written before its end records both on one
/// event row and its result on the job's row; readers see every event,
/// numbered as before, and resume after any of them.
#[sqlx::test]
async fn a_short_run_is_recorded_by_one_event_row(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let tokens = app.signed_in("short@example.com").await;
    let document = text_document(&app, &tokens).await;
    let job_id = start_job(&app, &tokens, &document).await;
    let run = claim_next(&db, uuid::Uuid::now_v7(), LIMITS)
        .await
        .expect("claim")
        .pop()
        .expect("claimed");
    let mut end = ended(
        run.id,
        run.run_id,
        JobStatus::Succeeded,
        JobEventKind::Succeeded,
    );
    let began = chrono::Utc::now() - chrono::Duration::milliseconds(50);
    end.started_at = Some(began);
    let written = apply(&db, &[end], &[]).await.expect("apply");
    let numbered: Vec<(i32, JobEventKind)> = written.iter().map(|e| (e.seq, e.status)).collect();
    assert_eq!(
        numbered,
        [(2, JobEventKind::Processing), (3, JobEventKind::Succeeded)]
    );
    assert_eq!(
        written[0].created_at.timestamp_micros(),
        began.timestamp_micros(),
        "the start keeps its own time"
    );

    let stored: Vec<(i32, String, bool)> = sqlx::query_as(
        "SELECT seq, status, processing_at IS NOT NULL FROM job_events
         WHERE job_id = $1::uuid ORDER BY seq",
    )
    .bind(&job_id)
    .fetch_all(&db)
    .await
    .expect("rows");
    assert_eq!(
        stored,
        [
            (1, "queued".to_owned(), false),
            (3, "succeeded".to_owned(), true)
        ]
    );
    let id = JobId(job_id.parse().expect("id"));
    for (after, expected) in [
        (0, vec![1, 2, 3]),
        (1, vec![2, 3]),
        (2, vec![3]),
        (3, vec![]),
    ] {
        let seqs: Vec<i32> = docflow::db::job_events::list_after(&db, id, after)
            .await
            .expect("events")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, expected, "after {after}");
    }
    let latest = docflow::db::job_events::latest(&db, id)
        .await
        .expect("latest")
        .expect("an event");
    assert_eq!((latest.seq, latest.status), (3, JobEventKind::Succeeded));
    // What the live streams' poller reads for every watched job.
    let polled: Vec<(i32, JobEventKind)> = docflow::db::job_events::latest_of(&db, &[id])
        .await
        .expect("latest of")
        .iter()
        .map(|e| (e.seq, e.status))
        .collect();
    assert_eq!(polled, [(3, JobEventKind::Succeeded)]);

    let job = get_json(&app, &tokens, &format!("/api/v1/jobs/{job_id}")).await;
    assert_eq!(job["result"]["result"]["text"], "x", "{job}");
    assert_eq!(job["result"]["job_id"], job_id.as_str());
    let latest = get_json(
        &app,
        &tokens,
        &format!("/api/v1/documents/{document}/result"),
    )
    .await;
    assert_eq!(latest["job_id"], job_id.as_str(), "{latest}");
}

#[sqlx::test]
async fn a_dead_workers_runs_are_rescued_and_only_started_ones_count(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let tokens = app.signed_in("rescue@example.com").await;
    let document = text_document(&app, &tokens).await;
    let started_job = start_job(&app, &tokens, &document).await;
    let claimed_job = start_job(&app, &tokens, &document).await;

    // A worker claims both and starts one, then is gone: its lease is not
    // renewed past the TTL.
    let gone = uuid::Uuid::now_v7();
    docflow::db::queue_workers::register(&db, gone, "gone", 1)
        .await
        .expect("lease");
    let runs = claim_next(&db, gone, LIMITS).await.expect("claim");
    assert_eq!(runs.len(), 2);
    let started = runs
        .iter()
        .find(|r| r.id.0.to_string() == started_job)
        .expect("run");
    apply(
        &db,
        &[],
        &[Started {
            job: started.id,
            run: started.run_id,
            at: chrono::Utc::now(),
        }],
    )
    .await
    .expect("start mark");

    sqlx::query(
        "UPDATE queue_workers SET heartbeat_at = now() - interval '7 seconds' WHERE id = $1",
    )
    .bind(gone)
    .execute(&db)
    .await
    .expect("time passes");
    rescue_orphans(&db, 6.0, &Publisher::Off)
        .await
        .expect("rescue");
    let forgotten: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_workers WHERE id = $1")
        .bind(gone)
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(forgotten, 0, "the dead worker's lease is gone");

    // The started run keeps its attempt and waits out its backoff; the one
    // only claimed is back at once, its attempt given back.
    let job = get_json(&app, &tokens, &format!("/api/v1/jobs/{started_job}")).await;
    assert_eq!(
        (job["status"].as_str(), job["attempts"].as_i64()),
        (Some("queued"), Some(1))
    );
    assert_eq!(job["last_error"], "the worker running it stopped");
    let job = get_json(&app, &tokens, &format!("/api/v1/jobs/{claimed_job}")).await;
    assert_eq!(
        (job["status"].as_str(), job["attempts"].as_i64()),
        (Some("queued"), Some(0))
    );
    assert_eq!(
        event_kinds(&db, &started_job).await,
        ["queued", "processing", "retry_scheduled"]
    );
    // It never left `queued` as far as anyone saw.
    assert_eq!(event_kinds(&db, &claimed_job).await, ["queued"]);
    // A live worker's runs are left alone: a rescue now changes nothing.
    app.start_worker();
    let done = wait_for_job(
        &app,
        &tokens,
        &claimed_job,
        Duration::from_secs(20),
        is_terminal,
    )
    .await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["attempts"], 1, "the returned attempt was not lost");
}

#[sqlx::test]
async fn cancelling_a_queued_job_is_final(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("cancel@example.com").await;
    let document = text_document(&app, &tokens).await;
    let job_id = start_job(&app, &tokens, &document).await;
    let url = app.url(&format!("/api/v1/jobs/{job_id}/cancel"));
    let cancelled = app
        .client
        .post(&url)
        .bearer_auth(&tokens.access)
        .send()
        .await
        .expect("request");
    assert_eq!(cancelled.status(), StatusCode::OK);
    let body: Value = cancelled.json().await.expect("json");
    assert_eq!(body["status"], "cancelled");
    assert!(body["completed_at"].is_string());

    // Final: a worker does not run it, a second cancel is 409, another
    // user's cancel is 404.
    app.start_worker();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let job = get_json(&app, &tokens, &format!("/api/v1/jobs/{job_id}")).await;
    assert_eq!(job["status"], "cancelled");
    assert_eq!(job["attempts"], 0);
    let again = app
        .client
        .post(&url)
        .bearer_auth(&tokens.access)
        .send()
        .await
        .expect("request");
    assert_error(again, StatusCode::CONFLICT, "job_finished").await;
    let mallory = app.signed_in("mallory@example.com").await;
    let theirs = app
        .client
        .post(&url)
        .bearer_auth(&mallory.access)
        .send()
        .await
        .expect("request");
    assert_error(theirs, StatusCode::NOT_FOUND, "not_found").await;
    let kinds: Vec<String> = event_kinds(&app.db, &job_id).await;
    assert_eq!(kinds, ["queued", "cancelled"]);
}

#[sqlx::test]
async fn cancelling_a_running_job_stops_its_extractor(db: PgPool) {
    let app = TestApp::spawn_with(
        db,
        &[("EXTRACTOR_PROCESSES", "1"), ("OCR_TIMEOUT_SECS", "120")],
    )
    .await;
    app.start_worker();
    let tokens = app.signed_in("stop@example.com").await;
    // tesseract spends many seconds on a large noise image.
    let slow = upload_id(
        &app,
        &tokens,
        noise_png(3000, 0xdead_beef),
        "noise.png",
        "image/png",
    )
    .await;
    let job_id = start_job(&app, &tokens, &slow).await;
    wait_for_job(&app, &tokens, &job_id, Duration::from_secs(20), |job| {
        job["status"] == "processing"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let cancelled_at = Instant::now();
    let response = app
        .client
        .post(app.url(&format!("/api/v1/jobs/{job_id}/cancel")))
        .bearer_auth(&tokens.access)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.expect("json")["status"],
        "cancelled"
    );

    // The one extractor was busy with the OCR. A small job behind it can
    // only run this soon if the cancel killed that extraction.
    let text = text_document(&app, &tokens).await;
    let next = start_job(&app, &tokens, &text).await;
    let done = wait_for_job(&app, &tokens, &next, Duration::from_secs(30), is_terminal).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(3),
        "the next job waited {:?}: the cancelled extraction kept running",
        cancelled_at.elapsed()
    );
    // And the cancelled run never records anything.
    let job = get_json(&app, &tokens, &format!("/api/v1/jobs/{job_id}")).await;
    assert_eq!(job["status"], "cancelled");
    assert!(job.get("result").is_none());
    let last: Vec<String> = event_kinds(&app.db, &job_id).await;
    assert_eq!(last, ["queued", "processing", "cancelled"]);

    // An admin can run it again.
    app.make_admin("stop@example.com").await;
    let requeued = app
        .client
        .post(app.url(&format!("/api/v1/admin/failed-jobs/{job_id}/requeue")))
        .bearer_auth(&tokens.access)
        .send()
        .await
        .expect("request");
    assert_eq!(requeued.status(), StatusCode::OK);
    assert_eq!(
        requeued.json::<Value>().await.expect("json")["status"],
        "queued"
    );
}

/// Inserts `n` queued jobs for the owner's document straight into the
/// table (with their first events): a backlog without n HTTP requests.
async fn backlog(db: &PgPool, document: &str, n: i32) {
    sqlx::query(
        r#"WITH new AS (
               INSERT INTO jobs (id, owner_id, document_id, status, max_attempts, event_seq, created_at)
               SELECT gen_random_uuid(), d.owner_id, d.id, 'queued', 3, 1,
                      now() - make_interval(secs => $2 - g)
               FROM documents d, generate_series(1, $2) AS g
               WHERE d.id = $1::uuid
               RETURNING id, created_at
           )
           INSERT INTO job_events (job_id, seq, status, attempts, created_at)
           SELECT id, 1, 'queued', 0, created_at FROM new"#,
    )
    .bind(document)
    .bind(n)
    .execute(db)
    .await
    .expect("backlog");
}

#[sqlx::test]
async fn one_users_backlog_does_not_delay_anothers_job(db: PgPool) {
    let app = TestApp::spawn_with(
        db.clone(),
        &[
            ("WORKER_CONCURRENCY", "2"),
            ("WORKER_PREFETCH", "0"),
            ("EXTRACTOR_PROCESSES", "1"),
            ("MAX_RUNNING_PER_USER", "1"),
        ],
    )
    .await;
    let alice = app.signed_in("alice@example.com").await;
    let bob = app.signed_in("bob@example.com").await;
    let alices = text_document(&app, &alice).await;
    backlog(&db, &alices, 10_000).await;
    app.start_worker();
    // Alice's backlog is being worked through, one at a time (her cap).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let bobs = text_document(&app, &bob).await;
    let started = Instant::now();
    let job = start_job(&app, &bob, &bobs).await;
    let done = wait_for_job(&app, &bob, &job, Duration::from_secs(10), is_terminal).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(2), "Bob's job took {waited:?}");

    // Meanwhile Alice never had more than one job running, and her backlog
    // is far from done: Bob did not just wait for it to drain.
    let (running, queued): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'processing'), count(*) FILTER (WHERE status = 'queued')
         FROM jobs WHERE document_id = $1::uuid",
    )
    .bind(&alices)
    .fetch_one(&db)
    .await
    .expect("counts");
    assert!(running <= 1, "{running} of Alice's jobs run at once");
    assert!(queued > 5_000, "only {queued} of Alice's jobs still queued");
}

#[sqlx::test]
async fn higher_priority_runs_first(db: PgPool) {
    let app = TestApp::spawn_with(
        db.clone(),
        &[("WORKER_CONCURRENCY", "1"), ("WORKER_PREFETCH", "0")],
    )
    .await;
    let tokens = app.signed_in("prio@example.com").await;
    let document = text_document(&app, &tokens).await;
    let mut ids = HashMap::new();
    for (name, priority) in [("low", -5), ("normal", 0), ("high", 7), ("urgent", 10)] {
        let created = app
            .client
            .post(app.url("/api/v1/jobs"))
            .bearer_auth(&tokens.access)
            .json(&json!({"document_id": document, "priority": priority}))
            .send()
            .await
            .expect("request");
        assert_eq!(created.status(), StatusCode::CREATED);
        let job: Value = created.json().await.expect("json");
        assert_eq!(job["priority"], priority);
        ids.insert(job["id"].as_str().expect("id").to_owned(), name);
    }
    for out_of_range in [11, -11, 1_000_000] {
        let refused = app
            .client
            .post(app.url("/api/v1/jobs"))
            .bearer_auth(&tokens.access)
            .json(&json!({"document_id": document, "priority": out_of_range}))
            .send()
            .await
            .expect("request");
        assert_error(
            refused,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
        )
        .await;
    }
    app.start_worker();
    for id in ids.keys() {
        wait_for_job(&app, &tokens, id, Duration::from_secs(20), is_terminal).await;
    }
    let order: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM jobs WHERE document_id = $1::uuid ORDER BY claimed_at",
    )
    .bind(&document)
    .fetch_all(&db)
    .await
    .expect("order");
    let names: Vec<&str> = order.iter().map(|id| ids[id]).collect();
    assert_eq!(names, ["urgent", "high", "normal", "low"]);
}

#[sqlx::test]
async fn lists_page_by_cursor_and_count_cheaply(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let tokens = app.signed_in("history@example.com").await;
    let document = text_document(&app, &tokens).await;
    backlog(&db, &document, 1_050).await;

    // The count stops at 1,000 and says so.
    let first = get_json(&app, &tokens, "/api/v1/jobs?limit=100").await;
    assert_eq!(first["total"], 1_000);
    assert_eq!(first["total_exact"], false);
    // Walking by cursor visits every job once, newest first.
    let mut seen = std::collections::HashSet::new();
    let mut last_created: Option<String> = None;
    let mut page = first;
    loop {
        for job in page["items"].as_array().expect("items") {
            assert!(seen.insert(job["id"].as_str().expect("id").to_owned()));
            let created = job["created_at"].as_str().expect("created").to_owned();
            if let Some(previous) = &last_created {
                assert!(created <= *previous, "not newest first");
            }
            last_created = Some(created);
        }
        let Some(cursor) = page["next_cursor"].as_str() else {
            break;
        };
        page = get_json(
            &app,
            &tokens,
            &format!("/api/v1/jobs?limit=100&cursor={cursor}"),
        )
        .await;
    }
    assert_eq!(seen.len(), 1_050);
    // Offsets still work for old clients, within bounds.
    let old = get_json(&app, &tokens, "/api/v1/jobs?limit=10&offset=1040").await;
    assert_eq!(old["items"].as_array().expect("items").len(), 10);
    assert_error(
        crate::helpers::get(&app, &tokens, "/api/v1/jobs?offset=10001").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_error",
    )
    .await;
    assert_error(
        crate::helpers::get(&app, &tokens, "/api/v1/jobs?cursor=nonsense").await,
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
    )
    .await;
    let small = get_json(&app, &tokens, "/api/v1/documents").await;
    assert_eq!(
        (small["total"].as_i64(), small["total_exact"].as_bool()),
        (Some(1), Some(true))
    );
}

/// The plan Postgres picks for `sql`, as text.
async fn plan(db: &PgPool, sql: &str) -> String {
    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
        .fetch_all(db)
        .await
        .expect("explain");
    rows.join("\n")
}

#[sqlx::test]
async fn every_list_and_the_claim_use_an_index_on_a_large_table(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let tokens = app.signed_in("big@example.com").await;
    let document = text_document(&app, &tokens).await;
    let other = app.signed_in("other@example.com").await;
    let others = text_document(&app, &other).await;
    // 200,000 finished jobs of one user, a few queued of another.
    backlog(&db, &document, 200_000).await;
    sqlx::query(
        "UPDATE jobs SET status = 'succeeded', completed_at = now() WHERE document_id = $1::uuid",
    )
    .bind(&document)
    .execute(&db)
    .await
    .expect("finish");
    backlog(&db, &others, 10).await;
    sqlx::query(
        "INSERT INTO documents (id, owner_id, filename, content_type, size_bytes, sha256, storage_key)
         SELECT gen_random_uuid(), owner_id, 'f.txt', 'text/plain', 1, repeat('0', 64), 'documents/bulk/' || g
         FROM documents, generate_series(1, 50000) AS g WHERE id = $1::uuid",
    )
    .bind(&document)
    .execute(&db)
    .await
    .expect("documents");
    // As autovacuum leaves it: dead index entries of the bulk update gone.
    sqlx::query("VACUUM ANALYZE")
        .execute(&db)
        .await
        .expect("vacuum");
    let owner: String =
        sqlx::query_scalar("SELECT owner_id::text FROM documents WHERE id = $1::uuid")
            .bind(&document)
            .fetch_one(&db)
            .await
            .expect("owner");

    let lists = [
        format!("SELECT * FROM jobs WHERE owner_id = '{owner}' ORDER BY created_at DESC, id DESC LIMIT 20"),
        format!("SELECT * FROM jobs WHERE owner_id = '{owner}' AND (created_at, id) < (now(), gen_random_uuid()) ORDER BY created_at DESC, id DESC LIMIT 20"),
        format!("SELECT * FROM jobs WHERE owner_id = '{owner}' AND status = 'failed' ORDER BY created_at DESC, id DESC LIMIT 20"),
        format!("SELECT * FROM jobs WHERE owner_id = '{owner}' AND status = 'queued' ORDER BY created_at DESC, id DESC LIMIT 20"),
        format!("SELECT * FROM jobs WHERE owner_id = '{owner}' AND status = 'processing' ORDER BY created_at DESC, id DESC LIMIT 20"),
        format!("SELECT * FROM jobs WHERE owner_id = '{owner}' AND status = 'succeeded' ORDER BY created_at DESC, id DESC LIMIT 20"),
        format!("SELECT * FROM jobs WHERE owner_id = '{owner}' AND document_id = '{document}' ORDER BY created_at DESC, id DESC LIMIT 20"),
        format!("SELECT * FROM documents WHERE owner_id = '{owner}' ORDER BY created_at DESC, id DESC LIMIT 20"),
        "SELECT * FROM jobs WHERE status = 'queued' AND owner_id >= gen_random_uuid() ORDER BY owner_id LIMIT 1".to_owned(),
        "SELECT count(*) FROM jobs WHERE status = 'queued'".to_owned(),
        "SELECT count(*) FROM jobs WHERE status = 'processing'".to_owned(),
        "SELECT * FROM jobs WHERE status = 'processing' LIMIT 500".to_owned(),
    ];
    for sql in &lists {
        let plan = plan(&db, sql).await;
        assert!(!plan.contains("Seq Scan"), "{sql}\n{plan}");
        assert!(plan.contains("Index"), "{sql}\n{plan}");
    }
    // The capped count reads at most 1,001 rows whichever way it goes (a
    // scan of a table that is nearly all this owner's stops as early).
    let count = format!(
        "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE owner_id = '{owner}' LIMIT 1001) c"
    );
    let plan = plan(&db, &count).await;
    assert!(plan.contains("Limit"), "{plan}");

    // And the claim itself, through the API's own statement, stays quick.
    let started = Instant::now();
    let claimed = claim_next(&db, uuid::Uuid::now_v7(), LIMITS)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 10);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "claim took {:?}",
        started.elapsed()
    );
}

#[sqlx::test]
async fn apalis_queue_entries_become_due_times_once(db: PgPool) {
    // An install from before the queue core: jobs, an apalis-postgres
    // table holding a retry scheduled an hour out, and a job mid-run.
    let app = TestApp::spawn(db.clone()).await;
    let tokens = app.signed_in("legacy@example.com").await;
    let document = text_document(&app, &tokens).await;
    let retry = start_job(&app, &tokens, &document).await;
    let fixture = include_str!("fixtures/apalis_jobs_1_0.sql").replace("{JOB_ID}", &retry);
    sqlx::raw_sql(sqlx::AssertSqlSafe(fixture))
        .execute(&db)
        .await
        .expect("fixture");
    // The migration's own data step, run as it runs on such an install.
    let migration = include_str!("../../migrations/20261203000001_queue_in_jobs.sql");
    let data_step = &migration[migration.find("DO $$").expect("data step")..];
    sqlx::raw_sql(sqlx::AssertSqlSafe(data_step.to_owned()))
        .execute(&db)
        .await
        .expect("migrate");

    let (due_in, status): (f64, String) = sqlx::query_as(
        "SELECT extract(epoch FROM run_at - now())::float8, status FROM jobs WHERE id = $1::uuid",
    )
    .bind(&retry)
    .fetch_one(&db)
    .await
    .expect("job");
    assert_eq!(status, "queued");
    assert!((3_500.0..3_700.0).contains(&due_in), "due in {due_in} s");
    let schema: Option<String> = sqlx::query_scalar("SELECT to_regclass('apalis.jobs')::text")
        .fetch_one(&db)
        .await
        .expect("regclass");
    assert_eq!(schema, None, "apalis's tables are gone");
}

/// 1 API and 3 workers as real processes; 1,000 text jobs arrive over
/// about ten seconds while a worker is killed with SIGKILL every two
/// seconds and restarted. Nothing is lost, nothing runs twice to a second
/// result, and no job is dead-lettered for crashes that were not its own.
#[sqlx::test]
async fn sigkill_chaos_loses_nothing(db: PgPool) {
    const JOBS: usize = 1_000;
    let deployment = Deployment::new(&db).await;
    let api_port = free_port();
    let _api = deployment.start("api", api_port);
    let base = format!("http://127.0.0.1:{api_port}");
    let start_worker = |port: u16| -> Running {
        let child = deployment
            .command("worker", port)
            .env("WORKER_CONCURRENCY", "4")
            .env("EXTRACTOR_PROCESSES", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn worker");
        Running(child)
    };
    let ports = [free_port(), free_port(), free_port()];
    let mut workers: Vec<Running> = ports.iter().map(|port| start_worker(*port)).collect();

    let client = crate::helpers::client();
    let tokens = sign_in_at(&client, &base, "chaos@example.com", None).await;
    let first = start_text_job(&client, &base, &tokens, "Chaos document.").await;
    let document: String =
        sqlx::query_scalar("SELECT document_id::text FROM jobs WHERE id = $1::uuid")
            .bind(&first)
            .fetch_one(&db)
            .await
            .expect("document");
    let creator = {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move {
            let mut ids = vec![first];
            while ids.len() < JOBS {
                let created = client
                    .post(format!("{base}/api/v1/jobs"))
                    .bearer_auth(&tokens.access)
                    .json(&json!({ "document_id": document }))
                    .send()
                    .await
                    .expect("request");
                assert_eq!(created.status(), StatusCode::CREATED);
                let job: Value = created.json().await.expect("json");
                ids.push(job["id"].as_str().expect("id").to_owned());
                if ids.len() % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(80)).await;
                }
            }
            ids
        })
    };
    let mut kills = 0;
    while !creator.is_finished() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let victim = kills % workers.len();
        // Running's drop is SIGKILL and reap.
        drop(std::mem::replace(
            &mut workers[victim],
            start_worker(ports[victim]),
        ));
        kills += 1;
    }
    let ids = creator.await.expect("creator");
    assert!(kills >= 3, "only {kills} kills during creation");

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE status NOT IN ('succeeded', 'failed', 'cancelled')",
        )
        .fetch_one(&db)
        .await
        .expect("count");
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} jobs still open");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (succeeded, results, dead): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs WHERE status = 'succeeded'),
                (SELECT count(*) FROM jobs WHERE result IS NOT NULL),
                (SELECT count(*) FROM dead_letter_jobs)",
    )
    .fetch_one(&db)
    .await
    .expect("counts");
    assert_eq!(ids.len(), JOBS);
    assert_eq!(succeeded, JOBS as i64, "every job succeeded");
    assert_eq!(results, JOBS as i64, "exactly one result per job");
    assert_eq!(dead, 0, "no job dead-lettered for a worker's crash");
    // Every job's history is whole: one `succeeded`, last.
    let broken: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs j WHERE (SELECT status FROM job_events e WHERE e.job_id = j.id ORDER BY seq DESC LIMIT 1) <> 'succeeded'
            OR (SELECT count(*) FROM job_events e WHERE e.job_id = j.id AND e.status = 'succeeded') <> 1",
    )
    .fetch_one(&db)
    .await
    .expect("histories");
    assert_eq!(broken, 0);
    // Killed workers' scratch directories were cleared by their successors:
    // one directory per live worker, once each is up (a worker makes its
    // directory before it answers).
    for port in ports {
        tokio::task::spawn_blocking(move || wait_until_live(port))
            .await
            .expect("wait");
    }
    let dirs = std::fs::read_dir(deployment.scratch_root())
        .expect("scratch root")
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .count();
    assert_eq!(dirs, workers.len(), "scratch directories left behind");
}

#[sqlx::test]
async fn a_document_that_kills_its_extractor_fails_after_its_attempts(db: PgPool) {
    // 64 MiB of address space for an extractor; this PDF's 16 MiB of text
    // takes more to hold than that, and the process dies of it every time.
    let app = TestApp::spawn_with(
        db,
        &[
            ("EXTRACTOR_MEMORY_BYTES", "67108864"),
            ("JOB_MAX_ATTEMPTS", "2"),
        ],
    )
    .await;
    app.start_worker();
    let tokens = app.signed_in("poison@example.com").await;
    let poison = upload_id(
        &app,
        &tokens,
        crate::helpers::text_flood_pdf(),
        "p.pdf",
        "application/pdf",
    )
    .await;
    let job = start_job(&app, &tokens, &poison).await;
    let done = wait_for_job(&app, &tokens, &job, Duration::from_secs(90), is_terminal).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    let error = done["last_error"].as_str().expect("error");
    assert!(error.contains("the extractor crashed"), "{error}");
    let reason: String =
        sqlx::query_scalar("SELECT reason FROM dead_letter_jobs WHERE job_id = $1::uuid")
            .bind(&job)
            .fetch_one(&app.db)
            .await
            .expect("dead letter");
    assert_eq!(reason, "unhandled");
    // The worker is fine: the next document goes through.
    let text = text_document(&app, &tokens).await;
    let next = start_job(&app, &tokens, &text).await;
    let done = wait_for_job(&app, &tokens, &next, Duration::from_secs(30), is_terminal).await;
    assert_eq!(done["status"], "succeeded");
}

#[sqlx::test]
async fn a_draining_worker_hands_back_what_it_never_started(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let tokens = app.signed_in("drain@example.com").await;
    let document = text_document(&app, &tokens).await;
    let job_id = start_job(&app, &tokens, &document).await;
    let _ = create_job(&app, &tokens, &document, None).await;
    // Claimed by a worker that then hands them back on shutdown.
    let runs = claim_next(&db, uuid::Uuid::now_v7(), LIMITS)
        .await
        .expect("claim");
    assert_eq!(runs.len(), 2);
    let (completer, writer) =
        docflow::worker::completer::Completer::spawn(db.clone(), Publisher::Off);
    for run in &runs {
        completer
            .release(docflow::worker::completer::RunRef::from(run))
            .await;
    }
    drop(completer);
    writer.await.expect("completer");
    let job = get_json(&app, &tokens, &format!("/api/v1/jobs/{job_id}")).await;
    assert_eq!(
        (job["status"].as_str(), job["attempts"].as_i64()),
        (Some("queued"), Some(0))
    );
}

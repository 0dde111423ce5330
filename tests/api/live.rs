//! Live job status over SSE: event order and content, resume with
//! Last-Event-ID, the subscribe-then-read race, stream tokens, Redis going
//! away mid-stream, and two API replicas with a separate worker process.
//! Real Postgres, real Redis, real worker and extraction.

use std::time::{Duration, Instant};

use crate::helpers::{
    Deployment, Running, SseEvent, SseReader, TestApp, Tokens, free_port, sign_in_at,
    start_text_job, upload, wait_until_live,
};
use docflow::{
    db,
    domain::{JobEventKind, JobId},
    live::{
        Hub, StatusEvent,
        stream::{self, Start, StreamLimits},
    },
};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WITHIN: Duration = Duration::from_secs(30);

async fn upload_text(app: &TestApp, tokens: &Tokens, text: &str) -> String {
    let response = upload(
        app,
        tokens,
        text.as_bytes().to_vec(),
        "note.txt",
        "text/plain",
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let document: Value = response.json().await.expect("json");
    document["id"].as_str().expect("id").to_owned()
}

fn corrupt_pdf() -> Vec<u8> {
    let mut corrupt = b"%PDF-1.7\n".to_vec();
    corrupt.extend(std::iter::repeat_n(b'\xa7', 4096));
    corrupt
}

async fn create_job(base: &str, tokens: &Tokens, document_id: &str) -> String {
    let response = crate::helpers::client()
        .post(format!("{base}/api/v1/jobs"))
        .bearer_auth(&tokens.access)
        .json(&json!({ "document_id": document_id }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
    let job: Value = response.json().await.expect("json");
    job["id"].as_str().expect("id").to_owned()
}

/// Opens a job's stream with the bearer token and optional Last-Event-ID.
async fn open_stream(
    base: &str,
    tokens: &Tokens,
    job_id: &str,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let mut request = crate::helpers::client()
        .get(format!("{base}/api/v1/jobs/{job_id}/events"))
        .bearer_auth(&tokens.access);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    request.send().await.expect("request")
}

/// (seq, status, attempts) of each event, checking the frame is consistent.
fn summary(events: &[SseEvent], job_id: &str) -> Vec<(i64, String, i64)> {
    events
        .iter()
        .map(|event| {
            assert_eq!(event.event, "status");
            assert_eq!(event.data["job_id"], job_id);
            let seq = event.data["seq"].as_i64().expect("seq");
            assert_eq!(event.id.as_deref(), Some(seq.to_string().as_str()));
            assert!(event.data["updated_at"].is_string());
            (
                seq,
                event.data["status"].as_str().expect("status").to_owned(),
                event.data["attempts"].as_i64().expect("attempts"),
            )
        })
        .collect()
}

async fn stream_token(base: &str, tokens: &Tokens, job_id: &str) -> reqwest::Response {
    crate::helpers::client()
        .post(format!("{base}/api/v1/jobs/{job_id}/stream-token"))
        .bearer_auth(&tokens.access)
        .send()
        .await
        .expect("request")
}

#[sqlx::test]
async fn a_succeeding_job_streams_each_status_in_order_then_ends(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("watcher@example.com").await;
    let document = upload_text(&app, &tokens, "Live status, end to end.").await;
    let job = create_job(&app.base, &tokens, &document).await;

    let response = open_stream(&app.base, &tokens, &job, None).await;
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let mut stream = SseReader::new(response);
    let snapshot = stream.next(WITHIN).await.expect("snapshot");
    assert_eq!(summary(&[snapshot], &job), [(1, "queued".into(), 0)]);

    app.start_worker();
    let rest = stream.rest(WITHIN).await;
    assert_eq!(
        summary(&rest, &job),
        [(2, "processing".into(), 1), (3, "succeeded".into(), 1)]
    );
    assert!(rest.iter().all(|event| event.data.get("error").is_none()));
}

#[sqlx::test]
async fn a_failing_job_streams_its_error_and_ends(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.start_worker();
    let tokens = app.signed_in("failing@example.com").await;
    let response = upload(
        &app,
        &tokens,
        corrupt_pdf(),
        "broken.pdf",
        "application/pdf",
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let document: Value = response.json().await.expect("json");
    let job = create_job(&app.base, &tokens, document["id"].as_str().expect("id")).await;

    // Resuming from 0 replays the whole history, however far the job got.
    let mut stream = SseReader::new(open_stream(&app.base, &tokens, &job, Some("0")).await);
    let events = stream.rest(WITHIN).await;
    assert_eq!(
        summary(&events, &job),
        [
            (1, "queued".into(), 0),
            (2, "processing".into(), 1),
            (3, "failed".into(), 1)
        ]
    );
    let error = events[2].data["error"].as_str().expect("error");
    assert!(error.contains("not a readable PDF"), "{error}");

    // An admin requeues it; it fails again. A client resuming from before
    // the first failure reaches the current state: the old `failed` is
    // history, not the end.
    let admin = app.signed_in_admin("root@example.com").await;
    let requeued = app
        .client
        .post(app.url(&format!("/api/v1/admin/failed-jobs/{job}/requeue")))
        .bearer_auth(&admin.access)
        .send()
        .await
        .expect("requeue");
    assert_eq!(requeued.status(), StatusCode::OK);
    let mut stream = SseReader::new(open_stream(&app.base, &tokens, &job, Some("2")).await);
    let statuses: Vec<String> = summary(&stream.rest(WITHIN).await, &job)
        .into_iter()
        .map(|(_, status, _)| status)
        .collect();
    assert_eq!(
        statuses,
        ["failed", "requeued", "processing", "failed"],
        "through the requeue to the current end"
    );
}

/// One user cannot hold more than SSE_MAX_STREAMS_PER_USER streams in one
/// process; others are not affected, and closing one frees its place.
#[sqlx::test]
async fn a_user_holds_at_most_their_share_of_streams(db: PgPool) {
    let app = TestApp::spawn_with(db, &[("SSE_MAX_STREAMS_PER_USER", "3")]).await;
    let tokens = app.signed_in("hoarder@example.com").await;
    let document = upload_text(&app, &tokens, "Watched a lot.").await;
    let job = create_job(&app.base, &tokens, &document).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let response = open_stream(&app.base, &tokens, &job, None).await;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    let refused = open_stream(&app.base, &tokens, &job, None).await;
    assert!(refused.headers().contains_key("retry-after"));
    crate::helpers::assert_error(refused, StatusCode::TOO_MANY_REQUESTS, "too_many_streams").await;

    let other = app.signed_in("other@example.com").await;
    let document = upload_text(&app, &other, "Mine.").await;
    let theirs = create_job(&app.base, &other, &document).await;
    assert_eq!(
        open_stream(&app.base, &other, &theirs, None).await.status(),
        StatusCode::OK
    );

    drop(open.pop());
    stream_opens_again(&app, &tokens, &job).await;
}

/// Waits (up to `WITHIN`) until the job's stream opens again: a closed
/// stream gives its place back once the server sees it close.
async fn stream_opens_again(app: &TestApp, tokens: &Tokens, job: &str) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let response = open_stream(&app.base, tokens, job, None).await;
        if response.status() == StatusCode::OK {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a closed stream gives its place back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// However many users, one process holds at most SSE_MAX_STREAMS streams;
/// past it, 429 `too_many_streams`, and a closed stream frees its place.
#[sqlx::test]
async fn the_process_holds_at_most_its_share_of_streams(db: PgPool) {
    let app = TestApp::spawn_with(db, &[("SSE_MAX_STREAMS", "2")]).await;
    let mut open = Vec::new();
    for user in ["first@example.com", "second@example.com"] {
        let tokens = app.signed_in(user).await;
        let document = upload_text(&app, &tokens, "Watched.").await;
        let job = create_job(&app.base, &tokens, &document).await;
        let response = open_stream(&app.base, &tokens, &job, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{user}");
        open.push(response);
    }
    let third = app.signed_in("third@example.com").await;
    let document = upload_text(&app, &third, "Mine too.").await;
    let job = create_job(&app.base, &third, &document).await;
    let refused = open_stream(&app.base, &third, &job, None).await;
    assert!(refused.headers().contains_key("retry-after"));
    crate::helpers::assert_error(refused, StatusCode::TOO_MANY_REQUESTS, "too_many_streams").await;

    drop(open.pop());
    stream_opens_again(&app, &third, &job).await;
}

#[sqlx::test]
async fn resuming_with_last_event_id_sends_exactly_the_missing_events(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.start_worker();
    let tokens = app.signed_in("resume@example.com").await;
    let document = upload_text(&app, &tokens, "Resume me.").await;
    let job = create_job(&app.base, &tokens, &document).await;
    let mut first = SseReader::new(open_stream(&app.base, &tokens, &job, None).await);
    let all = first.rest(WITHIN).await;
    assert_eq!(all.last().expect("final").data["status"], "succeeded");

    for (last_seen, expected) in [
        (
            "1",
            vec![(2, "processing".to_owned(), 1), (3, "succeeded".into(), 1)],
        ),
        ("2", vec![(3, "succeeded".into(), 1)]),
    ] {
        let mut stream =
            SseReader::new(open_stream(&app.base, &tokens, &job, Some(last_seen)).await);
        assert_eq!(
            summary(&stream.rest(WITHIN).await, &job),
            expected,
            "after {last_seen}"
        );
    }

    // Up to date with a finished job: nothing follows, 204 (EventSource
    // stops reconnecting on it).
    let finished = open_stream(&app.base, &tokens, &job, Some("3")).await;
    assert_eq!(finished.status(), StatusCode::NO_CONTENT);

    // The query parameter, for EventSource reconnects with a new token.
    let mut stream = SseReader::new(
        app.client
            .get(app.url(&format!("/api/v1/jobs/{job}/events?last_event_id=2")))
            .bearer_auth(&tokens.access)
            .send()
            .await
            .expect("request"),
    );
    assert_eq!(
        summary(&stream.rest(WITHIN).await, &job),
        [(3, "succeeded".into(), 1)]
    );

    let response = open_stream(&app.base, &tokens, &job, Some("yesterday")).await;
    crate::helpers::assert_error(response, StatusCode::BAD_REQUEST, "invalid_last_event_id").await;
    let response = app
        .client
        .get(app.url(&format!("/api/v1/jobs/{job}/events?last_event_id=-1")))
        .bearer_auth(&tokens.access)
        .send()
        .await
        .expect("request");
    crate::helpers::assert_error(response, StatusCode::BAD_REQUEST, "invalid_last_event_id").await;
}

/// Moves the job the way a worker does: a real claim (`processing`), then
/// the real batched write of its success (`succeeded`). Returns the event
/// as the pub/sub message carries it.
async fn commit_event(db: &PgPool, job_id: JobId, kind: JobEventKind) -> StatusEvent {
    use docflow::db::jobs::queue::{ClaimLimits, Move, Started, apply, claim_next};
    match kind {
        JobEventKind::Processing => {
            let limits = ClaimLimits {
                jobs: 1,
                per_owner_running: 8,
            };
            let claimed = claim_next(db, uuid::Uuid::now_v7(), limits)
                .await
                .expect("claim")
                .pop()
                .expect("claimed");
            assert_eq!(claimed.id, job_id);
            let start = Started {
                job: claimed.id,
                run: claimed.run_id,
                at: chrono::Utc::now(),
            };
            apply(db, &[], &[start])
                .await
                .expect("start")
                .pop()
                .expect("the processing event")
                .into()
        }
        JobEventKind::Succeeded => {
            let run: docflow::domain::RunId =
                sqlx::query_scalar("SELECT run_id FROM jobs WHERE id = $1")
                    .bind(job_id.0)
                    .fetch_one(db)
                    .await
                    .expect("a running job");
            let success = Move {
                job: job_id,
                run,
                status: docflow::domain::JobStatus::Succeeded,
                event: Some(JobEventKind::Succeeded),
                delay_secs: 0.0,
                attempt_delta: 0,
                error: None,
                dead_letter: None,
                result: Some(r#"{"kind":"text","text":"","encoding":"UTF-8","counts":{"chars":0,"words":0,"lines":0}}"#.into()),
                started_at: Some(chrono::Utc::now()),
                start_recorded: true,
            };
            apply(db, &[success], &[])
                .await
                .expect("apply")
                .pop()
                .expect("applied")
                .into()
        }
        other => panic!("no worker step appends {other:?}"),
    }
}

#[sqlx::test]
async fn an_event_committed_while_the_stream_connects_is_reported_once(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let tokens = app.signed_in("race@example.com").await;
    let document = upload_text(&app, &tokens, "Finish during connect.").await;
    let job: JobId = JobId(
        create_job(&app.base, &tokens, &document)
            .await
            .parse()
            .expect("uuid"),
    );
    let limits = StreamLimits {
        max_duration: Duration::from_secs(10),
    };
    let hub = Hub::new(true);
    // The stream has subscribed; before it reads Postgres, the job moves to
    // `processing` and that is published. The stream then reads it in its
    // snapshot AND finds it in its subscription: it must report it once.
    let subscription = hub.subscribe(job);
    let processing = commit_event(&db, job, JobEventKind::Processing).await;
    hub.dispatch(processing);
    let mut events = Box::pin(
        stream::follow(subscription, db.clone(), Start::Snapshot, limits)
            .await
            .expect("follow")
            .expect("a stream"),
    );
    let first = events.next().await.expect("snapshot");
    assert_eq!((first.seq, first.status.as_str()), (2, "processing"));
    // The job finishes while the stream is live.
    let succeeded = commit_event(&db, job, JobEventKind::Succeeded).await;
    hub.dispatch(succeeded);
    let rest: Vec<(i32, JobEventKind)> = tokio::time::timeout(WITHIN, events.collect::<Vec<_>>())
        .await
        .expect("the stream ended by itself")
        .into_iter()
        .map(|e| (e.seq, e.status))
        .collect();
    assert_eq!(rest, [(3, JobEventKind::Succeeded)], "no copy of seq 2");

    // Resuming after 1 while 2 and 3 are both read and buffered: each once.
    let subscription = hub.subscribe(job);
    for event in db::job_events::list_after(&db, job, 1)
        .await
        .expect("events")
    {
        hub.dispatch(event.into());
    }
    let resumed: Vec<i32> = tokio::time::timeout(
        WITHIN,
        stream::follow(subscription, db.clone(), Start::After(1), limits)
            .await
            .expect("follow")
            .expect("a stream")
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
    )
    .await
    .expect("ended");
    assert_eq!(resumed, [2, 3]);
}

#[sqlx::test]
async fn a_live_gap_is_filled_from_postgres_in_order(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let tokens = app.signed_in("gap@example.com").await;
    let document = upload_text(&app, &tokens, "Gaps.").await;
    let job: JobId = JobId(
        create_job(&app.base, &tokens, &document)
            .await
            .parse()
            .expect("uuid"),
    );
    let hub = Hub::new(true);
    let limits = StreamLimits {
        max_duration: Duration::from_secs(10),
    };
    let mut events = Box::pin(
        stream::follow(hub.subscribe(job), db.clone(), Start::Snapshot, limits)
            .await
            .expect("follow")
            .expect("a stream"),
    );
    assert_eq!(
        events.next().await.expect("snapshot").status,
        JobEventKind::Queued
    );
    // seq 2's announcement is lost; seq 3's arrives: the stream must still
    // deliver 2 before 3.
    commit_event(&db, job, JobEventKind::Processing).await;
    let succeeded = commit_event(&db, job, JobEventKind::Succeeded).await;
    hub.dispatch(succeeded);
    let rest: Vec<(i32, JobEventKind)> = tokio::time::timeout(WITHIN, events.collect::<Vec<_>>())
        .await
        .expect("ended")
        .into_iter()
        .map(|e| (e.seq, e.status))
        .collect();
    assert_eq!(
        rest,
        [(2, JobEventKind::Processing), (3, JobEventKind::Succeeded)]
    );
}

#[sqlx::test]
async fn stream_tokens_open_only_their_job_for_their_lifetime_and_session(db: PgPool) {
    let app = TestApp::spawn_with(db, &[("STREAM_TOKEN_TTL_SECS", "1")]).await;
    let alice = app.signed_in("alice@example.com").await;
    let bob = app.signed_in("bob@example.com").await;
    let alice_doc = upload_text(&app, &alice, "Alice's").await;
    let alice_job = create_job(&app.base, &alice, &alice_doc).await;
    let other_alice_job = create_job(&app.base, &alice, &alice_doc).await;
    let bob_doc = upload_text(&app, &bob, "Bob's").await;
    let bob_job = create_job(&app.base, &bob, &bob_doc).await;

    let response = stream_token(&app.base, &alice, &alice_job).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let minted: Value = response.json().await.expect("json");
    let token = minted["token"].as_str().expect("token").to_owned();
    let events_url = minted["events_url"].as_str().expect("url").to_owned();
    assert_eq!(
        events_url,
        format!("/api/v1/jobs/{alice_job}/events?token={token}")
    );

    // The token alone (no Authorization header) opens its job's stream.
    let mut stream = SseReader::new(
        app.client
            .get(app.url(&events_url))
            .send()
            .await
            .expect("request"),
    );
    let snapshot = stream.next(WITHIN).await.expect("snapshot");
    assert_eq!(snapshot.data["job_id"], alice_job.as_str());
    drop(stream);

    // Another job of the same user, or another user's job: as if absent.
    for job in [&other_alice_job, &bob_job] {
        let response = app
            .client
            .get(app.url(&format!("/api/v1/jobs/{job}/events?token={token}")))
            .send()
            .await
            .expect("request");
        crate::helpers::assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    // Nobody mints a token for someone else's job.
    crate::helpers::assert_error(
        stream_token(&app.base, &bob, &alice_job).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // A stream token is not an access token, and garbage is refused.
    let response = app
        .client
        .get(app.url(&format!("/api/v1/jobs/{alice_job}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    crate::helpers::assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let response = app
        .client
        .get(app.url(&format!(
            "/api/v1/jobs/{alice_job}/events?token=not-a-token"
        )))
        .send()
        .await
        .expect("request");
    crate::helpers::assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let response = app
        .client
        .get(app.url(&format!("/api/v1/jobs/{alice_job}/events")))
        .send()
        .await
        .expect("request");
    crate::helpers::assert_error(response, StatusCode::UNAUTHORIZED, "unauthenticated").await;

    // Logging out ends the session's stream tokens at once.
    let fresh: Value = stream_token(&app.base, &alice, &alice_job)
        .await
        .json()
        .await
        .expect("json");
    let response = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(&alice.access)
        .json(&json!({}))
        .send()
        .await
        .expect("logout");
    assert!(response.status().is_success(), "{}", response.status());
    let response = app
        .client
        .get(app.url(fresh["events_url"].as_str().expect("url")))
        .send()
        .await
        .expect("request");
    crate::helpers::assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;

    // And each expires: a 1 s lifetime plus the 5 s clock-skew leeway, both
    // counted in whole seconds (exp < now - 5 with `now` truncated), so past
    // 7 s at the latest.
    let bob_token: Value = stream_token(&app.base, &bob, &bob_job)
        .await
        .json()
        .await
        .expect("json");
    let url = app.url(bob_token["events_url"].as_str().expect("url"));
    tokio::time::sleep(Duration::from_millis(7_500)).await;
    let response = app.client.get(&url).send().await.expect("request");
    crate::helpers::assert_error(response, StatusCode::UNAUTHORIZED, "token_expired").await;
}

#[sqlx::test]
async fn streams_end_at_their_time_cap_and_resume_without_gaps(db: PgPool) {
    let app = TestApp::spawn_with(
        db.clone(),
        &[("SSE_MAX_STREAM_SECS", "1"), ("SSE_KEEPALIVE_SECS", "1")],
    )
    .await;
    let tokens = app.signed_in("capped@example.com").await;
    let document = upload_text(&app, &tokens, "Capped.").await;
    let job = create_job(&app.base, &tokens, &document).await;
    let started = Instant::now();
    let mut stream = SseReader::new(open_stream(&app.base, &tokens, &job, None).await);
    let snapshot = stream.next(WITHIN).await.expect("snapshot");
    assert_eq!(stream.next(WITHIN).await.map(|e| e.data), None, "capped");
    assert!(started.elapsed() >= Duration::from_secs(1));

    app.start_worker();
    let mut resumed =
        SseReader::new(open_stream(&app.base, &tokens, &job, snapshot.id.as_deref()).await);
    let mut seqs = Vec::new();
    // Each capped stream resumes where the last one stopped.
    loop {
        match resumed.next(WITHIN).await {
            Some(event) => {
                let terminal = event.data["status"] == "succeeded";
                seqs.push(event.data["seq"].as_i64().expect("seq"));
                if terminal {
                    break;
                }
            }
            None => {
                let last = seqs.last().map_or(1, |s| *s).to_string();
                resumed = SseReader::new(open_stream(&app.base, &tokens, &job, Some(&last)).await);
            }
        }
    }
    assert_eq!(seqs, [2, 3]);
}

#[sqlx::test]
async fn an_idle_stream_gets_keepalive_comments(db: PgPool) {
    let app = TestApp::spawn_with(db, &[("SSE_KEEPALIVE_SECS", "1")]).await;
    let tokens = app.signed_in("idle@example.com").await;
    let document = upload_text(&app, &tokens, "Idle.").await;
    let job = create_job(&app.base, &tokens, &document).await;
    let mut stream = SseReader::new(open_stream(&app.base, &tokens, &job, None).await);
    stream.next(WITHIN).await.expect("snapshot");
    // No worker: nothing happens but keepalives, until the 60 s cap.
    let waited = tokio::time::timeout(Duration::from_millis(2_500), stream.next(WITHIN)).await;
    assert!(waited.is_err(), "no event expected");
    assert!(stream.comments >= 2, "{} keepalives", stream.comments);
}

/// A Redis server of the test's own, on its own port, that the test can
/// stop and start again.
struct OwnRedis {
    port: u16,
    process: Option<Running>,
}

impl OwnRedis {
    fn start(port: u16) -> Self {
        let mut redis = Self::stopped(port);
        redis.restart();
        redis
    }

    /// Not running yet: `restart` starts it.
    fn stopped(port: u16) -> Self {
        Self {
            port,
            process: None,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        self.process = None;
    }

    fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        self.process = Some(Running(child));
        wait_until_live(self.port);
    }
}

async fn wait_for(what: &str, within: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[sqlx::test]
async fn streams_fall_back_to_polling_while_redis_is_down_and_recover(db: PgPool) {
    let mut redis = OwnRedis::start(free_port());
    let app = TestApp::spawn_with(db, &[("REDIS_URL", &redis.url())]).await;
    let hub = app.state.hub.clone();
    wait_for("subscribed", WITHIN, || hub.is_connected()).await;
    let tokens = app.signed_in("outage@example.com").await;
    let document = upload_text(&app, &tokens, "Redis outage.").await;
    let job = create_job(&app.base, &tokens, &document).await;
    let mut stream = SseReader::new(open_stream(&app.base, &tokens, &job, None).await);
    assert_eq!(
        stream.next(WITHIN).await.expect("snapshot").data["status"],
        "queued"
    );

    redis.stop();
    wait_for("disconnect noticed", WITHIN, || !hub.is_connected()).await;
    // The worker cannot publish now; the stream finds its events in Postgres.
    app.start_worker();
    let started = Instant::now();
    let rest = stream.rest(WITHIN).await;
    assert_eq!(
        summary(&rest, &job),
        [(2, "processing".into(), 1), (3, "succeeded".into(), 1)]
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "polling delivered in {:?}",
        started.elapsed()
    );

    // Redis returns: the subscription comes back and events flow through it.
    redis.restart();
    wait_for("resubscribed", WITHIN, || hub.is_connected()).await;
    // And the publishing connection is back too (it backs off on its own
    // clock, up to 2 s).
    let deadline = Instant::now() + WITHIN;
    while app.state.ephemeral.ping().await.is_err() {
        assert!(Instant::now() < deadline, "the publisher reconnects");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = create_job(&app.base, &tokens, &document).await;
    let mut stream = SseReader::new(open_stream(&app.base, &tokens, &second, Some("0")).await);
    let started = Instant::now();
    let events = stream.rest(WITHIN).await;
    assert_eq!(
        events.last().expect("final").data["status"],
        "succeeded",
        "{events:?}"
    );
    // Through the subscription again: the only other path, the safety
    // re-read, waits SSE_KEEPALIVE_SECS (15 s).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[sqlx::test]
async fn a_replica_streams_a_job_created_on_another_and_run_by_a_worker_process(db: PgPool) {
    let deployment = Deployment::new(&db).await;
    let (port_a, port_b) = (free_port(), free_port());
    let _replica_a = deployment.start("api", port_a);
    let _replica_b = deployment.start("api", port_b);
    let (a, b) = (
        format!("http://127.0.0.1:{port_a}"),
        format!("http://127.0.0.1:{port_b}"),
    );
    let client = crate::helpers::client();
    // Registered on A, signed in on A, job created on A.
    let tokens = sign_in_at(&client, &a, "replicas@example.com", None).await;
    let job = start_text_job(&client, &a, &tokens, "Across replicas.").await;

    // The client follows on B; the job was created on A; no worker yet.
    let mut stream = SseReader::new(open_stream(&b, &tokens, &job, None).await);
    assert_eq!(
        stream.next(WITHIN).await.expect("snapshot").data["status"],
        "queued"
    );
    let started = Instant::now();
    let _worker = deployment.start("worker", free_port());
    let rest = stream.rest(WITHIN).await;
    assert_eq!(
        summary(&rest, &job),
        [(2, "processing".into(), 1), (3, "succeeded".into(), 1)]
    );
    // Through Redis, not the 15 s safety re-read.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// An API and a worker process both started while Redis is down reach full
/// service once it is up: readiness stops reporting it degraded, and the
/// worker publishes its events to Redis again.
#[sqlx::test]
async fn processes_started_during_a_redis_outage_connect_when_it_returns(db: PgPool) {
    let mut redis = OwnRedis::stopped(free_port());
    let url = redis.url();
    let settings = [("REDIS_URL", url.as_str())];
    let deployment = Deployment::new(&db).await;
    let port = free_port();
    let _api = deployment.start_with("api", port, &settings);
    let _worker = deployment.start_with("worker", free_port(), &settings);
    let base = format!("http://127.0.0.1:{port}");
    let client = crate::helpers::client();
    let readiness = || async {
        let response = client
            .get(format!("{base}/api/v1/health/ready"))
            .send()
            .await
            .expect("readiness");
        assert_eq!(response.status(), StatusCode::OK, "degraded, not unready");
        response.json::<Value>().await.expect("json")["degraded"].clone()
    };
    assert_eq!(readiness().await, json!(["redis"]));
    let gauge = || async {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .find(|line| line.starts_with("redis_connected "))
            .map(str::to_owned)
    };
    assert_eq!(gauge().await.as_deref(), Some("redis_connected 0"));

    redis.restart();
    let since = Instant::now();
    while readiness().await != json!([]) {
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "the API reconnects within seconds"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gauge().await.as_deref(), Some("redis_connected 1"));
    // The worker backs off up to 2 s between attempts: give it that.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Listen on Redis itself for what the worker publishes.
    let mut subscriber = tokio::net::TcpStream::connect(("127.0.0.1", redis.port))
        .await
        .expect("redis");
    subscriber
        .write_all(b"PSUBSCRIBE *job-status\r\n")
        .await
        .expect("subscribe");
    let tokens = sign_in_at(&client, &base, "late-redis@example.com", None).await;
    let job = start_text_job(&client, &base, &tokens, "Redis came back.").await;
    let mut heard = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !heard.contains(&job) || !heard.contains("succeeded") {
        let mut buffer = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        let read = tokio::time::timeout(left, subscriber.read(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("the worker published {job}'s end: heard {heard}"))
            .expect("read");
        assert!(read > 0, "redis closed: {heard}");
        heard.push_str(&String::from_utf8_lossy(&buffer[..read]));
    }
}

/// While Redis is down, the hub reads Postgres for all its streams at once:
/// 60 idle streams cost about one statement a second, not sixty.
#[sqlx::test]
async fn idle_streams_during_a_redis_outage_cost_one_query_a_second(db: PgPool) {
    let mut redis = OwnRedis::start(free_port());
    let app = TestApp::spawn_with(
        db,
        &[
            ("REDIS_URL", &redis.url()),
            ("SSE_MAX_STREAMS_PER_USER", "100"),
        ],
    )
    .await;
    let hub = app.state.hub.clone();
    wait_for("subscribed", WITHIN, || hub.is_connected()).await;
    let tokens = app.signed_in("idle@example.com").await;
    let document = upload_text(&app, &tokens, "Idle.").await;
    let mut streams = Vec::new();
    for _ in 0..60 {
        let job = create_job(&app.base, &tokens, &document).await;
        let response = open_stream(&app.base, &tokens, &job, None).await;
        assert_eq!(response.status(), StatusCode::OK);
        streams.push(response);
    }
    redis.stop();
    wait_for("disconnect noticed", WITHIN, || !hub.is_connected()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let commits = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&app.db)
        .await
        .expect("stats")
    };
    // Statistics reach pg_stat_database within a second of a commit.
    let before = commits().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = commits().await - before;
    eprintln!("60 idle streams, Redis down: {during} commits in 6 s");
    assert!(
        during < 30,
        "{during} commits in 6 s: the streams poll one by one"
    );
    drop(streams);
}

/// A logout ends the session's open streams at once (bearer and stream
/// token alike, through Redis to every API process); another session's
/// stream goes on.
#[sqlx::test]
async fn logging_out_ends_the_sessions_open_streams(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let hub = app.state.hub.clone();
    wait_for("subscribed", WITHIN, || hub.is_connected()).await;
    let mine = app.signed_in("leaving@example.com").await;
    let other_session: Value = app
        .login("leaving@example.com", crate::helpers::PASSWORD)
        .await
        .json()
        .await
        .expect("json");
    let other = Tokens {
        access: other_session["access_token"]
            .as_str()
            .expect("access")
            .to_owned(),
        refresh: other_session["refresh_token"]
            .as_str()
            .expect("refresh")
            .to_owned(),
    };
    let document = upload_text(&app, &mine, "Watched until logout.").await;
    // No worker: the job stays queued, its streams stay open.
    let job = create_job(&app.base, &mine, &document).await;
    let mut bearer = SseReader::new(open_stream(&app.base, &mine, &job, None).await);
    let token: Value = stream_token(&app.base, &mine, &job)
        .await
        .json()
        .await
        .expect("json");
    let mut by_token = SseReader::new(
        crate::helpers::client()
            .get(format!(
                "{}{}",
                app.base,
                token["events_url"].as_str().expect("events_url")
            ))
            .send()
            .await
            .expect("request"),
    );
    let mut others = SseReader::new(open_stream(&app.base, &other, &job, None).await);
    for stream in [&mut bearer, &mut by_token, &mut others] {
        assert_eq!(
            stream.next(WITHIN).await.expect("snapshot").data["status"],
            "queued"
        );
    }

    let response = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(&mine.access)
        .send()
        .await
        .expect("logout");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let started = Instant::now();
    assert!(bearer.rest(Duration::from_secs(5)).await.is_empty());
    assert!(by_token.rest(Duration::from_secs(5)).await.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "ended within a second: {:?}",
        started.elapsed()
    );
    // The other session's stream is still open: no end within a moment.
    let still_open = tokio::time::timeout(Duration::from_millis(500), others.next(WITHIN)).await;
    assert!(still_open.is_err(), "the other session's stream goes on");
}

//! The web page in a real browser: headless Chromium (Debian's `chromium`,
//! driven by playwright-core from npm; `scripts/test` installs both) signs
//! in, uploads a file and watches the job finish through EventSource.

use std::{path::Path, process::Command};

use crate::helpers::TestApp;
use serde_json::Value;
use sqlx::PgPool;

fn browser_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser"))
}

#[sqlx::test]
async fn a_person_uploads_a_file_and_watches_it_finish_live(db: PgPool) {
    let chromium = std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run scripts/test (as root it installs chromium), or set CHROMIUM_PATH"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run `npm ci --prefix tests/browser` (scripts/test does)"
    );
    let app = TestApp::spawn(db).await;
    app.start_worker();
    let upload = tempfile::Builder::new()
        .suffix(".txt")
        .tempfile()
        .expect("temp file");
    std::fs::write(upload.path(), "Seen through a real browser, live.\n").expect("write");

    let base = app.base.clone();
    let path = upload.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("watch-job.mjs")
            .arg(&base)
            .arg(&path)
            .current_dir(browser_dir())
            .env("CHROMIUM_PATH", &chromium)
            .output()
            .expect("node")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));

    assert_eq!(seen["title"], "DocFlow");
    assert_eq!(seen["pageErrors"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["wrongSignIn"], "Invalid email or password.", "{seen}");
    assert_eq!(seen["status"], "succeeded", "{seen}");
    let timeline: Vec<&str> = seen["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        timeline
            .last()
            .is_some_and(|last| last.ends_with("succeeded")),
        "{timeline:?}"
    );
    // The status came through EventSource, on this job's stream.
    let streams = seen["eventSourceRequests"].as_array().expect("requests");
    assert!(
        !streams.is_empty()
            && streams.iter().all(|path| path
                .as_str()
                .is_some_and(|p| p.starts_with("/api/v1/jobs/") && p.ends_with("/events"))),
        "{seen}"
    );
    assert!(
        seen["text"]
            .as_str()
            .is_some_and(|text| text.contains("Seen through a real browser, live.")),
        "{seen}"
    );
    assert!(
        seen["metadata"].as_array().is_some_and(|m| !m.is_empty()),
        "{seen}"
    );
}

//! The web page in a real browser: headless Chromium (Debian's `chromium`,
//! driven by playwright-core from npm; `scripts/test` installs both) goes
//! through what a person does with DocFlow (tests/browser/journey.mjs):
//! uploads two files, watches both finish live, reloads and opens a new
//! tab still signed in, reads a result page by page, downloads a file
//! (the bytes must be the uploaded ones), deletes one; then an admin
//! requeues a dead-lettered job.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use crate::helpers::{PASSWORD, TestApp, pdf_of, run_job, upload_id};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

fn browser_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser"))
}

/// Three pages: two with text, the last blank (its mark is "no text").
fn three_page_pdf() -> Vec<u8> {
    let page = |contents: usize| {
        format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {contents} 0 R \
             /Resources << /Font << /F1 3 0 R >> >> >>"
        )
    };
    let stream = |text: &str| {
        let content = format!("BT /F1 24 Tf 72 720 Td ({text}) Tj ET");
        format!(
            "<< /Length {} >>\nstream\n{content}\nendstream",
            content.len()
        )
    };
    pdf_of(&[
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [4 0 R 5 0 R 6 0 R] /Count 3 >>".to_owned(),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
        page(7),
        page(8),
        page(9),
        stream("Page one of three."),
        stream("Second page"),
        stream(""),
    ])
}

#[sqlx::test]
async fn a_person_uploads_reads_downloads_and_deletes_in_a_browser(db: PgPool) {
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
    let first_worker = CancellationToken::new();
    let worker = app.start_worker_until(first_worker.clone());

    // An admin whose corrupt upload is in the dead-letter queue.
    let admin = app.signed_in_admin("admin@example.com").await;
    let mut corrupt = b"%PDF-1.7\n".to_vec();
    corrupt.extend(std::iter::repeat_n(b'\xa7', 1024));
    let corrupt = upload_id(&app, &admin, corrupt, "bad.pdf", "application/pdf").await;
    let dead = run_job(&app, &admin, &corrupt, Duration::from_secs(30)).await;
    assert_eq!(dead["status"], "failed", "{dead}");
    // No worker while the person uploads, so that both jobs are on the
    // page, queued, before they run: the page must follow both live.
    first_worker.cancel();
    worker.await.expect("worker drained");

    let dir = tempfile::tempdir().expect("temp dir");
    let text_file = dir.path().join("notes.txt");
    let text = "Seen through a real browser, live.\nSecond line.\n";
    std::fs::write(&text_file, text).expect("write");
    let pdf_file = dir.path().join("three pages.pdf");
    std::fs::write(&pdf_file, three_page_pdf()).expect("write");
    let downloaded = dir.path().join("downloaded");

    let base = app.base.clone();
    let args = [&text_file, &pdf_file, &downloaded].map(|p| p.to_owned());
    let browser = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("journey.mjs")
            .arg(&base)
            .args(args)
            .current_dir(browser_dir())
            .env("CHROMIUM_PATH", &chromium)
            .env("ADMIN_EMAIL", "admin@example.com")
            .env("ADMIN_PASSWORD", PASSWORD)
            .output()
            .expect("node")
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !browser.is_finished() && Instant::now() < deadline {
        let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
            .fetch_one(&app.db)
            .await
            .expect("count");
        if jobs == 3 {
            // The page opens its streams right after it lists a new job.
            tokio::time::sleep(Duration::from_secs(1)).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.start_worker();
    let output = browser.await.expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));

    assert_eq!(seen["title"], "DocFlow");
    assert_eq!(seen["pageErrors"], json!([]), "{seen}");
    assert_eq!(seen["wrongSignIn"], "Invalid email or password.", "{seen}");

    // Both uploads went all the way, and both jobs were followed live.
    let uploads = seen["uploads"].as_array().expect("uploads");
    assert_eq!(uploads.len(), 2, "{seen}");
    assert!(uploads.iter().all(|u| u["progress"] == 1), "{seen}");
    let both = json!([
        {"name": "three pages.pdf", "statuses": ["succeeded"]},
        {"name": "notes.txt", "statuses": ["succeeded"]},
    ]);
    let mut listed = seen["listed"].clone();
    sort_by_name(&mut listed);
    let mut expected = both.clone();
    sort_by_name(&mut expected);
    assert_eq!(listed, expected, "{seen}");
    // Each went from queued to succeeded on screen.
    let timelines = seen["timelines"].as_array().expect("timelines");
    assert!(
        timelines.len() == 2
            && timelines.iter().all(|t| t
                .as_str()
                .is_some_and(|t| t.starts_with("queued") && t.ends_with("succeeded"))),
        "{seen}"
    );
    let mut streams: Vec<&str> = seen["eventSourceRequests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    streams.sort_unstable();
    streams.dedup();
    assert!(
        streams.len() >= 2
            && streams
                .iter()
                .all(|p| p.starts_with("/api/v1/jobs/") && p.ends_with("/events")),
        "{seen}"
    );

    // Keyboard alone reaches uploading, the list's and a job's actions.
    let reached = seen["keyboardReaches"].as_array().expect("keyboard");
    for target in [
        "file",
        "ocr-mode",
        "download",
        "rerun",
        "delete",
        "show-result",
        "sign-out",
    ] {
        assert!(
            reached.iter().any(|r| r == target),
            "Tab never reaches {target}: {seen}"
        );
    }

    // After a reload and in a new tab: still signed in, both listed.
    assert_eq!(seen["signInVisibleAfterReload"], false, "{seen}");
    for key in ["afterReload", "newTab"] {
        let mut rows = seen[key].clone();
        sort_by_name(&mut rows);
        assert_eq!(rows, expected, "{key}: {seen}");
    }

    // The result, page by page, with the blank page marked.
    let pages = seen["resultPages"].as_array().expect("pages");
    assert_eq!(pages.len(), 3, "{seen}");
    assert!(
        pages[0]["heading"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Page 1")
    );
    assert_eq!(
        pages[0]["text"].as_str().map(str::trim),
        Some("Page one of three.")
    );
    assert_eq!(
        pages[1]["text"].as_str().map(str::trim),
        Some("Second page")
    );
    assert_eq!(pages[2]["noText"], "No text on this page.", "{seen}");
    let rows: Vec<&str> = seen["metadataRows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for row in [
        "File",
        "Kind",
        "Pages",
        "PDF version",
        "Counts",
        "Pages without text",
    ] {
        assert!(rows.contains(&row), "{row} missing from {rows:?}");
    }
    assert_eq!(seen["rawJsonInMetadata"], false, "{seen}");

    // The download is the uploaded file, byte for byte.
    assert_eq!(seen["downloadName"], "notes.txt", "{seen}");
    assert_eq!(
        std::fs::read(&downloaded).expect("downloaded"),
        text.as_bytes()
    );

    // Deleted after a confirmation that names it.
    assert!(
        seen["confirmation"]
            .as_str()
            .is_some_and(|c| c.contains("notes.txt")),
        "{seen}"
    );
    assert_eq!(
        seen["afterDelete"],
        json!([{"name": "three pages.pdf", "statuses": ["succeeded"]}])
    );
    assert_eq!(seen["phoneOverflow"], 0, "wider than a phone: {seen}");

    // The admin saw the corrupt job and requeued it.
    let dead_letters = seen["deadLetters"].as_array().expect("dead letters");
    assert!(
        dead_letters
            .iter()
            .any(|d| d["jobId"] == dead["id"] && d["reason"] == "permanent"),
        "{seen}"
    );
    assert!(
        seen["requeueMessage"]
            .as_str()
            .is_some_and(|m| m.contains(dead["id"].as_str().expect("id"))),
        "{seen}"
    );
    let requeued = sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM job_events WHERE job_id = $1::uuid AND status = 'requeued'",
    )
    .bind(dead["id"].as_str().expect("id"))
    .fetch_one(&app.db)
    .await
    .expect("events");
    assert_eq!(requeued, 1);
}

fn sort_by_name(rows: &mut Value) {
    if let Some(rows) = rows.as_array_mut() {
        rows.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    }
}

//! What extraction makes of hard documents: the hostile PDF corpus
//! (scripts/hostile-pdfs) in the real extractor process under a 256 MiB
//! sandbox, scanned PDFs read by the real tesseract, UTF-16 text, and
//! Office and web documents.

use std::{path::Path, process::Command, time::Duration};

use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{
    TestApp, Tokens, assert_error, docx, is_terminal, odp, pdf, run_job, scanned_pdf, upload,
    upload_id, wait_for_job, xlsx, zip_of,
};

/// `docflow extract` on one file as the sandbox runs it, with 256 MiB of
/// address space: its exit code (`None` when a signal ended it) and the
/// JSON it printed.
fn extract_file(path: &Path) -> (Option<i32>, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_docflow"))
        .args(["extract", "--no-ocr", "--address-space-bytes"])
        .arg((256_u64 << 20).to_string())
        // The PDF text budget is a quarter of this: 5 s, generous for a
        // debug build.
        .args(["--cpu-seconds", "20"])
        .arg(path)
        .output()
        .expect("docflow extract runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or(Value::Null);
    (output.status.code(), json)
}

#[test]
fn hostile_pdfs_fail_fast_and_small_with_a_reason() {
    let corpus = tempfile::tempdir().expect("tempdir");
    let written = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/hostile-pdfs"))
        .arg(corpus.path())
        .output()
        .expect("scripts/hostile-pdfs runs");
    assert!(written.status.success(), "{written:?}");

    let mut seen = 0;
    for entry in std::fs::read_dir(corpus.path()).expect("corpus") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let (code, json) = extract_file(&path);
        seen += 1;
        // Never a signal (an abort, the memory or CPU limit): a clean exit,
        // with a result (0) or an error (3).
        assert!(matches!(code, Some(0 | 3)), "{name}: exit {code:?}, {json}");
        let error = json["error"]["message"].as_str();
        let expect_error = |wanted: &str| {
            let error = error.unwrap_or_else(|| panic!("{name}: expected an error, got {json}"));
            assert!(error.contains(wanted), "{name}: {error}");
            assert_eq!(json["error"]["kind"], "permanent", "{name}");
        };
        let text = json["text"].as_str().unwrap_or_default();
        match name.as_str() {
            "deep-nesting.pdf" => expect_error("too_complex: content-stream arrays"),
            "operand-flood.pdf" => expect_error("too_complex: a content-stream operation"),
            "operation-flood.pdf" => expect_error("too_complex: a page has more than"),
            // The document's operation bound, or in a slow build its CPU
            // budget: either way named.
            "shared-stream-own-fonts.pdf" => expect_error("too_complex: "),
            n if n.starts_with("encrypted-") => expect_error("encrypted"),
            "endless-inline-image.pdf" | "inflation-bomb.pdf" => {
                assert_eq!(json["pages_without_text"], serde_json::json!([1]), "{name}");
            }
            "page-tree-cycle.pdf" => {
                assert_eq!(json["page_count"], 1, "{json}");
                assert_eq!(text, "The page behind the loop.");
                assert_eq!(json["damaged"], true);
                assert!(
                    json["damage"]
                        .as_str()
                        .expect("damage")
                        .contains("page tree")
                );
            }
            "shared-stream.pdf" => assert_eq!(json["page_count"], 2000, "{name}"),
            "text-flood-shared.pdf" | "text-flood-own-fonts.pdf" => {
                assert_eq!(json["truncated"], true, "{name}");
                let reason = json["truncated_reason"].as_str().expect("reason");
                assert!(reason.contains("text limit"), "{name}: {reason}");
                assert!(text.len() <= 16 << 20, "{name}: {}", text.len());
            }
            "truncated.pdf" => {
                assert_eq!(text, "Text before the cut.");
                assert_eq!(json["damaged"], true);
                assert!(
                    json["damage"]
                        .as_str()
                        .expect("damage")
                        .contains("cut short")
                );
            }
            other => panic!("no expectation for {other}"),
        }
    }
    assert_eq!(seen, 15, "the corpus changed: update the expectations");
}

/// Our one-page PDF rendered to a grey JPEG at `dpi`, turned a quarter
/// when `rotated` (a page scanned sideways): the JPEG and its pixel size.
fn scanned_page(dpi: u32, rotated: bool) -> (Vec<u8>, u32, u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("page.pdf");
    std::fs::write(&input, pdf()).expect("write");
    let status = Command::new("pdftoppm")
        .args(["-gray", "-png", "-singlefile", "-r", &dpi.to_string()])
        .arg(&input)
        .arg(dir.path().join("page"))
        .status()
        .expect("pdftoppm (poppler-utils) is installed");
    assert!(status.success());
    let page = image::open(dir.path().join("page.png")).expect("rendered page");
    let page = if rotated { page.rotate90() } else { page }.into_luma8();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&page)
        .expect("jpeg");
    (jpeg, page.width(), page.height())
}

#[sqlx::test]
async fn scanned_pdf_pages_are_read_by_ocr(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.start_worker();
    let tokens = app.signed_in("scanner@example.com").await;
    let scan = scanned_pdf(&[scanned_page(200, false), scanned_page(200, true)], 200);
    let id = upload_id(&app, &tokens, scan, "scan.pdf", "application/pdf").await;
    let done = run_job(&app, &tokens, &id, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let result = &done["result"]["result"];
    assert_eq!(result["page_count"], 2, "{result}");
    assert_eq!(result["ocr_page_count"], 2, "{result}");
    assert_eq!(
        result["pages_without_text"],
        serde_json::json!([]),
        "{result}"
    );
    assert_eq!(result["ocr"]["engine"], "tesseract");
    for page in result["pages"].as_array().expect("pages") {
        assert_eq!(page["source"], "ocr", "{page}");
        // The upright page and the one scanned sideways alike. (Tesseract
        // may split "DocFlow" at its ligature-like "Fl": the letters count.)
        let text = page["text"].as_str().expect("text").to_lowercase();
        assert!(text.replace(' ', "").contains("hellodocflow"), "{page}");
        let confidence = page["ocr_confidence"].as_f64().expect("confidence");
        assert!(confidence > 50.0, "{page}");
    }
}

#[sqlx::test]
async fn utf16_text_is_accepted_and_decoded(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.start_worker();
    let tokens = app.signed_in("utf16@example.com").await;
    let sentence = "Grüße aus Köln: UTF-16 text, as Windows Notepad saves it.";
    let with_bom: Vec<u8> = [0xff, 0xfe]
        .into_iter()
        .chain(sentence.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let without_bom: Vec<u8> = sentence.encode_utf16().flat_map(u16::to_be_bytes).collect();
    for (bytes, encoding) in [(with_bom, "UTF-16LE"), (without_bom, "UTF-16BE")] {
        let id = upload_id(&app, &tokens, bytes, "notes.txt", "text/plain").await;
        let done = run_job(&app, &tokens, &id, Duration::from_secs(30)).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        let result = &done["result"]["result"];
        assert_eq!(result["encoding"], encoding, "{result}");
        assert_eq!(
            result["text"]
                .as_str()
                .expect("text")
                .trim_start_matches('\u{feff}'),
            sentence
        );
    }
}

/// DOCX, XLSX and ODP by their bytes, HTML by its markup: uploaded as a
/// browser sends them, read by the real extractor process. An archive that
/// only claims to be a document fails with the reason, a zip bomb fast.
#[sqlx::test]
async fn office_and_web_documents_are_read(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.start_worker();
    let tokens = app.signed_in("office@example.com").await;
    let html = b"<!DOCTYPE html><html><head><title>A page</title><script>x()</script></head>\
        <body><h1>News</h1><p>Caf&eacute; opens &amp; closes.</p></body></html>"
        .to_vec();
    let cases: [(Vec<u8>, &str, &str, &str); 4] = [
        (
            docx(&["First paragraph.", "Second one."]),
            "notes.docx",
            "docx",
            "First paragraph.\nSecond one.",
        ),
        (xlsx(), "prices.xlsx", "xlsx", "Tea\t3.5\nCoffee\t4"),
        (odp(), "talk.odp", "odp", "Hello from a slide\u{c}Goodbye"),
        (html, "page.html", "html", "News\nCafé opens & closes."),
    ];
    for (bytes, name, format, text) in cases {
        // Declared as browsers do for these files.
        let id = upload_id(&app, &tokens, bytes, name, "application/octet-stream").await;
        let done = run_job(&app, &tokens, &id, Duration::from_secs(30)).await;
        assert_eq!(done["status"], "succeeded", "{name}: {done}");
        let result = &done["result"]["result"];
        assert_eq!(result["text"], text, "{name}: {result}");
        if format == "html" {
            assert_eq!(result["kind"], "html");
            assert_eq!(result["title"], "A page");
        } else {
            assert_eq!(result["kind"], "office");
            assert_eq!(result["format"], format);
        }
    }
    let docx_result = {
        let id = upload_id(
            &app,
            &tokens,
            docx(&["x"]),
            "x.docx",
            "application/octet-stream",
        )
        .await;
        run_job(&app, &tokens, &id, Duration::from_secs(30)).await
    };
    assert_eq!(
        docx_result["result"]["result"]["properties"]["title"],
        "Field notes"
    );
    let slides = run_job(
        &app,
        &tokens,
        &upload_id(&app, &tokens, odp(), "t.odp", "application/octet-stream").await,
        Duration::from_secs(30),
    )
    .await;
    let parts = &slides["result"]["result"]["parts"];
    assert_eq!(parts[0]["name"], "Welcome", "{parts}");
    assert_eq!(parts[1]["text"], "Goodbye", "{parts}");

    // An e-mail, by its header block; the same bytes declared as plain
    // text stay plain text.
    let mail = b"From: Ada <ada@example.com>\r\nTo: bob@example.com\r\nSubject: Minutes\r\n\
        Date: Thu, 3 Dec 2026 09:00:00 +0000\r\nMessage-ID: <m1@example.com>\r\n\r\n\
        The meeting moved to Friday.\r\n"
        .to_vec();
    let id = upload_id(
        &app,
        &tokens,
        mail.clone(),
        "minutes.eml",
        "application/octet-stream",
    )
    .await;
    let done = run_job(&app, &tokens, &id, Duration::from_secs(30)).await;
    let result = &done["result"]["result"];
    assert_eq!(result["kind"], "email", "{done}");
    assert_eq!(result["subject"], "Minutes");
    assert_eq!(result["from"][0], "Ada <ada@example.com>");
    assert_eq!(result["text"], "The meeting moved to Friday.");
    let id = upload_id(&app, &tokens, mail, "minutes.txt", "text/plain").await;
    let done = run_job(&app, &tokens, &id, Duration::from_secs(30)).await;
    assert_eq!(done["result"]["result"]["kind"], "text", "{done}");

    // Markdown is text declared as Markdown (browsers send text/markdown).
    let guide = b"# Guide\n\nRead *this* first.\n\n## Next\n\n- one\n".to_vec();
    let id = upload_id(&app, &tokens, guide, "guide.md", "text/markdown").await;
    let done = run_job(&app, &tokens, &id, Duration::from_secs(30)).await;
    let result = &done["result"]["result"];
    assert_eq!(result["kind"], "markdown", "{done}");
    assert_eq!(result["title"], "Guide");
    assert_eq!(result["text"], "Guide\nRead this first.\nNext\none");
    assert_eq!(result["headings"][1]["title"], "Next");

    // A plain ZIP claiming nothing is refused at upload (415, saying so).
    let plain = zip_of(&[("readme.txt", b"just a zip")]);
    let refused = upload(&app, &tokens, plain.clone(), "a.zip", "application/zip").await;
    assert_error(
        refused,
        reqwest::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    // Declared as DOCX, it is accepted and the job says what is missing.
    let pretender = upload_id(
        &app,
        &tokens,
        plain,
        "fake.docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    )
    .await;
    let failed = run_job(&app, &tokens, &pretender, Duration::from_secs(30)).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("word/document.xml is missing")),
        "{failed}"
    );
    // A zip bomb: 64 MiB of one letter in a few kilobytes.
    let flood = vec![b'a'; 64 << 20];
    let bomb_xml = [
        b"<w:document xmlns:w=\"w\"><w:body><w:p><w:r><w:t>".as_slice(),
        &flood,
        b"</w:t></w:r></w:p></w:body></w:document>",
    ]
    .concat();
    let bomb = docx_with_document(&bomb_xml);
    assert!(bomb.len() < 200 * 1024, "{} bytes", bomb.len());
    let bomb = upload_id(&app, &tokens, bomb, "bomb.docx", "application/octet-stream").await;
    let started = std::time::Instant::now();
    let failed = run_job(&app, &tokens, &bomb, Duration::from_secs(30)).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("too_complex:")),
        "{failed}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// A DOCX archive around this `word/document.xml`.
fn docx_with_document(document: &[u8]) -> Vec<u8> {
    zip_of(&[
        ("[Content_Types].xml", b"<Types/>"),
        ("word/document.xml", document),
    ])
}

/// `POST /jobs` with this OCR mode; the finished job.
async fn run_job_with_ocr(app: &TestApp, tokens: &Tokens, document: &str, ocr: &str) -> Value {
    let response = app
        .client
        .post(app.url("/api/v1/jobs"))
        .bearer_auth(&tokens.access)
        .json(&serde_json::json!({ "document_id": document, "ocr": ocr }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), reqwest::StatusCode::CREATED, "{ocr}");
    let job: Value = response.json().await.expect("json");
    assert_eq!(job["ocr"], ocr);
    let id = job["id"].as_str().expect("id").to_owned();
    wait_for_job(app, tokens, &id, Duration::from_secs(120), is_terminal).await
}

#[sqlx::test]
async fn a_job_chooses_which_pages_ocr_reads(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.start_worker();
    let tokens = app.signed_in("modes@example.com").await;
    let scan = scanned_pdf(&[scanned_page(150, false)], 150);
    let scan = upload_id(&app, &tokens, scan, "scan.pdf", "application/pdf").await;
    let text = upload_id(&app, &tokens, pdf(), "text.pdf", "application/pdf").await;

    // Off: the scan's page stays without text.
    let done = run_job_with_ocr(&app, &tokens, &scan, "off").await;
    let result = &done["result"]["result"];
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(result["ocr_page_count"], 0, "{result}");
    assert_eq!(
        result["pages_without_text"],
        serde_json::json!([1]),
        "{result}"
    );
    assert_eq!(result["pages"][0]["source"], "text");

    // Auto (the default) leaves a page with a text layer alone; force
    // reads it by OCR too.
    let done = run_job(&app, &tokens, &text, Duration::from_secs(60)).await;
    assert_eq!(done["ocr"], "auto");
    assert_eq!(
        done["result"]["result"]["pages"][0]["source"], "text",
        "{done}"
    );
    let done = run_job_with_ocr(&app, &tokens, &text, "force").await;
    let page = &done["result"]["result"]["pages"][0];
    assert_eq!(page["source"], "ocr", "{done}");
    assert!(
        page["text"].as_str().expect("text").contains("Hello"),
        "{page}"
    );

    // Anything else is the client's mistake.
    let response = app
        .client
        .post(app.url("/api/v1/jobs"))
        .bearer_auth(&tokens.access)
        .json(&serde_json::json!({ "document_id": text, "ocr": "sometimes" }))
        .send()
        .await
        .expect("request");
    assert_error(
        response,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        "validation_error",
    )
    .await;
}

#[sqlx::test]
async fn a_job_chooses_its_ocr_languages_among_the_installed_ones(db: PgPool) {
    let app = TestApp::spawn_with(db, &[("OCR_LANGUAGES", "eng")]).await;
    app.start_worker();
    let tokens = app.signed_in("languages@example.com").await;
    let scan = scanned_pdf(&[scanned_page(150, false)], 150);
    let scan = upload_id(&app, &tokens, scan, "scan.pdf", "application/pdf").await;
    let post = |body: Value| {
        app.client
            .post(app.url("/api/v1/jobs"))
            .bearer_auth(&tokens.access)
            .json(&body)
            .send()
    };

    let response = post(serde_json::json!({ "document_id": scan, "ocr_languages": "eng" }))
        .await
        .expect("request");
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let job: Value = response.json().await.expect("json");
    assert_eq!(job["ocr_languages"], "eng");
    let id = job["id"].as_str().expect("id").to_owned();
    let done = wait_for_job(&app, &tokens, &id, Duration::from_secs(120), is_terminal).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["result"]["ocr"]["language"], "eng", "{done}");
    let text = done["result"]["result"]["text"].as_str().expect("text");
    assert!(text.to_lowercase().contains("hello"), "{text}");

    // A language this server cannot read, and a code that is not one.
    for (languages, says) in [("eng+deu", "deu not available"), ("eng;rm", "expected")] {
        let response = post(serde_json::json!({ "document_id": scan, "ocr_languages": languages }))
            .await
            .expect("request");
        let body = assert_error(
            response,
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
        )
        .await;
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(says), "{languages}: {message}");
    }
    // Without it, a job reads with the server's languages.
    let done = run_job(&app, &tokens, &scan, Duration::from_secs(120)).await;
    assert_eq!(done["ocr_languages"], Value::Null);
    assert_eq!(done["result"]["result"]["ocr"]["language"], "eng", "{done}");
}

#[sqlx::test]
async fn ocr_reads_at_most_ocr_max_pages_of_a_document(db: PgPool) {
    let app = TestApp::spawn_with(db, &[("OCR_MAX_PAGES", "1")]).await;
    app.start_worker();
    let tokens = app.signed_in("long-scan@example.com").await;
    let scan = scanned_pdf(&[scanned_page(150, false), scanned_page(150, false)], 150);
    let id = upload_id(&app, &tokens, scan, "scan.pdf", "application/pdf").await;
    let done = run_job(&app, &tokens, &id, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let result = &done["result"]["result"];
    // The first page read, the second counted as skipped, not silently
    // empty.
    assert_eq!(result["ocr_page_count"], 1, "{result}");
    assert_eq!(result["ocr_pages_skipped"], 1, "{result}");
    assert_eq!(result["pages"][0]["source"], "ocr", "{result}");
    assert_eq!(result["pages"][1]["source"], "text", "{result}");
    assert_eq!(
        result["pages_without_text"],
        serde_json::json!([2]),
        "{result}"
    );
}

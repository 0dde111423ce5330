//! Uploads, listing, deletion and download links, on the local store and on a
//! real S3-compatible server.

use crate::helpers::{
    S3Server, TestApp, Tokens, assert_error, files_under, get, get_json, jpeg, pdf, png,
    sha256_hex, upload,
};
use reqwest::{StatusCode, multipart};
use serde_json::Value;
use sqlx::PgPool;

const MIB: usize = 1024 * 1024;

async fn download_url(app: &TestApp, tokens: &Tokens, id: &str) -> String {
    let response = get(app, tokens, &format!("/api/v1/documents/{id}/download-url")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert!(body["expires_at"].is_string());
    body["url"].as_str().expect("url").to_owned()
}

/// Uploads each kind, checks the answer, the stored bytes and a download.
async fn round_trip(app: &TestApp, tokens: &Tokens, stored_bytes: impl Fn(&str, &str) -> Vec<u8>) {
    let latin1_text =
        b"Cr\xe8me br\xfbl\xe9e et caf\xe9 au lait, tr\xe8s appr\xe9ci\xe9s \xe0 Paris.\n".to_vec();
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("report.pdf", "application/pdf", pdf()),
        ("chart.png", "image/png", png()),
        ("photo.jpg", "image/jpeg", jpeg()),
        (
            "notes.txt",
            "text/plain",
            "Hello, DocFlow ✓\nSecond line.\n".as_bytes().to_vec(),
        ),
        ("legacy.txt", "text/plain", latin1_text),
    ];
    let me: Value = app.me(&tokens.access).await.json().await.expect("json");
    let owner = me["id"].as_str().expect("id").to_owned();
    for (filename, content_type, bytes) in cases {
        let response = upload(app, tokens, bytes.clone(), filename, content_type).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{filename}");
        let document: Value = response.json().await.expect("json");
        assert_eq!(document["filename"], filename);
        assert_eq!(document["content_type"], content_type);
        assert_eq!(document["size_bytes"], bytes.len());
        assert_eq!(document["sha256"], sha256_hex(&bytes), "{filename}");
        let id = document["id"].as_str().expect("id").to_owned();

        let stored = stored_bytes(&owner, &id);
        assert_eq!(
            sha256_hex(&stored),
            sha256_hex(&bytes),
            "{filename} stored bytes"
        );

        let detail = get(app, tokens, &format!("/api/v1/documents/{id}")).await;
        assert_eq!(detail.status(), StatusCode::OK);
        assert_eq!(detail.json::<Value>().await.expect("json"), document);

        let url = download_url(app, tokens, &id).await;
        let download = reqwest::get(&url).await.expect("download");
        assert_eq!(download.status(), StatusCode::OK, "{url}");
        assert_eq!(download.headers()["content-type"], content_type);
        let disposition = download.headers()["content-disposition"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(
            disposition.starts_with("attachment;") && disposition.contains(filename),
            "{disposition}"
        );
        assert_eq!(
            download.bytes().await.expect("body").as_ref(),
            bytes.as_slice()
        );
    }
}

#[sqlx::test]
async fn round_trip_on_the_local_store(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("alice@example.com").await;
    let dir = app.storage_dir.clone();
    round_trip(&app, &tokens, |owner, id| {
        std::fs::read(dir.join(format!("documents/{owner}/{id}"))).expect("stored object")
    })
    .await;
}

#[sqlx::test]
async fn round_trip_on_s3_with_presigned_downloads(db: PgPool) {
    let s3 = S3Server::start();
    let config = s3.app_config();
    let overrides: Vec<(&str, &str)> = config.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::spawn_with(db, &overrides).await;
    let tokens = app.signed_in("alice@example.com").await;
    let bucket = s3.root.path().join(crate::helpers::S3_BUCKET);
    round_trip(&app, &tokens, |owner, id| {
        std::fs::read(bucket.join(format!("documents/{owner}/{id}"))).expect("stored object")
    })
    .await;

    // A presigned URL is S3's own, and S3 checks its signature.
    let document: Value = upload(&app, &tokens, pdf(), "a.pdf", "application/pdf")
        .await
        .json()
        .await
        .expect("json");
    let url = download_url(&app, &tokens, document["id"].as_str().expect("id")).await;
    assert!(
        url.starts_with(&s3.endpoint) && url.contains("X-Amz-Signature="),
        "{url}"
    );
    let signature_at = url.find("X-Amz-Signature=").expect("signature") + "X-Amz-Signature=".len();
    let mut tampered = url.clone().into_bytes();
    tampered[signature_at] = if tampered[signature_at] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let tampered = String::from_utf8(tampered).expect("ascii");
    assert_eq!(
        reqwest::get(&tampered).await.expect("request").status(),
        StatusCode::FORBIDDEN
    );
}

#[sqlx::test]
async fn presigned_s3_links_expire(db: PgPool) {
    let s3 = S3Server::start();
    let config = s3.app_config();
    let mut overrides: Vec<(&str, &str)> = config.iter().map(|(k, v)| (*k, v.as_str())).collect();
    overrides.push(("DOWNLOAD_URL_TTL_SECS", "1"));
    let app = TestApp::spawn_with(db, &overrides).await;
    let tokens = app.signed_in("ivan@example.com").await;
    let document: Value = upload(&app, &tokens, png(), "a.png", "image/png")
        .await
        .json()
        .await
        .expect("json");
    let url = download_url(&app, &tokens, document["id"].as_str().expect("id")).await;
    assert_eq!(
        reqwest::get(&url).await.expect("request").status(),
        StatusCode::OK
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        reqwest::get(&url).await.expect("request").status(),
        StatusCode::FORBIDDEN
    );
}

#[sqlx::test]
async fn large_uploads_use_multipart_on_s3_and_refusals_leave_nothing(db: PgPool) {
    let s3 = S3Server::start();
    let config = s3.app_config();
    let mut overrides: Vec<(&str, &str)> = config.iter().map(|(k, v)| (*k, v.as_str())).collect();
    overrides.push(("MAX_UPLOAD_BYTES", "20971520")); // 20 MiB
    let app = TestApp::spawn_with(db, &overrides).await;
    let tokens = app.signed_in("bob@example.com").await;

    // 19 MiB: four 5 MiB parts, so a real multipart upload.
    let mut big = pdf();
    big.resize(19 * MIB, b'x');
    let response = upload(&app, &tokens, big.clone(), "big.pdf", "application/pdf").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let document: Value = response.json().await.expect("json");
    assert_eq!(document["sha256"], sha256_hex(&big));
    let url = download_url(&app, &tokens, document["id"].as_str().expect("id")).await;
    let downloaded = reqwest::get(&url)
        .await
        .expect("download")
        .bytes()
        .await
        .expect("body");
    assert_eq!(sha256_hex(&downloaded), sha256_hex(&big));
    assert_eq!(s3.objects().len(), 1);

    let mut too_big = pdf();
    too_big.resize(20 * MIB + 1, b'x');
    let response = upload(&app, &tokens, too_big, "huge.pdf", "application/pdf").await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(
        s3.objects().len(),
        1,
        "the refused upload left an object: {:?}",
        s3.objects()
    );
}

#[sqlx::test]
async fn the_25_mib_limit_is_exact_and_a_refusal_leaves_nothing(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("carol@example.com").await;

    let mut exactly = pdf();
    exactly.resize(25 * MIB, b' ');
    let response = upload(&app, &tokens, exactly.clone(), "max.pdf", "application/pdf").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let document: Value = response.json().await.expect("json");
    assert_eq!(document["size_bytes"], 25 * MIB);
    assert_eq!(document["sha256"], sha256_hex(&exactly));
    let before = files_under(&app.storage_dir);
    assert_eq!(before.len(), 1, "{before:?}");

    let mut over = exactly;
    over.push(b' ');
    let response = upload(&app, &tokens, over, "over.pdf", "application/pdf").await;
    let body = assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("26214400")
    );
    assert_eq!(
        files_under(&app.storage_dir),
        before,
        "partial object left behind"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM documents")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(rows, 1);

    // A Content-Length that cannot fit is refused before the body is read.
    let response = app
        .client
        .post(app.url("/api/v1/documents/upload"))
        .bearer_auth(&tokens.access)
        .header("content-type", "multipart/form-data; boundary=x")
        .header("content-length", "999999999")
        .body("")
        .send()
        .await;
    if let Ok(response) = response {
        assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    }
}

#[sqlx::test]
async fn content_is_judged_by_its_bytes(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("dave@example.com").await;

    let response = upload(&app, &tokens, png(), "chart.pdf", "application/pdf").await;
    let body = assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("image/png"),
        "{body}"
    );

    let executable = std::fs::read("/bin/true").expect("a real executable");
    let response = upload(&app, &tokens, executable, "invoice.pdf", "application/pdf").await;
    let body = assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("executable"),
        "{body}"
    );

    let response = upload(
        &app,
        &tokens,
        b"\x00\x01\x02binary\x00".to_vec(),
        "a.txt",
        "text/plain",
    )
    .await;
    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    // Starts as text, turns binary past the sniffing window.
    let mut sneaky = "plain words ".repeat(2_000).into_bytes();
    sneaky.extend_from_slice(&[0u8; 64]);
    let response = upload(&app, &tokens, sneaky, "a.txt", "text/plain").await;
    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    let response = upload(&app, &tokens, Vec::new(), "empty.txt", "text/plain").await;
    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_error",
    )
    .await;

    // No claim (octet-stream) is fine: the content decides.
    let response = upload(&app, &tokens, jpeg(), "blob", "application/octet-stream").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let document: Value = response.json().await.expect("json");
    assert_eq!(document["content_type"], "image/jpeg");

    assert_eq!(
        files_under(&app.storage_dir).len(),
        1,
        "refused uploads left objects"
    );
}

#[sqlx::test]
async fn malformed_forms_are_refused_clearly(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("erin@example.com").await;
    let url = app.url("/api/v1/documents/upload");

    let not_multipart = app
        .client
        .post(&url)
        .bearer_auth(&tokens.access)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("request");
    assert_error(
        not_multipart,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    let wrong_part = multipart::Form::new().text("document", "hello");
    let response = app
        .client
        .post(&url)
        .bearer_auth(&tokens.access)
        .multipart(wrong_part)
        .send()
        .await
        .expect("request");
    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_error",
    )
    .await;

    let no_parts = app
        .client
        .post(&url)
        .bearer_auth(&tokens.access)
        .header("content-type", "multipart/form-data; boundary=b")
        .body("--b--\r\n")
        .send()
        .await
        .expect("request");
    assert_error(
        no_parts,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_error",
    )
    .await;

    let garbage = app
        .client
        .post(&url)
        .bearer_auth(&tokens.access)
        .header("content-type", "multipart/form-data; boundary=b")
        .body(
            "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhello",
        )
        .send()
        .await
        .expect("request");
    assert_error(garbage, StatusCode::BAD_REQUEST, "unreadable_body").await;

    // A part after the file is refused too, and the file is not kept.
    let trailing = multipart::Form::new()
        .part(
            "file",
            multipart::Part::bytes(b"hello".to_vec())
                .file_name("a.txt")
                .mime_str("text/plain")
                .expect("mime"),
        )
        .text("comment", "sent along");
    let response = app
        .client
        .post(&url)
        .bearer_auth(&tokens.access)
        .multipart(trailing)
        .send()
        .await
        .expect("request");
    let body = assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_error",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("comment")),
        "{body}"
    );
    let documents: i64 = sqlx::query_scalar("SELECT count(*) FROM documents")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(documents, 0);
    assert!(files_under(&app.storage_dir).is_empty(), "file kept");

    let anonymous = app
        .client
        .post(&url)
        .multipart(multipart::Form::new().text("file", "x"))
        .send()
        .await
        .expect("request");
    assert_error(anonymous, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

#[sqlx::test]
async fn hostile_filenames_cannot_steer_the_key(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("frank@example.com").await;
    let response = upload(
        &app,
        &tokens,
        b"root:x:0:0".to_vec(),
        "../../etc/passwd",
        "text/plain",
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let document: Value = response.json().await.expect("json");
    assert_eq!(document["filename"], "passwd");
    let me: Value = app.me(&tokens.access).await.json().await.expect("json");
    let expected = format!(
        "documents/{}/{}",
        me["id"].as_str().expect("id"),
        document["id"].as_str().expect("id")
    );
    assert_eq!(files_under(&app.storage_dir), vec![expected]);
    let outside = app.storage_dir.parent().expect("parent").join("etc/passwd");
    assert!(!outside.exists());
}

#[sqlx::test]
async fn listing_is_the_owners_newest_first_and_paginated(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let alice = app.signed_in("alice@example.com").await;
    let bob = app.signed_in("bob@example.com").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let response = upload(
            &app,
            &alice,
            format!("note {n}").into_bytes(),
            &format!("{n}.txt"),
            "text/plain",
        )
        .await;
        let document: Value = response.json().await.expect("json");
        ids.push(document["id"].as_str().expect("id").to_owned());
    }
    upload(&app, &bob, b"bob's".to_vec(), "bob.txt", "text/plain").await;

    let page: Value = get_json(&app, &alice, "/api/v1/documents?limit=2").await;
    assert_eq!(page["total"], 3);
    assert_eq!(page["limit"], 2);
    let first: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["id"].as_str().expect("id"))
        .collect();
    assert_eq!(first, vec![ids[2].as_str(), ids[1].as_str()]);

    let page: Value = get_json(&app, &alice, "/api/v1/documents?limit=2&offset=2").await;
    let rest: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["id"].as_str().expect("id"))
        .collect();
    assert_eq!(rest, vec![ids[0].as_str()]);

    let page: Value = get_json(&app, &bob, "/api/v1/documents").await;
    assert_eq!(page["total"], 1);

    for bad in ["limit=0", "limit=101", "offset=-1", "limit=abc"] {
        let response = get(&app, &alice, &format!("/api/v1/documents?{bad}")).await;
        assert!(
            matches!(
                response.status(),
                StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST
            ),
            "{bad}: {}",
            response.status()
        );
        let body: Value = response.json().await.expect("json");
        assert!(body["error"]["code"].is_string());
    }
}

#[sqlx::test]
async fn another_users_document_is_404_everywhere(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let alice = app.signed_in("alice@example.com").await;
    let mallory = app.signed_in("mallory@example.com").await;
    let document: Value = upload(&app, &alice, pdf(), "secret.pdf", "application/pdf")
        .await
        .json()
        .await
        .expect("json");
    let id = document["id"].as_str().expect("id");

    for path in [
        format!("/api/v1/documents/{id}"),
        format!("/api/v1/documents/{id}/download-url"),
    ] {
        assert_error(
            get(&app, &mallory, &path).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    let delete = app
        .client
        .delete(app.url(&format!("/api/v1/documents/{id}")))
        .bearer_auth(&mallory.access)
        .send()
        .await
        .expect("request");
    assert_error(delete, StatusCode::NOT_FOUND, "not_found").await;
    // Same answer as for an id that never existed, or one that cannot exist.
    let missing = get(
        &app,
        &mallory,
        &format!("/api/v1/documents/{}", uuid::Uuid::new_v4()),
    )
    .await;
    assert_error(missing, StatusCode::NOT_FOUND, "not_found").await;
    assert_error(
        get(&app, &mallory, "/api/v1/documents/not-a-uuid").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    assert_eq!(
        get(&app, &alice, &format!("/api/v1/documents/{id}"))
            .await
            .status(),
        StatusCode::OK
    );
}

#[sqlx::test]
async fn delete_removes_the_row_and_the_object(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("grace@example.com").await;
    let document: Value = upload(&app, &tokens, png(), "a.png", "image/png")
        .await
        .json()
        .await
        .expect("json");
    let id = document["id"].as_str().expect("id");
    assert_eq!(files_under(&app.storage_dir).len(), 1);

    let url = app.url(&format!("/api/v1/documents/{id}"));
    let response = app
        .client
        .delete(&url)
        .bearer_auth(&tokens.access)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(files_under(&app.storage_dir).is_empty());
    assert_error(
        get(&app, &tokens, &format!("/api/v1/documents/{id}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let again = app
        .client
        .delete(&url)
        .bearer_auth(&tokens.access)
        .send()
        .await
        .expect("request");
    assert_error(again, StatusCode::NOT_FOUND, "not_found").await;
}

#[sqlx::test]
async fn local_download_links_expire_and_reject_tampering(db: PgPool) {
    let app = TestApp::spawn_with(db, &[("DOWNLOAD_URL_TTL_SECS", "1")]).await;
    let tokens = app.signed_in("heidi@example.com").await;
    let document: Value = upload(&app, &tokens, b"top secret".to_vec(), "s.txt", "text/plain")
        .await
        .json()
        .await
        .expect("json");
    let id = document["id"].as_str().expect("id");
    let url = download_url(&app, &tokens, id).await;
    assert!(url.starts_with(&app.base), "{url}");
    let ok = reqwest::get(&url).await.expect("download");
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()["cache-control"], "private, no-store");
    assert_eq!(ok.bytes().await.expect("body").as_ref(), b"top secret");

    let parsed = url::Url::parse(&url).expect("url");
    let expires: i64 = parsed
        .query_pairs()
        .find(|(k, _)| k == "expires")
        .expect("expires")
        .1
        .parse()
        .expect("int");
    let signature = parsed
        .query_pairs()
        .find(|(k, _)| k == "signature")
        .expect("sig")
        .1
        .into_owned();
    let path = parsed.path().to_owned();

    let later = format!(
        "{}{path}?expires={}&signature={signature}",
        app.base,
        expires + 3600
    );
    assert_error(
        reqwest::get(&later).await.expect("request"),
        StatusCode::FORBIDDEN,
        "invalid_link",
    )
    .await;
    let mut flipped = signature.clone().into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let forged = format!(
        "{}{path}?expires={expires}&signature={}",
        app.base,
        String::from_utf8(flipped).expect("hex")
    );
    assert_error(
        reqwest::get(&forged).await.expect("request"),
        StatusCode::FORBIDDEN,
        "invalid_link",
    )
    .await;
    let other_doc = format!(
        "{}/api/v1/documents/{}/content?expires={expires}&signature={signature}",
        app.base,
        uuid::Uuid::new_v4()
    );
    assert_error(
        reqwest::get(&other_doc).await.expect("request"),
        StatusCode::FORBIDDEN,
        "invalid_link",
    )
    .await;

    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_error(
        reqwest::get(&url).await.expect("request"),
        StatusCode::FORBIDDEN,
        "link_expired",
    )
    .await;
}

#[sqlx::test]
async fn uploads_are_rate_limited_per_user(db: PgPool) {
    let app = TestApp::spawn_with(db, &[("UPLOAD_RATE_LIMIT_PER_MINUTE", "2")]).await;
    let alice = app.signed_in("alice@example.com").await;
    let bob = app.signed_in("bob@example.com").await;
    for _ in 0..2 {
        assert_eq!(
            upload(&app, &alice, b"hi".to_vec(), "a.txt", "text/plain")
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    assert_error(
        upload(&app, &alice, b"hi".to_vec(), "a.txt", "text/plain").await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    )
    .await;
    assert_eq!(
        upload(&app, &bob, b"hi".to_vec(), "b.txt", "text/plain")
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[sqlx::test]
async fn a_body_without_multipart_framing_cannot_grow_without_bound(db: PgPool) {
    // Chunked (no Content-Length) and never a boundary: multer would keep
    // buffering it; the whole body is bounded, so it is a 413.
    let app = TestApp::spawn_with(db, &[("MAX_UPLOAD_BYTES", "100000")]).await;
    let tokens = app.signed_in("kate@example.com").await;
    let chunks = (0..40).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 8192]));
    let response = app
        .client
        .post(app.url("/api/v1/documents/upload"))
        .bearer_auth(&tokens.access)
        .header("content-type", "multipart/form-data; boundary=never-sent")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("request");
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[sqlx::test]
async fn an_abandoned_s3_upload_leaves_nothing_behind(db: PgPool) {
    // 6 MiB goes out at once (a multipart upload starts at 5 MiB), then the
    // client stalls past the upload timeout: the handler is dropped mid-way,
    // and the in-progress multipart upload must still be aborted.
    let s3 = S3Server::start();
    let config = s3.app_config();
    let mut overrides: Vec<(&str, &str)> = config.iter().map(|(k, v)| (*k, v.as_str())).collect();
    overrides.push(("UPLOAD_TIMEOUT_SECS", "1"));
    let app = TestApp::spawn_with(db, &overrides).await;
    let tokens = app.signed_in("leo@example.com").await;

    let mut head = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.pdf\"\r\nContent-Type: application/pdf\r\n\r\n".to_vec();
    head.extend_from_slice(&pdf());
    head.resize(6 * MIB, b'x');
    let stalled = futures_util::stream::iter([Ok::<_, std::io::Error>(head)]).chain(
        futures_util::stream::once(async {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            Ok(b"\r\n--b--\r\n".to_vec())
        }),
    );
    use futures_util::StreamExt as _;
    let response = app
        .client
        .post(app.url("/api/v1/documents/upload"))
        .bearer_auth(&tokens.access)
        .header("content-type", "multipart/form-data; boundary=b")
        .body(reqwest::Body::wrap_stream(stalled))
        .send()
        .await
        .expect("request");
    assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "timeout").await;

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left = files_under(s3.root.path());
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: {left:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Readiness checks the bucket itself: a missing bucket is not ready
/// (S3 answers a HEAD in it with the 404 of a missing key).
#[sqlx::test]
async fn a_missing_bucket_is_not_ready(db: PgPool) {
    let s3 = S3Server::start();
    let mut config = s3.app_config();
    config[0].1 = "s3://no-such-bucket".to_owned();
    let overrides: Vec<(&str, &str)> = config.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::spawn_with(db, &overrides).await;
    let response = app
        .client
        .get(app.url("/api/v1/health/ready"))
        .send()
        .await
        .expect("readiness");
    let body = crate::helpers::assert_error(
        response,
        reqwest::StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
    )
    .await;
    assert_eq!(body["checks"]["storage"]["ok"], false, "{body}");
}

/// A token outlives its account by up to 15 minutes: using it is 401, not
/// a 500 from the foreign key, and nothing is left in storage.
#[sqlx::test]
async fn a_deleted_accounts_token_is_401(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let tokens = app.signed_in("gone@example.com").await;
    sqlx::query("DELETE FROM users WHERE email = 'gone@example.com'")
        .execute(&app.db)
        .await
        .expect("delete");
    let response = upload(&app, &tokens, b"Hello.".to_vec(), "a.txt", "text/plain").await;
    crate::helpers::assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    crate::helpers::assert_error(
        app.me(&tokens.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
}

/// `docflow user delete` takes the account's documents with it (rows and
/// stored bytes) and ends every session at once: each of its tokens is 401
/// on every route, not only where the account is looked up.
#[sqlx::test]
async fn deleting_an_account_ends_its_tokens_everywhere_at_once(db: PgPool) {
    let deployment = crate::helpers::Deployment::new(&db).await;
    let port = crate::helpers::free_port();
    let _api = deployment.start("api", port);
    let base = format!("http://127.0.0.1:{port}");
    let client = crate::helpers::client();
    let first = crate::helpers::sign_in_at(&client, &base, "leaving@example.com", None).await;
    // A second session (another device).
    let second = crate::helpers::log_in_at(
        &client,
        &base,
        "leaving@example.com",
        crate::helpers::PASSWORD,
    )
    .await;
    let part = reqwest::multipart::Part::bytes(b"Soon gone.".to_vec()).file_name("g.txt");
    let document: Value = client
        .post(format!("{base}/api/v1/documents/upload"))
        .bearer_auth(&first.access)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("json");
    let id = document["id"].as_str().expect("id").to_owned();
    assert_eq!(
        crate::helpers::files_under(deployment.storage_root()).len(),
        1
    );

    let output = deployment
        .command("user", crate::helpers::free_port())
        .args(["delete", "--email", "leaving@example.com"])
        .output()
        .expect("docflow user delete");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        said.contains("1 documents (0 objects could not be removed"),
        "{said}"
    );
    assert!(crate::helpers::files_under(deployment.storage_root()).is_empty());

    for access in [first.access.as_str(), second.access.as_str()] {
        for path in ["/documents", "/jobs", "/auth/me"] {
            let response = client
                .get(format!("{base}/api/v1{path}"))
                .bearer_auth(access)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
        let token = client
            .post(format!("{base}/api/v1/jobs/{id}/stream-token"))
            .bearer_auth(access)
            .send()
            .await
            .expect("request");
        assert_eq!(token.status(), StatusCode::UNAUTHORIZED);
    }
    let refresh = client
        .post(format!("{base}/api/v1/auth/refresh"))
        .json(&serde_json::json!({"refresh_token": first.refresh}))
        .send()
        .await
        .expect("refresh");
    assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED);

    // Asked again: nothing to delete, said so.
    let again = deployment
        .command("user", crate::helpers::free_port())
        .args(["delete", "--email", "leaving@example.com"])
        .output()
        .expect("docflow user delete");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no account with email"));
}

/// Presigned links name the host clients reach (`S3_PUBLIC_ENDPOINT_URL`),
/// not the one DocFlow uses inside its network, and work through it: the
/// signature covers the host. Here DocFlow talks to 127.0.0.1 and clients
/// to `localhost`, the same s3s-fs server under another name.
#[sqlx::test]
async fn presigned_links_point_at_the_public_endpoint(db: PgPool) {
    let s3 = S3Server::start();
    let public = s3.endpoint.replace("127.0.0.1", "localhost");
    let mut config = s3.app_config();
    config.push(("S3_PUBLIC_ENDPOINT_URL", public.clone()));
    let overrides: Vec<(&str, &str)> = config.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::spawn_with(db, &overrides).await;
    let tokens = app.signed_in("public@example.com").await;
    let bytes = b"Signed for the public host.".to_vec();
    let document: Value = upload(&app, &tokens, bytes.clone(), "p.txt", "text/plain")
        .await
        .json()
        .await
        .expect("json");
    let url = download_url(&app, &tokens, document["id"].as_str().expect("id")).await;
    assert!(url.starts_with(&public), "{url}");
    let download = reqwest::get(&url).await.expect("download");
    assert_eq!(download.status(), StatusCode::OK, "{url}");
    assert_eq!(
        download.bytes().await.expect("body").as_ref(),
        bytes.as_slice()
    );
}

//! The OpenAPI document is a contract: an accidental change fails here.
//! After an intended change, regenerate with `UPDATE_SNAPSHOTS=1 scripts/test openapi`
//! and review the diff of tests/snapshots/openapi.json.

use std::path::Path;

#[test]
fn openapi_matches_snapshot() {
    let spec = docflow::http::openapi();
    let rendered = serde_json::to_string_pretty(&spec).expect("serialise") + "\n";
    let snapshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/openapi.json");

    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(snapshot.parent().expect("parent")).expect("mkdir");
        std::fs::write(&snapshot, &rendered).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&snapshot)
        .expect("tests/snapshots/openapi.json missing; run with UPDATE_SNAPSHOTS=1");
    if expected != rendered {
        let first_difference = expected
            .lines()
            .zip(rendered.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map_or_else(
                || "lengths differ".to_owned(),
                |(n, (a, b))| format!("line {}:\n  snapshot: {a}\n  now:      {b}", n + 1),
            );
        panic!(
            "the OpenAPI document changed ({first_difference}).\n\
             If intended, run `UPDATE_SNAPSHOTS=1 scripts/test openapi` and commit the diff."
        );
    }
}

#[test]
fn every_operation_is_documented() {
    let spec = serde_json::to_value(docflow::http::openapi()).expect("serialise");
    assert_eq!(spec["openapi"], "3.1.0");
    let paths = spec["paths"].as_object().expect("paths");
    assert!(!paths.is_empty());
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            let id = op["operationId"].as_str();
            assert!(id.is_some(), "{method} {path} has no operationId");
            assert!(op["summary"].is_string(), "{method} {path} has no summary");
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|code| code.starts_with('2')),
                "{method} {path} documents no success response"
            );
            let secured = op
                .get("security")
                .is_some_and(|s| !s.as_array().expect("array").is_empty());
            if secured {
                assert!(
                    responses.contains_key("401"),
                    "{method} {path} lacks its 401"
                );
            }
        }
    }
    assert_eq!(
        spec["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
}

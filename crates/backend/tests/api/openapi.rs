//! The OpenAPI document: identical to the checked-in `openapi/backend.json`, served at
//! `/openapi.json`, and every operation it lists is a real route.

use serde_json::Value;

use crate::helpers::{ADMIN_TOKEN, TestApp, http};

/// The checked-in copy.
const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/backend.json");

#[test]
fn the_checked_in_document_is_what_the_code_generates() {
    let generated = guestbook_backend::openapi::json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(CHECKED_IN, &generated).expect("openapi/backend.json is writable");
    }
    let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
    assert!(
        checked_in == generated,
        "openapi/backend.json differs from what the code generates: run `make openapi` and commit it"
    );
}

#[tokio::test]
async fn the_document_is_served_and_every_operation_in_it_is_routed() {
    let app = TestApp::with_lua().await;
    let client = http();

    let served = client.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(served.status(), 200);
    let served: Value = served.json().await.unwrap();
    let generated: Value = serde_json::from_str(&guestbook_backend::openapi::json()).unwrap();
    assert_eq!(served, generated);
    assert_eq!(served["openapi"], "3.1.0");

    let paths = served["paths"].as_object().unwrap();
    assert!(paths.len() >= 12, "only {} paths documented", paths.len());
    for (path, item) in paths {
        for method in ["get", "post", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let request = client
                .request(method.to_uppercase().parse().unwrap(), app.url(path))
                .bearer_auth(ADMIN_TOKEN)
                .header("content-type", "application/json")
                .body("{}");
            // Headers are enough: the stream's body never ends.
            let answer = request.send().await.unwrap();
            let status = answer.status().as_u16();
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            if status == 404 {
                let body = answer.text().await.unwrap();
                assert!(
                    !body.contains("\"not found\""),
                    "{method} {path} is documented but falls through to the 404 fallback"
                );
            }
            let documented = item[method]["responses"]
                .as_object()
                .unwrap()
                .keys()
                .any(|code| code == &status.to_string() || code == &format!("{}XX", status / 100));
            assert!(
                documented,
                "{method} {path} answered {status}, which is not documented"
            );
        }
    }
}

/// `(METHOD, path)` of each row of the docs/api.md table under `heading` whose first cell starts
/// with a method, query strings dropped.
fn readme_operations(heading: &str) -> std::collections::BTreeSet<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md"))
        .expect("docs/api.md");
    let section = readme
        .split(heading)
        .nth(1)
        .expect("the heading is in docs/api.md");
    section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .filter_map(|line| line.split('|').nth(1))
        .filter_map(|cell| {
            let cell = cell.trim().trim_matches('`');
            let (method, rest) = cell.split_once(' ')?;
            if !["GET", "POST", "DELETE", "PUT", "PATCH"].contains(&method) {
                return None;
            }
            let path = rest.split(['?', '`', ',']).next()?.trim();
            Some((method.to_owned(), path.to_owned()))
        })
        .collect()
}

#[test]
fn the_docs_endpoint_table_lists_exactly_the_documented_operations() {
    let document: Value = serde_json::from_str(&guestbook_backend::openapi::json()).unwrap();
    let documented: std::collections::BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();

    let listed = readme_operations("## Backend endpoints\n");

    assert_eq!(listed, documented);
}

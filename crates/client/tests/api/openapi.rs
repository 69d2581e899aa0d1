//! The client's OpenAPI document: identical to the checked-in `openapi/client.json`, served at
//! `/openapi.json`, and its copy of the proxied `/api/messages` and `/api/books/{book}/messages`
//! operations agrees with the backend's own document.

use serde_json::Value;

use crate::helpers::{RedisServer, backend, client, client_settings, http};

/// The checked-in copy.
const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/client.json");

fn generated() -> Value {
    serde_json::from_str(&guestbook_client::openapi::json()).expect("the document is JSON")
}

#[test]
fn the_checked_in_document_is_what_the_code_generates() {
    let generated = guestbook_client::openapi::json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(CHECKED_IN, &generated).expect("openapi/client.json is writable");
    }
    let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
    assert!(
        checked_in == generated,
        "openapi/client.json differs from what the code generates: run `make openapi` and commit it"
    );
}

#[test]
fn the_proxied_operations_agree_with_the_backends_document() {
    let client: Value = generated();
    let backend: Value = serde_json::from_str(&guestbook_backend::openapi::json()).unwrap();
    for schema in [
        "Message",
        "NewMessageBody",
        "MessagePage",
        "Deleted",
        "ErrorBody",
    ] {
        assert_eq!(
            client["components"]["schemas"][schema], backend["components"]["schemas"][schema],
            "schema {schema} differs between the client's and the backend's documents"
        );
    }
    for (path, method) in [
        ("/api/messages", "get"),
        ("/api/messages", "post"),
        ("/api/messages", "delete"),
        ("/api/messages/stream", "get"),
        ("/api/books/{book}/messages", "get"),
        ("/api/books/{book}/messages", "post"),
        ("/api/books/{book}/messages", "delete"),
        ("/api/books/{book}/messages/stream", "get"),
    ] {
        let ours = &client["paths"][path][method];
        let theirs = &backend["paths"][path][method];
        let names = |operation: &Value| -> Vec<(String, Value)> {
            let mut names: Vec<(String, Value)> = operation["parameters"]
                .as_array()
                .map(|parameters| {
                    parameters
                        .iter()
                        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["schema"].clone()))
                        .collect()
                })
                .unwrap_or_default();
            names.sort_by(|a, b| a.0.cmp(&b.0));
            names
        };
        assert_eq!(
            names(ours),
            names(theirs),
            "{method} {path}: parameters differ"
        );
        for (status, answer) in theirs["responses"].as_object().unwrap() {
            let mine = &ours["responses"][status];
            assert!(
                !mine.is_null(),
                "{method} {path}: the backend's {status} is missing"
            );
            assert_eq!(
                mine["content"], answer["content"],
                "{method} {path} {status}: bodies differ"
            );
        }
    }
}

#[tokio::test]
async fn the_document_is_served() {
    let redis = RedisServer::start().await;
    let backend = backend(&redis).await;
    let client = client(client_settings(&backend)).await;

    let served = http()
        .get(client.url("/openapi.json"))
        .send()
        .await
        .unwrap();

    assert_eq!(served.status(), 200);
    let served: Value = served.json().await.unwrap();
    assert_eq!(served, generated());
    assert_eq!(served["openapi"], "3.1.0");
}

#[test]
fn the_docs_endpoint_table_lists_the_documented_operations() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md")).unwrap();
    let section = readme
        .split("## The client: `guestbook-client`\n")
        .nth(1)
        .unwrap();
    let table: Vec<&str> = section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .collect();
    let document = generated();
    // A row's first cell names one operation or more, each as `METHOD PATH`, comma-separated.
    let first_cell = |line: &str| line.split('|').nth(1).unwrap_or_default().trim().to_owned();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            // The buffered proxied operations, of every book, are one `/api/*` row.
            let proxied = (path.starts_with("/api/messages") || path.starts_with("/api/books/"))
                && !path.ends_with("/stream");
            let wanted = if proxied {
                "`/api/*`".to_owned()
            } else {
                format!("`{method} {path}`")
            };
            assert!(
                table
                    .iter()
                    .any(|line| first_cell(line).split(", ").any(|name| name == wanted)),
                "{method} {path} is documented but has no row in docs/api.md"
            );
        }
    }
    for line in &table[2..] {
        for name in first_cell(line).split(", ") {
            // Words outside backticks (`GET /`, other paths) name no operation.
            let Some(name) = name
                .strip_prefix('`')
                .and_then(|name| name.strip_suffix('`'))
            else {
                continue;
            };
            let Some((method, path)) = name.split_once(' ') else {
                continue; // `/api/*`
            };
            assert!(
                !document["paths"][path][method.to_lowercase().as_str()].is_null(),
                "docs/api.md row {name} is not in the document"
            );
        }
    }
}

//! `/api/books/{book}/messages` and its stream through the client: a book's messages stay in
//! that book, and a name outside the rule (in any spelling) is refused before the backend is
//! asked anything.

use serde_json::{Value, json};

use crate::helpers::{Stack, backend_requests, get_json, raw_request, read_events_until, stack};

/// Posts `text` by `a` to `path` on the client, expecting 201.
async fn post(http: &reqwest::Client, url: String, text: &str) {
    let created = http
        .post(url)
        .json(&json!({"author": "a", "text": text}))
        .send()
        .await
        .expect("the client answers");
    assert_eq!(created.status().as_u16(), 201, "{text}");
}

/// The texts of a page of messages.
fn texts(page: &Value) -> Vec<&str> {
    page["messages"]
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .filter_map(|message| message["text"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_posted_to_a_book_is_in_that_book_only() {
    let Stack(_redis, _backend, client, http) = stack(|_| {}).await;

    post(&http, client.url("/api/books/party/messages"), "in party").await;
    let party = get_json(&http, client.url("/api/books/party/messages")).await;
    let default = get_json(&http, client.url("/api/messages")).await;
    let other = get_json(&http, client.url("/api/books/other/messages")).await;

    assert_eq!(texts(&party), ["in party"], "{party}");
    assert_eq!(party["messages"][0]["id"], 1, "a book's ids start at 1");
    assert_eq!(default["messages"], json!([]), "{default}");
    assert_eq!(
        other["messages"],
        json!([]),
        "an unknown book is empty: {other}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_book_is_also_reached_by_its_name() {
    let Stack(_redis, _backend, client, http) = stack(|_| {}).await;

    post(&http, client.url("/api/messages"), "in default").await;
    let named = get_json(&http, client.url("/api/books/default/messages")).await;

    assert_eq!(texts(&named), ["in default"], "{named}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_books_query_reaches_the_backend_for_that_book() {
    let Stack(_redis, _backend, client, http) = stack(|_| {}).await;
    for n in 0..3 {
        post(&http, client.url("/api/books/b/messages"), &format!("m{n}")).await;
    }

    let page = get_json(
        &http,
        client.url("/api/books/b/messages?limit=%31&order=desc"),
    )
    .await;

    assert_eq!(texts(&page), ["m2"], "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_books_stream_carries_that_books_messages_only() {
    use futures_util::StreamExt;
    let Stack(_redis, _backend, client, http) = stack(|_| {}).await;
    post(&http, client.url("/api/messages"), "in default").await;
    post(&http, client.url("/api/books/live/messages"), "in other").await;

    let stream = http
        .get(client.url("/api/books/live/messages/stream?after=0"))
        .send()
        .await
        .expect("the client answers");
    assert_eq!(stream.status().as_u16(), 200);
    post(&http, client.url("/api/books/other/messages"), "not live").await;
    post(&http, client.url("/api/books/live/messages"), "in live").await;
    let mut events = stream.bytes_stream().boxed();
    let mut seen = String::new();
    read_events_until(&mut events, &mut seen, |seen| seen.contains("in live")).await;

    assert!(!seen.contains("in default"), "{seen}");
    assert!(!seen.contains("not live"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_book_names_get_400_and_reach_nothing() {
    let Stack(_redis, backend, client, http) = stack(|_| {}).await;
    let long = "x".repeat(guestbook_api::MAX_BOOK_NAME + 1);
    let before = backend_requests(&http, &backend).await;

    let mut answers = Vec::new();
    for name in [
        "a:b",
        long.as_str(),
        "%2e%2e",
        "..",
        "a%2fb",
        "{x}",
        "%7Bx%7D",
        "%41",
    ] {
        for (method, tail, body) in [
            ("GET", "messages", ""),
            ("POST", "messages", r#"{"author": "a", "text": "t"}"#),
            ("DELETE", "messages", ""),
            ("GET", "messages/stream", ""),
        ] {
            let target = format!("/api/books/{name}/{tail}");
            let answer = raw_request(&client, method, &target, body).await;
            answers.push((method, target, answer));
        }
    }
    let after = backend_requests(&http, &backend).await;
    let default = get_json(&http, client.url("/api/messages")).await;

    for (method, target, (status, body)) in &answers {
        let body: Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(*status, 400, "{method} {target}: {body}");
        assert_eq!(body["code"], "bad-request", "{method} {target}: {body}");
    }
    assert_eq!(after, before, "the backend saw none of them");
    assert!(texts(&default).is_empty(), "{default}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_outside_the_rule_is_told_the_rule() {
    let Stack(_redis, _backend, client, _http) = stack(|_| {}).await;

    let (status, body) = raw_request(&client, "GET", "/api/books/a:b/messages", "").await;

    assert_eq!(status, 400, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(body["error"], guestbook_api::BOOK_NAME_RULE, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_clear_of_a_book_is_refused_and_reaches_nothing() {
    let Stack(_redis, backend, client, http) = stack(|_| {}).await;
    let before = backend_requests(&http, &backend).await;

    let answer = http
        .delete(client.url("/api/books/party/messages"))
        .header("origin", "http://evil.example")
        .header("authorization", "Bearer anything")
        .send()
        .await
        .expect("the client answers");
    let status = answer.status().as_u16();
    let body: Value = answer.json().await.unwrap_or_default();

    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "cross-site request refused");
    assert_eq!(backend_requests(&http, &backend).await, before);
}

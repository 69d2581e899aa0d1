//! `messages --books N`: each book holds its own share, and the per-book verdict fails when
//! writes are lost in a book or land in another one.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use guestbook_api::{Message, MessagePage, NewMessageBody};
use guestbook_backend::store::AppendStrategy;
use serde::Deserialize;

use crate::helpers::{ADMIN_TOKEN, RedisServer, backend, client, json, loadtest, run_against};

/// The texts of every message in the book at `messages_url`, oldest first.
async fn texts(messages_url: &str) -> Vec<String> {
    let page: MessagePage = reqwest::get(format!("{messages_url}?limit=1000"))
        .await
        .expect("the backend answers")
        .json()
        .await
        .expect("a page");
    page.messages.into_iter().map(|m| m.text).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_books_each_hold_their_share_and_nothing_reaches_the_default_book() {
    let redis = RedisServer::start().await;
    let lua = backend(&redis, AppendStrategy::Lua).await;

    let output = loadtest(&[
        "messages",
        "--target",
        &lua.base,
        "--books",
        "5",
        "--run-id",
        "books-five",
        "--count",
        "100",
        "--concurrency",
        "20",
        "--idempotent-retries",
        "--clear",
        "--admin-token",
        ADMIN_TOKEN,
        "--json",
    ])
    .await;

    let report = json(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert_eq!(report["passed"], true);
    assert_eq!(report["verdict"]["found"], 100);
    assert_eq!(report["verdict"]["misplaced"], 0);
    let books = &report["books"];
    assert_eq!(books["count"], 5);
    assert_eq!(books["prefix"], "books-five");
    assert_eq!(
        (
            books["acknowledged_min"].as_u64(),
            books["acknowledged_max"].as_u64()
        ),
        (Some(20), Some(20))
    );
    let per_book = books["per_book"].as_array().expect("per_book");
    assert_eq!(per_book.len(), 5);
    // Read the books here too, not only through the tool's own read-back: book n holds
    // exactly the messages whose index is n modulo 5.
    for (slot, book) in per_book.iter().enumerate() {
        let name = format!("books-five-{slot}");
        assert_eq!(book["book"], name.as_str(), "{book}");
        assert_eq!(
            (book["acknowledged"].as_u64(), book["found"].as_u64()),
            (Some(20), Some(20)),
            "{book}"
        );
        let mut held = texts(&format!("{}/api/books/{name}/messages", lua.base)).await;
        held.sort();
        let mut expected: Vec<String> = (0..100)
            .filter(|i| i % 5 == slot)
            .map(|i| format!("books-five #{i}"))
            .collect();
        expected.sort();
        assert_eq!(held, expected, "{name}");
    }
    assert_eq!(
        texts(&format!("{}/api/messages", lua.base)).await,
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_book_verdict_fails_against_the_naive_strategy() {
    let output = run_against(
        AppendStrategy::Naive,
        &[
            "messages",
            "--books",
            "4",
            "--count",
            "400",
            "--concurrency",
            "100",
            "--json",
        ],
    )
    .await;

    let report = json(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert_eq!(report["passed"], false);
    let lost = report["verdict"]["lost"].as_u64().expect("lost");
    assert!(lost > 0, "{report}");
    let per_book = report["books"]["per_book"].as_array().expect("per_book");
    let per_book_lost: u64 = per_book.iter().filter_map(|b| b["lost"].as_u64()).sum();
    assert_eq!(per_book_lost, lost, "the books' losses add up to the run's");
    assert_eq!(
        report["verdict"]["misplaced"], 0,
        "naive loses, it does not misplace"
    );
}

/// One log shared by every book: a backend that ignores `{book}`.
#[derive(Clone, Default)]
struct OneLog(Arc<Mutex<Vec<Message>>>);

#[derive(Deserialize)]
struct PageQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

async fn book_blind_server() -> String {
    async fn read(
        State(log): State<OneLog>,
        Path(_book): Path<String>,
        Query(query): Query<PageQuery>,
    ) -> Json<MessagePage> {
        let log = log.0.lock().expect("not poisoned");
        let messages = log
            .iter()
            .filter(|m| m.id > query.after)
            .take(query.limit.unwrap_or(100))
            .cloned()
            .collect();
        Json(MessagePage { messages })
    }
    async fn append(
        State(log): State<OneLog>,
        Path(_book): Path<String>,
        Json(body): Json<NewMessageBody>,
    ) -> (StatusCode, Json<Message>) {
        let mut log = log.0.lock().expect("not poisoned");
        let message = Message {
            id: log.len() as u64 + 1,
            author: body.author,
            text: body.text,
            created_at: "2026-01-01T00:00:00Z".to_owned(),
        };
        log.push(message.clone());
        (StatusCode::CREATED, Json(message))
    }
    let app = Router::new()
        .route("/api/books/{book}/messages", get(read).post(append))
        .with_state(OneLog::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_in_another_book_than_their_own_are_misplaced_and_fail_the_run() {
    let blind = book_blind_server().await;

    let output = loadtest(&[
        "messages", "--target", &blind, "--books", "3", "--count", "30", "--json",
    ])
    .await;

    let report = json(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    let verdict = &report["verdict"];
    // Every book holds its own ten once, under the acknowledged ids: only placement is wrong.
    assert_eq!(verdict["found"], 30, "{report}");
    assert_eq!(
        (verdict["lost"].as_u64(), verdict["duplicated"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(verdict["misplaced"], 30, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_names_the_books_and_the_misplaced_messages() {
    let blind = book_blind_server().await;

    let output = loadtest(&[
        "messages",
        "--target",
        &blind,
        "--books",
        "3",
        "--book-prefix",
        "shelf",
        "--count",
        "6",
    ])
    .await;

    let table = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{table}");
    assert!(table.contains("FAILED"), "{table}");
    assert!(
        table.contains("books                3 (shelf-0 .. shelf-2)"),
        "{table}"
    );
    assert!(table.contains("acked per book       2 .. 2"), "{table}");
    assert!(table.contains("misplaced            6"), "{table}");
    assert!(table.contains("misplaced e.g."), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn books_work_through_the_client_on_the_same_paths() {
    let redis = RedisServer::start().await;
    let lua = backend(&redis, AppendStrategy::Lua).await;
    let front = client(&lua).await;

    let output = loadtest(&[
        "messages",
        "--target",
        &front.base,
        "--books",
        "3",
        "--run-id",
        "via-client",
        "--count",
        "30",
        "--concurrency",
        "6",
        "--idempotent-retries",
        "--json",
    ])
    .await;

    let report = json(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert_eq!(report["verdict"]["found"], 30);
    assert_eq!(report["books"]["acknowledged_min"], 10);
    // Straight from the backend: the client passed each message to its own book.
    let held = texts(&format!("{}/api/books/via-client-2/messages", lua.base)).await;
    assert_eq!(held.len(), 10, "{held:?}");
    assert!(held.contains(&"via-client #29".to_owned()), "{held:?}");
}

//! Bad input gets a clear error and changes nothing.

use crate::helpers::{TestApp, http, read_all};

/// (case, content type, idempotency key, body, expected status)
type Case = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Vec<u8>,
    u16,
);

#[tokio::test]
async fn invalid_posts_are_refused_with_the_right_status_and_write_nothing() {
    let app = TestApp::with_lua().await;
    let client = http();
    let long_author = "a".repeat(65);
    let long_text = "t".repeat(1001);
    let huge = format!(r#"{{"author":"a","text":"{}"}}"#, "x".repeat(17 * 1024));
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            Some("application/json"),
            None,
            br#"{"author":"a","#.to_vec(),
            400,
        ),
        (
            "an array of the fields (serde would take it as the struct)",
            Some("application/json"),
            None,
            br#"["Mary","Hello"]"#.to_vec(),
            422,
        ),
        (
            "not JSON at all",
            Some("application/json"),
            None,
            b"hello".to_vec(),
            400,
        ),
        (
            "empty body",
            Some("application/json"),
            None,
            Vec::new(),
            400,
        ),
        (
            "invalid UTF-8",
            Some("application/json"),
            None,
            b"{\"author\":\"\xff\",\"text\":\"b\"}".to_vec(),
            400,
        ),
        (
            "no content type",
            None,
            None,
            br#"{"author":"a","text":"b"}"#.to_vec(),
            415,
        ),
        (
            "form content type",
            Some("application/x-www-form-urlencoded"),
            None,
            b"author=a&text=b".to_vec(),
            415,
        ),
        (
            "missing text",
            Some("application/json"),
            None,
            br#"{"author":"a"}"#.to_vec(),
            422,
        ),
        (
            "wrong type",
            Some("application/json"),
            None,
            br#"{"author":"a","text":5}"#.to_vec(),
            422,
        ),
        (
            "unknown field",
            Some("application/json"),
            None,
            br#"{"author":"a","text":"b","id":9}"#.to_vec(),
            422,
        ),
        (
            "array body",
            Some("application/json"),
            None,
            br#"[1,2]"#.to_vec(),
            422,
        ),
        (
            "blank author",
            Some("application/json"),
            None,
            br#"{"author":"  ","text":"b"}"#.to_vec(),
            422,
        ),
        (
            "blank text",
            Some("application/json"),
            None,
            br#"{"author":"a","text":"\n"}"#.to_vec(),
            422,
        ),
        (
            "author too long",
            Some("application/json"),
            None,
            format!(r#"{{"author":"{long_author}","text":"b"}}"#).into_bytes(),
            422,
        ),
        (
            "text too long",
            Some("application/json"),
            None,
            format!(r#"{{"author":"a","text":"{long_text}"}}"#).into_bytes(),
            422,
        ),
        (
            "control character",
            Some("application/json"),
            None,
            br#"{"author":"a","text":"bell\u0007"}"#.to_vec(),
            422,
        ),
        (
            "newline in author",
            Some("application/json"),
            None,
            br#"{"author":"a\nb","text":"b"}"#.to_vec(),
            422,
        ),
        (
            "body over 16 KiB",
            Some("application/json"),
            None,
            huge.into_bytes(),
            413,
        ),
        (
            "key with a space",
            Some("application/json"),
            Some("bad key"),
            br#"{"author":"a","text":"b"}"#.to_vec(),
            400,
        ),
    ];

    for (case, content_type, key, body, expected) in cases {
        let mut request = client.post(app.url("/api/messages")).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.expect("answers");
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(status, expected, "{case}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{case}: a JSON error, got {body}"
        );
        let code = match expected {
            400 => "bad-request",
            413 => "too-large",
            415 => "unsupported-media-type",
            _ => "invalid",
        };
        assert_eq!(body["code"], code, "{case}: {body}");
    }
    assert!(
        read_all(&client, &app.base).await.is_empty(),
        "nothing was written"
    );
}

#[tokio::test]
async fn invalid_list_queries_are_refused() {
    let app = TestApp::with_lua().await;
    let client = http();
    for (query, expected) in [
        ("?limit=0", 400),
        ("?limit=1001", 400),
        ("?limit=-1", 400),
        ("?after=abc", 400),
        ("?order=newest", 400),
        ("?before=-3", 400),
        ("?after=1&bogus=2", 400),
        // Ids are signed 64-bit in Redis and int64 in the OpenAPI document (schemathesis).
        ("?after=9223372036854775808", 400),
        ("?before=18446744073709551615", 400),
        ("?after=9223372036854775807", 200),
        ("?after=0&limit=1000", 200),
        ("", 200),
    ] {
        let response = client
            .get(app.url(&format!("/api/messages{query}")))
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status().as_u16(), expected, "{query}");
    }
}

#[tokio::test]
async fn a_valid_message_is_stored_trimmed_and_as_literal_text() {
    let app = TestApp::with_lua().await;
    let client = http();
    let response = client
        .post(app.url("/api/messages"))
        .json(&serde_json::json!({"author": "  <b>Mary</b> ", "text": "<script>alert(1)</script>\r\nbye"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status().as_u16(), 201);

    let stored = read_all(&client, &app.base).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].author, "<b>Mary</b>");
    assert_eq!(stored[0].text, "<script>alert(1)</script>\nbye");
    assert!(
        time_is_rfc3339(&stored[0].created_at),
        "{}",
        stored[0].created_at
    );
}

fn time_is_rfc3339(value: &str) -> bool {
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).is_ok()
}

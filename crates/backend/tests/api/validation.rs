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

    // The default book's route and another book's take their bodies the same way.
    let both = ["/api/messages", "/api/books/validation/messages"];
    for (path, (case, content_type, key, body, expected)) in both
        .into_iter()
        .flat_map(|path| cases.iter().cloned().map(move |case| (path, case)))
    {
        let mut request = client.post(app.url(path)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.expect("answers");
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(status, expected, "{path} {case}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path} {case}: a JSON error, got {body}"
        );
        let code = match expected {
            400 => "bad-request",
            413 => "too-large",
            415 => "unsupported-media-type",
            _ => "invalid",
        };
        assert_eq!(body["code"], code, "{path} {case}: {body}");
    }
    assert!(
        read_all(&client, &app.base).await.is_empty(),
        "nothing was written"
    );
}

/// A body sent in chunks, with no Content-Length: the limit counts across chunks (413 once
/// past 16 KiB, nothing written) and a body within it is joined whole.
#[tokio::test]
async fn a_chunked_body_is_joined_and_limited_across_its_chunks() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::with_lua().await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let post = |chunks: Vec<Vec<u8>>| {
        let address = address.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(&address)
                .await
                .expect("connects");
            let mut request = format!(
                "POST /api/messages HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
                 transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            )
            .into_bytes();
            for chunk in chunks {
                request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                request.extend_from_slice(&chunk);
                request.extend_from_slice(b"\r\n");
            }
            request.extend_from_slice(b"0\r\n\r\n");
            // The server may answer 413 and close before reading it all.
            let _ = stream.write_all(&request).await;
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            String::from_utf8_lossy(&answer).into_owned()
        }
    };

    let whole = br#"{"author":"chunks","text":"joined from three"}"#;
    let answer = post(vec![
        whole[..5].to_vec(),
        whole[5..20].to_vec(),
        whole[20..].to_vec(),
    ])
    .await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains(r#""text":"joined from three""#), "{answer}");

    let mut big = br#"{"author":"a","text":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 17 * 1024));
    big.extend_from_slice(br#""}"#);
    let answer = post(big.chunks(1024).map(<[u8]>::to_vec).collect()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("too-large"), "{answer}");

    let client = http();
    let stored = read_all(&client, &app.base).await;
    assert_eq!(stored.len(), 1, "only the joined message: {stored:?}");
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

//! Property test of query parsing on `GET /api/messages`, through the real router and a real
//! `redis-server`: every generated query answers 200 exactly when each parameter is valid and
//! none is unknown, and 400 otherwise; never anything else. Run length: `PROPTEST_CASES`
//! (default 300) queries.

use axum::body::Body;
use guestbook_backend::store::AppendStrategy;
use guestbook_backend::{AppState, app};
use http::Request;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tower::ServiceExt;

use crate::helpers::{RedisServer, settings};

/// One query parameter: absent, or a value and whether the rule allows it.
type Param = Option<(String, bool)>;

fn id() -> impl Strategy<Value = Param> {
    prop_oneof![
        1 => Just(None),
        3 => (0..=i64::MAX as u64).prop_map(|id| Some((id.to_string(), true))),
        1 => (0..4u64).prop_map(|id| Some((id.to_string(), true))),
        1 => ((i64::MAX as u64 + 1)..=u64::MAX).prop_map(|id| Some((id.to_string(), false))),
        1 => prop::sample::select(vec!["-1", "abc", "1.5", "", "0x10", "1e3", "18446744073709551616", "%20"])
            .prop_map(|raw| Some((raw.to_owned(), false))),
    ]
}

fn order() -> impl Strategy<Value = Param> {
    prop_oneof![
        Just(None),
        prop::sample::select(vec!["asc", "desc"]).prop_map(|raw| Some((raw.to_owned(), true))),
        prop::sample::select(vec!["ASC", "newest", "", "asc,desc"])
            .prop_map(|raw| Some((raw.to_owned(), false))),
    ]
}

fn limit() -> impl Strategy<Value = Param> {
    prop_oneof![
        1 => Just(None),
        3 => (1..=1000u32).prop_map(|n| Some((n.to_string(), true))),
        1 => prop::sample::select(vec!["0", "1001", "-1", "x", "", "99999999999999999999"])
            .prop_map(|raw| Some((raw.to_owned(), false))),
    ]
}

#[test]
fn list_queries_answer_200_exactly_when_valid_and_400_otherwise() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let redis = runtime.block_on(RedisServer::start());
    let _entered = runtime.enter();
    let router = app(AppState::new(&settings(&redis, AppendStrategy::Lua)).expect("state"));
    runtime.block_on(async {
        for n in 0..5 {
            let post = Request::post("/api/messages")
                .header("content-type", "application/json")
                .body(Body::from(format!(r#"{{"author":"a","text":"m{n}"}}"#)))
                .expect("a request");
            let answer = router.clone().oneshot(post).await.expect("infallible");
            assert_eq!(answer.status(), 201);
        }
    });
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(300);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (id(), id(), order(), limit(), any::<bool>());
    runner
        .run(&strategy, |(after, before, order, limit, unknown)| {
            let mut valid = !unknown;
            let mut pairs = Vec::new();
            for (name, param) in [
                ("after", &after),
                ("before", &before),
                ("order", &order),
                ("limit", &limit),
            ] {
                if let Some((raw, ok)) = param {
                    valid &= ok;
                    pairs.push(format!("{name}={raw}"));
                }
            }
            if unknown {
                pairs.push("bogus=1".to_owned());
            }
            let uri = format!("/api/messages?{}", pairs.join("&"));
            let request = Request::get(&uri).body(Body::empty()).expect("a request");
            let (status, body) = runtime.block_on(async {
                let answer = router.clone().oneshot(request).await.expect("infallible");
                let status = answer.status().as_u16();
                let body = axum::body::to_bytes(answer.into_body(), 1 << 20)
                    .await
                    .expect("a body");
                (status, body)
            });
            let body: serde_json::Value = serde_json::from_slice(&body).expect("a JSON body");
            prop_assert_eq!(
                status,
                if valid { 200 } else { 400 },
                "{} answered {}: {}",
                uri,
                status,
                body
            );
            if valid {
                let ids: Vec<u64> = body["messages"]
                    .as_array()
                    .expect("messages")
                    .iter()
                    .map(|message| message["id"].as_u64().expect("an id"))
                    .collect();
                let newest_first = order.as_ref().is_some_and(|(raw, _)| raw == "desc");
                let ordered = ids.windows(2).all(|w| {
                    if newest_first {
                        w[0] > w[1]
                    } else {
                        w[0] < w[1]
                    }
                });
                prop_assert!(ordered, "{} is out of order: {:?}", uri, ids);
                let limit: usize = limit
                    .as_ref()
                    .map_or(100, |(raw, _)| raw.parse().expect("valid"));
                prop_assert!(ids.len() <= limit);
                let after: u64 = after
                    .as_ref()
                    .map_or(0, |(raw, _)| raw.parse().expect("valid"));
                prop_assert!(ids.iter().all(|&id| id > after));
            } else {
                prop_assert!(body["error"].is_string());
            }
            Ok(())
        })
        .expect("every generated query answered as the rule says");
}

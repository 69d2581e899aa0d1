//! Group commit of the default `lua` strategy: appends in flight together share one script
//! call, and still each get their own id, dense and ascending, and their own answer; and the
//! `watch` strategy's appends of one process queue instead of aborting one another.

use std::collections::HashMap;

use futures_util::future::join_all;
use guestbook_backend::store::AppendStrategy;

use crate::helpers::{TestApp, http, post, read_all};

const IN_FLIGHT: usize = 64;

#[tokio::test]
async fn sixty_four_appends_in_flight_get_dense_ascending_ids_and_their_own_answers() {
    // Arrange
    let app = TestApp::with_lua().await;
    let client = http();

    // Act: every request in flight at once, half of them with an Idempotency-Key and each
    // keyed one sent twice, so replays meet their originals in the same batches.
    let sends = (0..IN_FLIGHT).map(|i| {
        let (client, base) = (client.clone(), app.base.clone());
        async move {
            let text = format!("message {}", i % (IN_FLIGHT / 2));
            let key = (i % 2 == 0).then(|| format!("key-{}", i % (IN_FLIGHT / 2)));
            let answer = post(&client, &base, "group", &text, key.as_deref()).await;
            (text, key, answer.expect("answered"))
        }
    });
    let answers = join_all(sends).await;
    let stored = read_all(&client, &app.base).await;

    // Assert
    let mut created = Vec::new();
    let mut first_answers = HashMap::new();
    for (text, key, (status, replayed, body)) in &answers {
        let id = body["id"].as_u64();
        assert_eq!(body["text"], text.as_str(), "{text}: its own message");
        match status {
            201 => {
                assert!(!replayed, "{text}: a new message is no replay");
                created.push(id.expect("an id"));
            }
            200 => assert!(
                *replayed && key.is_some(),
                "{text}: only a keyed post replays"
            ),
            other => panic!("{text} ({key:?}) answered {other}: {body}"),
        }
        if let Some(key) = key {
            let first = *first_answers.entry(key.clone()).or_insert(id);
            assert_eq!(first, id, "{key}: the replay answers the original's id");
        }
    }
    assert_eq!(
        created.len(),
        IN_FLIGHT / 2 + IN_FLIGHT / 4,
        "one message per key"
    );
    created.sort_unstable();
    let dense: Vec<u64> = (1..=created.len() as u64).collect();
    assert_eq!(created, dense, "every created id once, dense from 1");
    let stored_ids: Vec<u64> = stored.iter().map(|message| message.id).collect();
    assert_eq!(stored_ids, dense, "the log holds them in id order");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("op=\"append_batch_script\""),
        "appends in flight together shared a script call"
    );
}

/// The `watch` strategy queues a process's own appends: 64 in flight on one backend, with
/// the defaults, all succeed and none aborts another (it used to answer 503 after its attempts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_watch_appends_in_flight_on_one_backend_never_conflict() {
    // Arrange
    let redis = crate::helpers::RedisServer::start().await;
    let settings = crate::helpers::settings(&redis, AppendStrategy::Watch);
    let app = TestApp::spawn(settings).await;
    let client = http();

    // Act
    let sends = (0..IN_FLIGHT).map(|i| {
        let (client, base) = (client.clone(), app.base.clone());
        async move { post(&client, &base, "watch", &format!("w{i}"), None).await }
    });
    let statuses: Vec<u16> = join_all(sends)
        .await
        .into_iter()
        .map(|answer| answer.expect("answered").0)
        .collect();

    // Assert
    assert!(statuses.iter().all(|status| *status == 201), "{statuses:?}");
    let conflicts = app
        .metrics()
        .await
        .lines()
        .find_map(|line| {
            line.strip_prefix("guestbook_watch_conflicts_total ")?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0);
    assert_eq!(
        conflicts, 0.0,
        "writers of one process never abort each other"
    );
    assert_eq!(read_all(&client, &app.base).await.len(), IN_FLIGHT);
}

//! Ids across a failover that loses unreplicated appends, with `REDIS_MIN_REPLICAS_ACK=1`.
//!
//! The scenario: the replicas are cut off, so an append (m3) lands on the primary but answers
//! 503; the primary is killed and Sentinel promotes a replica that never had m3. Every
//! acknowledged message must then reach an open stream and a resumed one exactly once, and
//! no id may name two messages: m3's id, which readers of the old primary saw, must not be
//! handed out again on the new one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use guestbook_backend::store::AppendStrategy;

use crate::helpers::{
    EventTap, RedisServer, SentinelServer, TestApp, http, post, read_all, settings,
};
use crate::sentinel::{post_until_acknowledged, wait_until_sentinels_agree};

/// Every (id, text) pair seen anywhere, to check that no id names two messages.
#[derive(Default)]
struct Names(BTreeMap<u64, BTreeSet<String>>);

impl Names {
    fn saw(&mut self, id: u64, text: &str) {
        self.0.entry(id).or_default().insert(text.to_owned());
    }

    fn saw_events(&mut self, events: &[(u64, serde_json::Value)]) {
        for (id, data) in events {
            self.saw(*id, data["text"].as_str().unwrap_or_default());
        }
    }

    fn assert_unique(&self) {
        for (id, texts) in &self.0 {
            assert_eq!(texts.len(), 1, "id {id} names {texts:?}");
        }
    }
}

/// Asserts that `events` hold each of `texts` exactly once and no id twice.
fn assert_exactly_once(what: &str, events: &[(u64, serde_json::Value)], texts: &[&str]) {
    for text in texts {
        let count = events
            .iter()
            .filter(|(_, data)| data["text"] == *text)
            .count();
        assert_eq!(
            count, 1,
            "{what}: {text} delivered {count} times in {events:?}"
        );
    }
    let ids: BTreeSet<u64> = events.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids.len(),
        events.len(),
        "{what}: an id delivered twice: {events:?}"
    );
}

async fn no_id_names_two_messages_across_a_failover(strategy: AppendStrategy) {
    // Arrange: a primary, two replicas, three sentinels, a backend that follows them.
    let mut primary = RedisServer::start().await;
    let first = RedisServer::start_replica_of(&primary).await;
    let second = RedisServer::start_replica_of(&primary).await;
    let mut sentinels = Vec::new();
    for _ in 0..3 {
        sentinels.push(SentinelServer::start(&primary, 2).await);
    }
    wait_until_sentinels_agree(&sentinels).await;
    let mut config = settings(&primary, strategy);
    config.redis_url = "redis://127.0.0.1:1".to_owned();
    config.redis_sentinels = Some(
        sentinels
            .iter()
            .map(SentinelServer::address)
            .collect::<Vec<_>>()
            .join(","),
    );
    config.redis_min_replicas_ack = 1;
    config.redis_wait_timeout_ms = 500;
    let app = TestApp::spawn(config).await;
    let client = http();
    let mut names = Names::default();

    let m1 = post_until_acknowledged(&client, &app.base, "m1").await;
    let live = EventTap::open(&client, &app.url("/api/messages/stream?after=0"), None).await;
    let m2 = post_until_acknowledged(&client, &app.base, "m2").await;
    names.saw(m1, "m1");
    names.saw(m2, "m2");
    live.wait_for_texts(&["m1", "m2"], Duration::from_secs(10))
        .await;

    // Act 1: cut the replicas off (stopped, and dropped by the primary) and post m3.
    first.pause();
    second.pause();
    let mut conn = primary.connection().await;
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query_async(&mut conn)
        .await
        .expect("CLIENT KILL");
    let (status, _, body) = post(&client, &app.base, "a", "m3", Some("m3"))
        .await
        .expect("the backend answers");
    assert_eq!(status, 503, "no replica can confirm m3: {body}");
    let on_old_primary = read_all(&client, &app.base).await;
    let m3 = on_old_primary
        .iter()
        .find(|message| message.text == "m3")
        .expect("m3 is on the old primary")
        .id;
    for message in &on_old_primary {
        names.saw(message.id, &message.text);
    }

    // Act 2: kill the primary; Sentinel promotes a replica that never had m3.
    primary.kill();
    first.resume();
    second.resume();
    let m4 = post_until_acknowledged(&client, &app.base, "m4").await;
    let m5 = post_until_acknowledged(&client, &app.base, "m5").await;
    names.saw(m4, "m4");
    names.saw(m5, "m5");

    // Assert: the open stream has every acknowledged message once (and never m3, which no
    // replica confirmed).
    let acknowledged = ["m1", "m2", "m4", "m5"];
    let streamed = live
        .wait_for_texts(&acknowledged, Duration::from_secs(30))
        .await;
    names.saw_events(&streamed);
    assert_exactly_once("the open stream", &streamed, &acknowledged);
    assert!(
        streamed.iter().all(|(_, data)| data["text"] != "m3"),
        "an unconfirmed append was streamed: {streamed:?}"
    );

    // A reader that resumes after m2, or after the id m3 had on the old primary, gets m4 and
    // m5.
    for resume_after in [m2, m3] {
        let resumed = EventTap::open(
            &client,
            &app.url("/api/messages/stream"),
            Some(resume_after),
        )
        .await;
        let events = resumed
            .wait_for_texts(&["m4", "m5"], Duration::from_secs(15))
            .await;
        names.saw_events(&events);
        assert_exactly_once(
            &format!("a stream resumed after {resume_after}"),
            &events,
            &["m4", "m5"],
        );
    }

    // And the new primary holds every acknowledged message once.
    let stored = read_all(&client, &app.base).await;
    for message in &stored {
        names.saw(message.id, &message.text);
    }
    for text in acknowledged {
        let count = stored.iter().filter(|message| message.text == text).count();
        assert_eq!(count, 1, "{text} stored {count} times: {stored:?}");
    }
    assert!(
        m4 > m3,
        "m4 ({m4}) is after every id handed out before ({m3})"
    );
    names.assert_unique();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_never_hands_out_an_id_twice_across_a_failover() {
    no_id_names_two_messages_across_a_failover(AppendStrategy::Lua).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_never_hands_out_an_id_twice_across_a_failover() {
    no_id_names_two_messages_across_a_failover(AppendStrategy::Watch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_never_hands_out_an_id_twice_across_a_failover() {
    no_id_names_two_messages_across_a_failover(AppendStrategy::Lock).await;
}

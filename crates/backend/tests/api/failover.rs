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
    EventTap, RedisServer, SentinelServer, TestApp, behind_sentinels, http, post, read_all,
    settings,
};
use crate::sentinel::{post_until_acknowledged, sentinel_cluster};

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
    let (mut primary, first, second, sentinels) = sentinel_cluster().await;
    let app = TestApp::spawn(behind_sentinels(&primary, strategy, &sentinels)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_the_primary_that_took_an_append_must_confirm_it_not_the_next_primary() {
    // Arrange: the first primary's replica is stopped, so nothing written there can be
    // confirmed; a second, independent primary has a healthy replica. Sentinel names the first.
    let first = RedisServer::start().await;
    let first_replica = RedisServer::start_replica_of(&first).await;
    let second = RedisServer::start().await;
    let _second_replica = RedisServer::start_replica_of(&second).await;
    let sentinel = SentinelServer::start(&first, 1).await;
    let mut config = settings(&first, AppendStrategy::Lua);
    config.redis.redis_url = "redis://127.0.0.1:1".to_owned();
    config.redis.redis_sentinels = Some(sentinel.address());
    config.redis.redis_min_replicas_ack = 1;
    config.redis.redis_wait_timeout_ms = 500;
    config.redis.redis_timeout_ms = 5_000;
    let app = TestApp::spawn(config).await;
    let client = http();
    post_until_acknowledged(&client, &app.base, "m1").await;
    first_replica.pause();
    // Each Redis call of the append now waits 2 s before it is sent (not the WAIT).
    let delayed = client
        .post(app.url("/config/redis"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .body(r#"{"delay_ms": 2000}"#)
        .send()
        .await
        .expect("answers");
    assert_eq!(delayed.status().as_u16(), 200);

    // Act: while the append waits, Sentinel is pointed at the second primary.
    let posting = {
        let client = client.clone();
        let base = app.base.clone();
        tokio::spawn(async move { post(&client, &base, "a", "m2", Some("m2")).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = redis::Client::open(format!("redis://{}", sentinel.address()))
        .expect("sentinel URL")
        .get_multiplexed_async_connection()
        .await
        .expect("sentinel answers");
    let _: () = redis::cmd("SENTINEL")
        .arg("REMOVE")
        .arg("mymaster")
        .query_async(&mut conn)
        .await
        .expect("SENTINEL REMOVE");
    let _: () = redis::cmd("SENTINEL")
        .arg("MONITOR")
        .arg("mymaster")
        .arg("127.0.0.1")
        .arg(second.port())
        .arg(1)
        .query_async(&mut conn)
        .await
        .expect("SENTINEL MONITOR");
    let (status, _, body) = posting
        .await
        .expect("the post task")
        .expect("the backend answers");

    // Assert: m2 went to the first primary, whose replica never confirmed it: not
    // acknowledged, whatever the second primary's replica says.
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| error.contains("not_replicated")),
        "{body}"
    );
}

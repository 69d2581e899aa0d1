//! Exactly-once across a Redis Cluster failover (issue 18, item 4).
//!
//! A cluster of 3 primaries with one replica each; two backends given the first node, with
//! `REDIS_MIN_REPLICAS_ACK=1` (defaults otherwise). Under load (2,400 keyed appends, 32 in
//! flight), the replica of the primary
//! serving the book's slot is paused and cut off for half a second (so the primary surely
//! holds appends it never replicated), then the primary is killed with SIGKILL and the replica resumed; the cluster promotes its replica by itself (the test cluster's
//! `cluster-node-timeout` is 1 s so this takes seconds, see `guestbook_testkit::cluster`),
//! and the killed node comes back empty as a replica of the promoted one (as a restarted pod
//! would): until then the promoted primary has no replica to confirm appends, and they answer
//! 503. Every acknowledged message must then be stored exactly once under its acknowledged id,
//! and no id may name two messages, in storage or on a live stream that watched throughout.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use guestbook_backend::store::AppendStrategy;
use guestbook_backend::store::sequence::EPOCH;
use guestbook_testkit::RedisCluster;

use crate::cluster::{in_cluster, serving_port};
use crate::helpers::{EventTap, Load, TestApp, Verdict, http, read_all, send_messages, verify};

// Enough that the fault lands mid-load however fast the appends go: with 600, a faster append
// path once finished the load between the last check and the pause, and nothing was at risk.
const LOAD: Load = Load {
    count: 2_400,
    in_flight: 32,
    // Long enough to outlast detection, election, and the old primary's return as a replica.
    attempts: 1_200,
    retry_pause: Duration::from_millis(25),
};

/// What a failover under load left behind.
struct Outcome {
    verdict: Verdict,
    /// Ids that name more than one message, anywhere they were seen.
    ids_naming_two: Vec<u64>,
    /// The highest id stored before the kill and the lowest one after.
    crossed_a_term: bool,
}

async fn kill_the_books_primary_under_load(min_replicas_ack: u32) -> Outcome {
    // Arrange
    let mut cluster = RedisCluster::start(3, 1).await;
    let slot = cluster.slot_of("{guestbook:default}").await;
    let owner = cluster.owner_of_slot(slot).await.expect("an owner");
    let replica = cluster.replicas_of(owner).await[0];
    let mut apps = Vec::new();
    for _ in 0..2 {
        let mut settings = in_cluster(&cluster.address(0), AppendStrategy::Lua);
        settings.redis.redis_min_replicas_ack = min_replicas_ack;
        apps.push(TestApp::spawn(settings).await);
    }
    let bases: Vec<String> = apps.iter().map(|app| app.base.clone()).collect();
    let client = http();
    let live = EventTap::open(&client, &apps[1].url("/api/messages/stream?after=0"), None).await;

    // Act: load; once part of it is stored, kill -9 the slot's primary.
    let load = {
        let (client, bases) = (client.clone(), bases.clone());
        tokio::spawn(async move { send_messages(&client, &bases, "failover", LOAD).await })
    };
    let mut before = 0;
    while before < LOAD.count / 8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        before = read_all(&client, &bases[0]).await.len();
        assert!(!load.is_finished(), "the load ended before the kill");
    }
    // What the primary already sent sits in the paused replica's socket and arrives on
    // resume: dropping the link is what keeps the next writes from it.
    cluster.pause(replica);
    let _: redis::Value = cluster
        .cmd(
            owner,
            redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("replica"),
        )
        .await
        .expect("CLIENT KILL");
    assert!(
        !load.is_finished(),
        "the load ended before the replica was cut off: the fault would put nothing at risk"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(owner);
    cluster.resume(replica);
    cluster.wait_for_promotion(replica).await;
    cluster.restart(owner).await;
    let sent = load.await.expect("the load task");

    // Assert
    let stored = read_all(&client, &bases[0]).await;
    let verdict = verify(&sent, &stored);
    let mut names: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for message in &stored {
        names
            .entry(message.id)
            .or_default()
            .insert(message.text.clone());
    }
    let texts: Vec<String> = stored.iter().map(|m| m.text.clone()).collect();
    let wanted: Vec<&str> = texts.iter().map(String::as_str).collect();
    for (id, data) in live.wait_for_texts(&wanted, Duration::from_secs(30)).await {
        let text = data["text"].as_str().unwrap_or_default().to_owned();
        names.entry(id).or_default().insert(text);
    }
    assert_eq!(
        serving_port(&client, &apps[0]).await,
        Some(cluster.ports()[replica]),
        "the backend follows the promoted replica"
    );
    Outcome {
        ids_naming_two: names
            .iter()
            .filter(|(_, texts)| texts.len() > 1)
            .map(|(id, _)| *id)
            .collect(),
        crossed_a_term: stored.iter().any(|m| m.id > EPOCH),
        verdict,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_append_is_lost_or_doubled_when_the_slots_primary_is_killed() {
    let outcome = kill_the_books_primary_under_load(1).await;
    let verdict = &outcome.verdict;
    eprintln!("REDIS_MIN_REPLICAS_ACK=1: {verdict:?}");
    assert!(verdict.exactly_once(), "{verdict:?}");
    assert_eq!(verdict.acknowledged, LOAD.count, "{verdict:?}");
    assert!(
        outcome.ids_naming_two.is_empty(),
        "{:?}",
        outcome.ids_naming_two
    );
    assert!(
        outcome.crossed_a_term,
        "the promoted primary began a new term"
    );
}

/// The proof that the check above can fail: without `REDIS_MIN_REPLICAS_ACK` the appends the
/// primary acknowledged while its replica was paused die with it. Ids stay unique all the
/// same (the promoted primary starts a new term past every id the backends saw).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_replica_acknowledgement_the_check_catches_lost_appends() {
    let outcome = kill_the_books_primary_under_load(0).await;
    let verdict = &outcome.verdict;
    eprintln!(
        "REDIS_MIN_REPLICAS_ACK=0: {} acknowledged, {} lost, {} duplicated, {} wrong id, \
         ids naming two messages: {:?}",
        verdict.acknowledged,
        verdict.lost.len(),
        verdict.duplicated.len(),
        verdict.wrong_id.len(),
        outcome.ids_naming_two
    );
    assert!(
        !verdict.lost.is_empty(),
        "the check must catch the losses: {verdict:?}"
    );
    assert!(outcome.ids_naming_two.is_empty(), "ids are never reused");
}

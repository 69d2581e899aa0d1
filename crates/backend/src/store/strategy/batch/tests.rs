//! The batch script against a real redis-server: one batch, each append's own answer.

use super::*;
use crate::domain::{IdempotencyRecord, NewMessage};
use crate::faults::Faults;
use crate::store::book::Book;
use crate::store::hop::Hop;
use crate::store::metrics::StoreMetrics;
use crate::store::strategy::AppendLimits;
use crate::store::{AppendOutcome, replay};
use guestbook_testkit::RedisServer;

struct Fixture {
    _redis: RedisServer,
    conn: redis::aio::MultiplexedConnection,
    ctx: Arc<Ctx>,
    book: Arc<Book>,
    links: Arc<PrimaryLinks>,
}

async fn fixture() -> Fixture {
    fixture_keeping(None).await
}

/// `max_messages`: the retention cap, when a test needs it smaller than a batch.
async fn fixture_keeping(max_messages: Option<u64>) -> Fixture {
    let redis = RedisServer::start().await;
    let mut settings = crate::Settings::for_tests(&redis.url());
    if let Some(cap) = max_messages {
        settings.redis.max_messages = cap;
    }
    let args = &settings.redis;
    let book = Arc::new(Book::new(&args.guestbook_name));
    let metrics = StoreMetrics::register(&mut prometheus_client::registry::Registry::default());
    let links = Arc::new(PrimaryLinks::new(&redis.url(), args).expect("links"));
    let hop = Hop::new(
        Arc::new(Faults::default()),
        args.redis_timeout(),
        metrics.clone(),
    );
    let limits = AppendLimits::new(args);
    let ctx = Arc::new(Ctx {
        hop,
        limits,
        metrics,
    });
    let conn = redis.connection().await;
    Fixture {
        _redis: redis,
        conn,
        ctx,
        book,
        links,
    }
}

fn message(text: &str) -> NewMessage {
    NewMessage::new("batch", text).expect("a valid message")
}

fn request(book: &Arc<Book>, message: &NewMessage, key: Option<&str>) -> AppendRequest {
    let at = "2026-01-01T00:00:00Z";
    AppendRequest {
        book: Arc::clone(book),
        tail: message.json_tail_at(at),
        record: key.map(|key| {
            let suffix = IdempotencyRecord::suffix(at, message);
            (book.keys().idempotency(key), suffix)
        }),
        known: 0,
    }
}

/// Sends `appends` as one batch and judges each answer as the store does.
async fn one_batch(f: &Fixture, appends: &[(NewMessage, Option<&str>)]) -> Vec<String> {
    let mut jobs = Vec::new();
    let mut answers = Vec::new();
    for (message, key) in appends {
        let (reply, answer) = oneshot::channel();
        let request = request(&f.book, message, *key);
        let links = Arc::clone(&f.links);
        jobs.push(Job {
            links,
            request,
            reply,
        });
        answers.push(answer);
    }
    commit_on(&f.ctx, &f.links, jobs).await;
    let mut verdicts = Vec::new();
    for ((message, _), answer) in appends.iter().zip(answers) {
        verdicts.push(match answer.await.expect("answered") {
            Ok(Written::Created(raw)) => format!("created {}", raw.id),
            Ok(Written::Recorded(record)) => match replay(&record, message) {
                Ok(AppendOutcome::Replayed(raw)) => format!("replayed {}", raw.id),
                Ok(other) => format!("{other:?}"),
                Err(err) => format!("error {err}"),
            },
            Err(err) => format!("error {}", err.label()),
        });
    }
    verdicts
}

async fn log_ids(f: &Fixture) -> Vec<u64> {
    log(f).await.iter().map(|message| message.id).collect()
}

async fn log(f: &Fixture) -> Vec<crate::store::RawMessage> {
    let mut conn = f.conn.clone();
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(&f.book.keys().log)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("XRANGE");
    crate::store::entry::entries_to_messages(entries).expect("entries")
}

#[tokio::test]
async fn each_append_of_a_batch_gets_its_own_answer_and_ids_stay_dense() {
    let f = fixture().await;
    let first = message("first");
    assert_eq!(
        one_batch(&f, &[(first.clone(), Some("old"))]).await,
        ["created 1"]
    );

    let verdicts = one_batch(
        &f,
        &[
            (message("new"), None),
            (first, Some("old")),
            (message("another body"), Some("old")),
            (message("keyed"), Some("new")),
            (message("keyed"), Some("new")),
            (message("keyed, changed"), Some("new")),
            (message("last"), None),
        ],
    )
    .await;

    assert_eq!(
        verdicts,
        [
            "created 2",
            "replayed 1",
            "KeyReused",
            "created 3",
            "replayed 3",
            "KeyReused",
            "created 4"
        ]
    );
    assert_eq!(log_ids(&f).await, [1, 2, 3, 4]);
}

#[tokio::test]
async fn a_failing_first_log_write_fails_the_whole_batch_and_writes_nothing() {
    let f = fixture().await;
    let mut conn = f.conn.clone();
    let _: () = redis::cmd("SET")
        .arg(&f.book.keys().log)
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .expect("SET");
    let verdicts = one_batch(
        &f,
        &[
            (message("a"), Some("a")),
            (message("b"), None),
            (message("c"), Some("c")),
        ],
    )
    .await;
    assert_eq!(verdicts, ["error redis", "error redis", "error redis"]);
    let keys = f.book.keys();
    for key in [keys.seq.clone(), keys.term.clone(), keys.idempotency("a")] {
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("EXISTS");
        assert!(!exists, "wrote {key}");
    }
}

#[tokio::test]
async fn a_created_answer_is_the_message_the_log_holds_byte_for_byte() {
    let f = fixture().await;
    let mut answered = Vec::new();
    // A lone append goes through append.lua, two through append_batch.lua.
    let rounds = [
        vec![(message("alone \"quoted\""), None)],
        vec![(message("one"), None), (message("two"), Some("k"))],
    ];
    for appends in rounds {
        // Each script must load itself again after a flush (NOSCRIPT), as after a restart.
        let mut conn = f.conn.clone();
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .expect("SCRIPT FLUSH");
        let mut jobs = Vec::new();
        let mut answers = Vec::new();
        for (message, key) in &appends {
            let (reply, answer) = oneshot::channel();
            jobs.push(Job {
                links: Arc::clone(&f.links),
                request: request(&f.book, message, *key),
                reply,
            });
            answers.push(answer);
        }
        commit_on(&f.ctx, &f.links, jobs).await;
        for answer in answers {
            match answer.await.expect("answered") {
                Ok(Written::Created(raw)) => answered.push(raw),
                other => panic!("not created: {other:?}"),
            }
        }
    }
    assert_eq!(answered.len(), 3);
    assert_eq!(answered, log(&f).await);
}

/// The batch trims once, after its last entry: what it keeps must be what trimming after every
/// entry would keep, the newest `MAX_MESSAGES`, when the batch alone exceeds the cap and when
/// the log was full before it.
#[tokio::test]
async fn a_batch_keeps_exactly_the_newest_entries_up_to_the_cap() {
    let f = fixture_keeping(Some(3)).await;
    let five: Vec<_> = (1..=5).map(|n| (message(&format!("m{n}")), None)).collect();
    assert_eq!(
        one_batch(&f, &five).await,
        [
            "created 1",
            "created 2",
            "created 3",
            "created 4",
            "created 5"
        ]
    );
    assert_eq!(log_ids(&f).await, [3, 4, 5]);

    let two: Vec<_> = (6..=7).map(|n| (message(&format!("m{n}")), None)).collect();
    one_batch(&f, &two).await;
    let kept = log(&f).await;
    assert_eq!(kept.iter().map(|m| m.id).collect::<Vec<_>>(), [5, 6, 7]);
    assert!(kept[2].json.contains("\"text\":\"m7\""), "{}", kept[2].json);
}

/// The same with the default cap (`MAX_MESSAGES` 10,000) and full batches: past the cap, every
/// batch trims exactly as many entries as it adds.
#[tokio::test]
async fn with_the_default_cap_full_batches_keep_exactly_the_newest_ten_thousand() {
    let f = fixture().await;
    let cap = f.ctx.limits.max_messages;
    assert_eq!(cap, 10_000, "the default retention cap");
    let batch: Vec<_> = (0..MAX_BATCH)
        .map(|n| (message(&format!("m{n}")), None))
        .collect();
    let batches = cap / MAX_BATCH as u64 + 2;
    for _ in 0..batches {
        let verdicts = one_batch(&f, &batch).await;
        assert!(
            verdicts.iter().all(|v| v.starts_with("created")),
            "{verdicts:?}"
        );
    }
    let written = batches * MAX_BATCH as u64;
    let ids = log_ids(&f).await;
    assert_eq!(ids.len() as u64, cap);
    assert_eq!(ids.first().copied(), Some(written - cap + 1));
    assert_eq!(ids.last().copied(), Some(written));
}

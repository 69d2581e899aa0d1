//! `GET /api/messages` pages: oldest first after an id (followers), newest first before an id
//! (people reading), for the atomic strategies and the naive one alike.

use guestbook_backend::store::AppendStrategy;

use crate::helpers::{RedisServer, TestApp, get_json, http, post, settings};

fn ids(page: &serde_json::Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .expect("a messages array")
        .iter()
        .map(|m| m["id"].as_u64().expect("a numeric id"))
        .collect()
}

#[tokio::test]
async fn pages_walk_both_ways_without_gaps_or_overlap() {
    for strategy in [AppendStrategy::Lua, AppendStrategy::Naive] {
        let redis = RedisServer::start().await;
        let app = TestApp::spawn(settings(&redis, strategy)).await;
        let client = http();
        for i in 1..=7 {
            post(&client, &app.base, "a", &format!("m{i}"), None)
                .await
                .expect("post");
        }
        let page = async |query: &str| {
            get_json(&client, &app.url(&format!("/api/messages?{query}"))).await
        };

        assert_eq!(
            ids(&page("order=desc&limit=3").await),
            [7, 6, 5],
            "{strategy:?}"
        );
        assert_eq!(ids(&page("order=desc&before=5&limit=3").await), [4, 3, 2]);
        assert_eq!(ids(&page("order=desc&before=2&limit=3").await), [1]);
        assert_eq!(ids(&page("order=desc&before=1").await), Vec::<u64>::new());
        assert_eq!(ids(&page("after=2&before=6").await), [3, 4, 5]);
        assert_eq!(ids(&page("order=desc&after=2&before=6").await), [5, 4, 3]);
        assert_eq!(ids(&page("after=5").await), [6, 7]);
        assert_eq!(ids(&page("order=asc&limit=2").await), [1, 2]);
        assert_eq!(ids(&page("before=0").await), Vec::<u64>::new());
        assert_eq!(ids(&page("after=3&before=4").await), Vec::<u64>::new());
    }
}

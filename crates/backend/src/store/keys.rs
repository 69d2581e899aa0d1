//! Redis key names. Every key of one guestbook shares the hash tag `{guestbook:NAME}`, so a
//! multi-key script or transaction stays in one slot and the design holds on Redis Cluster.

/// The keys of one guestbook.
#[derive(Debug, Clone)]
pub struct Keys {
    tag: String,
    /// Counter that hands out message ids (INCR).
    pub seq: String,
    /// The message log: a Redis stream whose entry ids are `<message id>-0`.
    pub log: String,
    /// The lock strategy's lock (SET NX PX).
    pub lock: String,
    /// Counter that hands out fencing tokens.
    pub fence_seq: String,
    /// Highest fencing token that has touched the data.
    pub fence_seen: String,
    /// The naive strategy's single serialized value (seed 000's design).
    pub naive: String,
    /// Written before each `WAIT` (see `store::replication`); its value means nothing.
    pub replication_fence: String,
    /// The replication id of the primary that last handed out ids (see `store::sequence`).
    pub term: String,
}

impl Keys {
    /// Keys for the guestbook called `name` (already validated as `[A-Za-z0-9_-]+`).
    pub fn new(name: &str) -> Self {
        let tag = format!("{{guestbook:{name}}}");
        Self {
            seq: format!("{tag}:seq"),
            log: format!("{tag}:log"),
            lock: format!("{tag}:lock"),
            fence_seq: format!("{tag}:fence-seq"),
            fence_seen: format!("{tag}:fence-seen"),
            naive: format!("{tag}:naive"),
            replication_fence: format!("{tag}:replication-fence"),
            term: format!("{tag}:term"),
            tag,
        }
    }

    /// The idempotency record for one key.
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.tag)
    }

    /// A SCAN pattern matching every idempotency record. `{`, `}` and `*` are glob-escaped
    /// where needed: only `[`, `]`, `*`, `?` and `\` are special to SCAN MATCH.
    pub fn idempotency_pattern(&self) -> String {
        format!("{}:idem:*", self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_same_hash_tag() {
        let keys = Keys::new("default");
        for key in [
            &keys.seq,
            &keys.log,
            &keys.lock,
            &keys.fence_seq,
            &keys.replication_fence,
            &keys.term,
            &keys.fence_seen,
            &keys.naive,
        ] {
            assert!(key.starts_with("{guestbook:default}:"), "{key}");
        }
        assert!(
            keys.idempotency("k1")
                .starts_with("{guestbook:default}:idem:")
        );
    }
}

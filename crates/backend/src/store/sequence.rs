//! Message ids that are never handed out twice, across primaries.
//!
//! Ids come from a counter in Redis (the *sequence*), advanced in the same atomic step that
//! appends the message. Replication is asynchronous, so when a replica is promoted it may lack
//! the last appends of the old primary, ids included: continuing its copy of the sequence
//! would hand those ids out again, to other messages. A reader that saw the old id 3 (a live
//! stream, a listing) would then skip the new id 3 for ever, and `Last-Event-ID: 3` would name
//! two messages.
//!
//! So every primary starts a *term*. Each server has a replication id (`master_replid` in
//! `INFO replication`) that is new on every promotion and every restart; the term key remembers
//! the replication id under which ids were last handed out. The first append on a server whose
//! replication id differs from the term key jumps the sequence to the next multiple of
//! [`EPOCH`] that lies at least half an epoch above both the sequence and the highest id the
//! appending backend has seen, then records the new term. Ids the old primary handed out but
//! never replicated lie below the jump (it would have needed 500 million unreplicated appends
//! to reach it), so ids stay unique and ascending; they are no longer dense.
//!
//! A guestbook that never had a message (no term, no sequence) starts at 1. The same check
//! runs inside each strategy's atomic step (the Lua scripts share `scripts/sequence.lua`; the
//! `watch` strategy applies [`continue_from`] inside its transaction), so no append can slip
//! between a primary change and the jump.

/// Ids jump to a multiple of this on a new term: large enough that no old primary can have
/// handed out that many ids unreplicated, small enough that JavaScript's exact integers (2^53)
/// last for millions of failovers, and readable (`3000000001` after three).
pub const EPOCH: u64 = 1_000_000_000;

/// Builds a script from `scripts/sequence.lua` and the named script in `scripts/`. The
/// `#!lua` line makes Redis refuse the whole script when it is out of memory instead of
/// failing it half-way.
macro_rules! script_with_sequence {
    ($name:literal) => {
        redis::Script::new(concat!(
            "#!lua\n",
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/store/scripts/sequence.lua"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/store/scripts/",
                $name
            ))
        ))
    };
}
pub(crate) use script_with_sequence;

/// The Rust twin of `sequence_base` in `scripts/sequence.lua`: the sequence value to continue
/// from, and whether this is a new term (the caller then stores `term` in the term key).
pub fn continue_from(seq: u64, stored_term: Option<&str>, term: &str, known: u64) -> (u64, bool) {
    if stored_term == Some(term) {
        return (seq, false);
    }
    let base = seq.max(known);
    if stored_term.is_none() && base == 0 {
        return (0, true);
    }
    let mut next = (base / EPOCH + 1) * EPOCH;
    if next - base < EPOCH / 2 {
        next += EPOCH;
    }
    (next, true)
}

/// The replication id in an `INFO replication` answer.
pub fn replication_id(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|line| line.trim_end().strip_prefix("master_replid:"))
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_term_continues_the_sequence() {
        assert_eq!(continue_from(41, Some("a"), "a", 99), (41, false));
    }

    #[test]
    fn a_new_guestbook_starts_at_one() {
        assert_eq!(continue_from(0, None, "a", 0), (0, true));
    }

    #[test]
    fn a_new_term_jumps_at_least_half_an_epoch_past_every_id_seen() {
        assert_eq!(continue_from(3, Some("old"), "new", 0), (EPOCH, true));
        assert_eq!(continue_from(2, Some("old"), "new", 3), (EPOCH, true));
        // Too close to the next boundary: one more epoch.
        assert_eq!(
            continue_from(EPOCH - 10, Some("old"), "new", 0),
            (2 * EPOCH, true)
        );
        // A restart that lost everything, seen by a backend that remembers id 7.
        assert_eq!(continue_from(0, None, "new", 7), (EPOCH, true));
        for seq in [0, 1, EPOCH / 2, EPOCH, 5 * EPOCH + 123] {
            let (next, _) = continue_from(seq, Some("old"), "new", 0);
            assert!(next >= seq + EPOCH / 2, "{seq} -> {next}");
        }
    }

    #[test]
    fn the_replication_id_is_read_from_info() {
        let info =
            "# Replication\r\nrole:master\r\nmaster_replid:7ad8f6f7\r\nmaster_replid2:0000\r\n";
        assert_eq!(replication_id(info), Some("7ad8f6f7"));
        assert_eq!(replication_id("role:master\r\n"), None);
    }
}

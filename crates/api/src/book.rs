//! Guestbook (book) names: `/api/books/{book}/messages` names one, `GUESTBOOK_NAME` the
//! default. A name becomes part of Redis keys (`{guestbook:NAME}:log`), so it is held to a
//! small alphabet: no hash-tag braces, no key separator `:`, no glob characters, no
//! dot-segments, nothing that needs encoding in a URL.

/// Longest book name, in bytes (all ASCII).
pub const MAX_BOOK_NAME: usize = 64;

/// Why a book name was refused, as one line for an error body.
pub const BOOK_NAME_RULE: &str = "a book name is 1-64 characters of A-Z, a-z, 0-9, '-' and '_'";

/// Whether `name` is a valid book name: 1 to [`MAX_BOOK_NAME`] of `[A-Za-z0-9_-]`.
pub fn is_valid_book_name(name: &str) -> bool {
    (1..=MAX_BOOK_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_valid() {
        for name in ["default", "a", "Party-2026_b", &"x".repeat(MAX_BOOK_NAME)] {
            assert!(is_valid_book_name(name), "{name}");
        }
    }

    #[test]
    fn names_that_could_change_a_key_or_a_path_are_refused() {
        for name in [
            "",
            &"x".repeat(MAX_BOOK_NAME + 1),
            "a:b",
            "{a}",
            "a*",
            "a?",
            "a[b]",
            "..",
            ".",
            "a/b",
            "a%2fb",
            "a b",
            "é",
            "a\\b",
        ] {
            assert!(!is_valid_book_name(name), "{name:?}");
        }
    }
}

//! The `Idempotency-Key` header: a client's name for one logical write, so a retried POST
//! returns the first answer instead of writing twice.

/// Longest key accepted, in bytes (Stripe's limit is 255 too).
pub const MAX_KEY_LEN: usize = 255;

/// A syntactically valid idempotency key: 1–255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a header value.
    pub fn parse(raw: &[u8]) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > MAX_KEY_LEN {
            return Err(format!(
                "Idempotency-Key must be 1-{MAX_KEY_LEN} characters"
            ));
        }
        if !raw.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err("Idempotency-Key must be visible ASCII without spaces".into());
        }
        // Checked above: every byte is ASCII, hence valid UTF-8.
        Ok(Self(String::from_utf8_lossy(raw).into_owned()))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert!(IdempotencyKey::parse(b"0b6c1f9e-7c1a-4b8e-9f3a-1c2d3e4f5a6b").is_ok());
        assert!(IdempotencyKey::parse(b"").is_err());
        assert!(IdempotencyKey::parse(b"has space").is_err());
        assert!(IdempotencyKey::parse("é".as_bytes()).is_err());
        assert!(IdempotencyKey::parse(&[b'k'; 256]).is_err());
        assert!(IdempotencyKey::parse(&[b'k'; 255]).is_ok());
    }
}

//! Secrets out of logs, errors and answers: URLs with their passwords replaced.

/// What replaces a secret.
pub const REDACTED: &str = "***";

/// `raw` with any password replaced: the `user:password@` part of the authority, and the
/// values of `password=` / `pass=` query parameters (redis+unix URLs carry it there).
/// Anything that is not a URL comes back unchanged.
pub fn url(raw: &str) -> String {
    let mut out = raw.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = out[authority_start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |end| authority_start + end);
        if let Some(at) = out[authority_start..authority_end].rfind('@') {
            let userinfo = &out[authority_start..authority_start + at];
            let user = userinfo.split(':').next().unwrap_or("");
            let replacement = if userinfo.contains(':') {
                format!("{user}:{REDACTED}")
            } else {
                // A lone userinfo is a password to redis (`redis://secret@host`).
                REDACTED.to_owned()
            };
            out.replace_range(authority_start..authority_start + at, &replacement);
        }
    }
    if let Some(query_start) = out.find('?') {
        let (head, query) = out.split_at(query_start + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _))
                    if key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("pass") =>
                {
                    format!("{key}={REDACTED}")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_the_authority_are_replaced() {
        assert_eq!(
            url("redis://:s3cret@10.0.0.1:6379/0"),
            "redis://:***@10.0.0.1:6379/0"
        );
        assert_eq!(
            url("redis://app:s3cret@redis:6379"),
            "redis://app:***@redis:6379"
        );
        assert_eq!(url("http://u:p%40ss@host/x?y=1"), "http://u:***@host/x?y=1");
        assert_eq!(url("redis://s3cret@redis"), "redis://***@redis");
    }

    #[test]
    fn passwords_in_the_query_are_replaced() {
        assert_eq!(
            url("redis+unix:///run/redis.sock?db=1&pass=s3cret"),
            "redis+unix:///run/redis.sock?db=1&pass=***"
        );
    }

    #[test]
    fn urls_without_secrets_are_unchanged() {
        for plain in [
            "redis://127.0.0.1:6379",
            "http://backend:8080/",
            "not a url",
        ] {
            assert_eq!(url(plain), plain);
        }
    }
}

//! Settings parsing with the contract's failure mode: one clear line, exit code 2.
//!
//! clap's own errors print a usage block; operators reading a crash-looping pod's log want
//! the one line that says what is wrong, so we keep the first line and drop the rest.

use clap::Parser;

/// Cross-field checks that clap's per-field parsing cannot express.
pub trait Validate {
    /// Returns a one-line description of the first problem found.
    fn validate(&self) -> Result<(), String>;
}

/// Parses settings from the command line and environment, or exits.
///
/// `--help` and `--version` print and exit 0; any bad setting prints one line to stderr and
/// exits 2.
pub fn parse_or_exit<T: Parser + Validate>() -> T {
    match T::try_parse() {
        Ok(settings) => match settings.validate() {
            Ok(()) => settings,
            Err(problem) => exit_bad_setting(&problem),
        },
        Err(err) if !err.use_stderr() => {
            // --help / --version: clap prints to stdout and we exit cleanly.
            let _ = err.print();
            std::process::exit(0);
        }
        Err(err) => {
            let rendered = err.to_string();
            let first = rendered.lines().next().unwrap_or("invalid settings");
            exit_bad_setting(first.trim_start_matches("error: "))
        }
    }
}

fn exit_bad_setting(problem: &str) -> ! {
    eprintln!("error: {problem}");
    std::process::exit(2);
}

/// Parses a boolean the way operators write them in environment files.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("expected true or false, got {other:?}")),
    }
}

/// `Ok` when `value` is within `low..=high`, else the one-line complaint naming `name`.
pub fn within(name: &str, value: u64, low: u64, high: u64) -> Result<(), String> {
    if (low..=high).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{name} must be between {low} and {high}, got {value}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_accept_the_usual_spellings() {
        assert_eq!(parse_bool("TRUE"), Ok(true));
        assert_eq!(parse_bool("on"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert!(parse_bool("maybe").is_err());
    }
}

//! The command line itself: `--help` shows no secret from the environment, and a target the
//! tool cannot load is refused at start with one line and exit code 2.

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_guestbook-loadtest");

#[test]
fn help_shows_no_admin_token_from_the_environment() {
    for mode in ["messages", "http"] {
        let output = Command::new(BINARY)
            .args([mode, "--help"])
            .env_clear()
            .env("ADMIN_TOKEN", "hunter2-admin-token-0123")
            .output()
            .expect("runs");
        assert_eq!(output.status.code(), Some(0), "{mode}");
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(!help.contains("hunter2"), "{mode}: {help}");
    }
}

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

#[test]
fn a_target_that_is_not_plain_http_is_refused_at_start_with_one_line() {
    let targets = [
        "https://127.0.0.1:8443",
        "ftp://127.0.0.1:21",
        "127.0.0.1:8080",
        "http://",
    ];
    for target in targets {
        let runs: [Vec<&str>; 4] = [
            vec!["messages", "--target", target, "--count", "1"],
            vec![
                "messages",
                "--target",
                "http://127.0.0.1:9",
                "--replicas",
                target,
            ],
            vec![
                "http",
                "--preset",
                "data",
                "--target",
                target,
                "--requests",
                "1",
            ],
            vec!["http", "--url", target, "--requests", "1"],
        ];
        for args in runs {
            let output = Command::new(BINARY)
                .args(&args)
                .env_clear()
                .output()
                .expect("runs");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr:?}");
            assert!(stderr.starts_with("error: "), "{args:?}: {stderr:?}");
        }
    }
}

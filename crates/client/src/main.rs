//! The `guestbook-client` binary: the shared service skeleton run with the client's
//! `Application` (parse settings, start logging, serve until SIGTERM).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    guestbook_common::service::run::<guestbook_client::Application>().await
}

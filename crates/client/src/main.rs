//! The `guestbook-client` binary: the shared service skeleton run with the client's
//! `Application` (parse settings, start logging, serve until SIGTERM).

use std::process::ExitCode;

// mimalloc rather than glibc's malloc, whose arena lock the tokio workers contended for under
// load; why, and what it measured: docs/design.md, "the allocator".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    guestbook_common::service::run::<guestbook_client::Application>().await
}

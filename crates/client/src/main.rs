//! The `guestbook-client` binary: parse settings, start logging, serve until SIGTERM.

use std::process::ExitCode;

use guestbook_client::{Application, Settings};
use guestbook_common::cli::parse_or_exit;
use guestbook_common::lifecycle::termination_signal;
use guestbook_common::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let settings: Settings = parse_or_exit();
    telemetry::init(settings.log_format);
    let outcome = async {
        let app = Application::build(settings).await?;
        app.run_until_stopped(termination_signal()).await?;
        anyhow::Ok(())
    };
    match outcome.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "guestbook-client failed");
            ExitCode::FAILURE
        }
    }
}

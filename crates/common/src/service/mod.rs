//! The service skeleton both binaries share: their common settings ([`ServiceArgs`]), the
//! bound socket ([`Listener`], held with the state and settings in [`Bound`]), the one
//! middleware order ([`layers::wrap`]) and `main` ([`run`]).
//!
//! A service supplies its state and routes and implements [`Service`] for its `Application`.
//! Tests bring the trait into scope to call `build`, `local_addr` and `run_until_stopped`; the
//! service's `main.rs` is `service::run::<Application>().await`: parse the settings (a bad one
//! is one line and exit code 2), start logging, build, serve until SIGTERM or SIGINT, and turn
//! the outcome into the exit code (a failure logged once, with its cause chain).
//!
//! Data flow: `main` → [`run`] → `Settings` (clap) → `Application::build` (state, then
//! [`Bound::bind`]) → `run_until_stopped` (background tasks; [`Listener::serve`] with the
//! router from [`wrap`]) → `crate::server` until the shutdown future: readiness fails, the
//! delay passes, the listener closes, connections drain.

pub mod args;
pub mod layers;
pub mod listener;

use std::fmt::Display;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;

pub use args::{ServiceArgs, validate_rate_limit};
pub use layers::wrap;
pub use listener::{Bound, Listener};

use crate::cli::{Validate, parse_or_exit};
use crate::lifecycle::termination_signal;
use crate::telemetry;

/// A service's `Application`: built from its settings, then run until a shutdown future.
pub trait Service: Sized + Send {
    /// Its settings, parsed from the command line and environment.
    type Settings: clap::Parser + Validate + Send;
    /// What building it can fail with (shown with `{:#}`, so an `anyhow` chain is kept).
    type Error: Display + Send;

    /// The shared part of `settings`.
    fn service_args(settings: &Self::Settings) -> &ServiceArgs;

    /// Binds the listener (port 0 picks a free port) and prepares the state.
    fn build(settings: Self::Settings) -> impl Future<Output = Result<Self, Self::Error>> + Send;

    /// Serves until `shutdown` completes, then shuts down gracefully.
    fn run_until_stopped<F>(self, shutdown: F) -> impl Future<Output = io::Result<()>> + Send
    where
        F: Future<Output = ()> + Send + 'static;

    /// The bound, not yet serving socket.
    fn listener(&self) -> &Listener;

    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener().local_addr()
    }

    /// The bound port.
    fn port(&self) -> u16 {
        self.listener().port()
    }
}

/// A service's whole `main`: settings, logging, build, serve until a termination signal.
pub async fn run<S: Service>() -> ExitCode {
    let settings: S::Settings = parse_or_exit();
    telemetry::init(S::service_args(&settings).log_format);
    let failure = match S::build(settings).await {
        Ok(app) => match app.run_until_stopped(termination_signal()).await {
            Ok(()) => return ExitCode::SUCCESS,
            Err(err) => format!("{err:#}"),
        },
        Err(err) => format!("{err:#}"),
    };
    let name = <S::Settings as clap::CommandFactory>::command()
        .get_name()
        .to_owned();
    tracing::error!(error = failure, "{name} failed");
    ExitCode::FAILURE
}

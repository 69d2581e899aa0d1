//! `guestbook-client`: serves the browser UI, answers `/fetch`, and proxies `/api/*` to the
//! backend, every backend call going through one resilient tower stack.
//!
//! - [`settings`]: every setting, parsed and validated once.
//! - [`app`]: the state, the router and the serving loop.
//! - [`backend`]: reqwest as a tower `Service`, the rotating pools, and the stack around them
//!   (its order is documented there).
//! - [`middleware`]: the circuit breaker (tower has none), the retry policy and its budget, and
//!   [`BackendOutcome`](middleware::outcome::BackendOutcome), the one judgement of what a
//!   backend call gave that the breaker, the retry policy, `/fetch`, the proxy, the stream and
//!   the metric labels all ask.
//! - [`openapi`]: the OpenAPI 3.1 document, generated from the handlers.
//! - [`routes`]: `/fetch`, `/status`, the load generator, the `/api` proxy and the stream
//!   passthrough; every error answer is `guestbook_api::ErrorBody` with its code.
//! - [`ui_files`]: the browser UI, embedded in the binary (or `FRONTEND_DIR`).

pub mod app;
pub mod backend;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod settings;
pub mod ui_files;

pub use app::{AppState, Application, app};
pub use settings::Settings;

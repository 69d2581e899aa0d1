//! `guestbook-backend`: the guestbook API over Redis.
//!
//! A request flows handler ([`routes`]) → use case ([`guestbook`]) → [`store`] → append
//! strategy → `store::hop` → Redis; live updates flow Redis → `store::feed` (one tail per
//! process) → `guestbook::follow` → each subscriber.
//!
//! - [`settings`]: every setting, parsed and validated once (the store's own in `store::config`).
//! - [`app`]: the state, the router and the serving loop.
//! - [`routes`]: HTTP handlers, one module per area: extract, call a use case, map to HTTP.
//! - [`guestbook`]: the use cases: post exactly once, read a page, follow without a gap.
//! - [`domain`]: what a valid message and idempotency key are.
//! - [`store`]: Redis storage behind a facade: its settings, the log entry format, the four
//!   append strategies, the live tail.
//! - [`faults`]: injected failures and latency, on `/data` and on the Redis hop.
//! - [`error`]: the HTTP error type.
//! - [`openapi`]: the OpenAPI 3.1 document, generated from the handlers.

pub mod app;
pub mod domain;
pub mod error;
pub mod faults;
pub mod guestbook;
pub mod openapi;
pub mod routes;
pub mod settings;
pub mod store;

pub use app::{AppState, Application, app};
pub use settings::Settings;

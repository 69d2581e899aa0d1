//! `guestbook-backend`: the guestbook API over Redis.
//!
//! - [`settings`]: every setting, parsed and validated once.
//! - [`app`]: the state, the router and the serving loop.
//! - [`routes`]: HTTP handlers, one module per area.
//! - [`domain`]: what a valid message and idempotency key are.
//! - [`store`]: Redis storage and the four append strategies.
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

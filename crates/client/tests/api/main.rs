//! Black-box tests of guestbook-client against a real backend (in-process, fault injection
//! on) over a private `redis-server`, everything on loopback.

mod helpers;

mod books;
mod cross_site;
mod openapi;
mod proxy;
mod readiness;
mod resilience;
mod scale_out;
mod security;
mod stream_guards;
mod stream_limits;
mod surface;
mod tls;
mod transport;
mod ui_files;

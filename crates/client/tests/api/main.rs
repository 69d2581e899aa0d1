//! Black-box tests of guestbook-client against a real backend (in-process, fault injection
//! on) over a private `redis-server`, everything on loopback.

mod helpers;

mod openapi;
mod resilience;
mod security;
mod surface;
mod tls;

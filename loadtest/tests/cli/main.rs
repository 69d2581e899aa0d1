//! Black-box tests of the `guestbook-loadtest` binary against real backends (in-process, on
//! loopback) over a private `redis-server`.

mod books_mode;
mod helpers;

mod http_mode;
mod messages_mode;
mod stream_mode;
mod usage;

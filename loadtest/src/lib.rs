//! `guestbook-loadtest`: load generation and exactly-once verification.
//!
//! - [`cli`]: the command line and its validation.
//! - [`messages`]: the `messages` mode, seed 000's parallel-write experiment done properly; it
//!   posts `guestbook_api::NewMessageBody` and reads pages as `guestbook_api::MessagePage`, so
//!   the tool and the services share one definition of the wire.
//! - [`books`]: which book each message goes to (`--books`), and the per-book figures.
//! - [`verify`]: the exactly-once verdict, a pure function.
//! - [`http_load`]: the `http` mode's engine over raw HTTP/1.1 connections.
//! - [`schedule`]: closed and open loop pacing, and coordinated-omission-free latency.
//! - [`stats`]: HDR histograms, status and error counts, the per-second series.
//! - [`report`]: tables for people, JSON for machines.
//! - [`plot`]: latency, goodput and failures over time as SVG or PNG.
//! - [`timeline`]: the `messages` mode's per-second timeline and `--trace` CSV.
//! - [`stream`]: the `stream` mode: N live-update subscribers, messages at a steady rate,
//!   deliveries, misses, duplicates, fan-out delay and the backend's memory per subscriber.
//! - [`progress`]: a progress bar when stderr is a terminal, around a run.

pub mod books;
pub mod cli;
pub mod http_load;
pub mod messages;
pub mod plot;
pub mod progress;
pub mod report;
pub mod schedule;
pub mod stats;
pub mod stream;
pub mod timeline;
pub mod verify;

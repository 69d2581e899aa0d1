//! Black-box tests of guestbook-backend: real HTTP on loopback against a real `redis-server`
//! started per test on a free port.

mod helpers;

mod admin;
mod books;
mod cancellation;
mod cluster;
mod cluster_failover;
mod connections;
mod cross_site;
mod exactly_once;
mod failover;
mod faults;
mod fencing;
mod group_commit;
mod idempotency;
mod openapi;
mod outages;
mod overload;
mod paging;
mod parsing;
mod replication;
mod security;
mod sentinel;
mod settings;
mod stream;
mod tls;
mod validation;

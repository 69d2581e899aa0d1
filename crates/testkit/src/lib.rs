//! Test support shared by the workspace's test suites: a private `redis-server` per test, on
//! a free loopback port, killed when dropped. Tests never touch the machine's Redis on 6379.
//!
//! - [`redis_server`]: [`RedisServer`], plain, durable, TLS with an ACL user, a replica or on IPv6.
//! - [`sentinel`]: [`SentinelServer`], a Sentinel watching one test primary.
//! - [`cluster`]: [`RedisCluster`], a Redis Cluster of N primaries with R replicas each.
//! - [`certificates`]: [`TestCertificates`], a throwaway CA and a certificate for 127.0.0.1;
//!   [`install_ring_provider`] for reqwest clients.
//! - [`tls_proxy`]: [`TlsProxy`], a TLS-terminating proxy made with such a certificate.
//! - [`balancer`]: [`balancer::TcpBalancer`], a per-connection L4 balancer that stands in for a
//!   Kubernetes Service.
//! - [`ports`]: [`free_port`], a free loopback port.
//! - `process`: waiting for a started server to answer, and ending it.

pub mod balancer;
pub mod certificates;
pub mod cluster;
pub mod ports;
mod process;
pub mod redis_server;
pub mod sentinel;
pub mod tls_proxy;

pub use certificates::{TestCertificates, install_ring_provider};
pub use cluster::RedisCluster;
pub use ports::free_port;
pub use redis_server::RedisServer;
pub use sentinel::SentinelServer;
pub use tls_proxy::TlsProxy;

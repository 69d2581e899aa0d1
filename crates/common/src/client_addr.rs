//! Who "one client" is, for per-client limits (write rate, live-update streams).
//!
//! An IPv4 address is one client. An IPv6 address is not: a single subscriber is routinely
//! given a whole /64 (RFC 6177), and any host on it can pick a fresh address per request, so a
//! limit keyed on the full address is no limit at all. IPv6 clients are keyed by their /64,
//! and an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack listener reports for
//! an IPv4 peer) by its IPv4 address, so one client cannot appear as two.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The key of one client for per-client limits: an IPv4 address or an IPv6 /64 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKey {
    /// One IPv4 address.
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl From<IpAddr> for ClientKey {
    fn from(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4),
                None => Self::V6Prefix(prefix_64(v6)),
            },
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::V4(v4) => write!(f, "{v4}"),
            Self::V6Prefix(prefix) => {
                let addr = Ipv6Addr::from(u128::from(*prefix) << 64);
                write!(f, "{addr}/64")
            }
        }
    }
}

fn prefix_64(addr: Ipv6Addr) -> u64 {
    // The shift leaves exactly the upper 64 bits, so the conversion cannot fail.
    u64::try_from(u128::from(addr) >> 64).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(addr: &str) -> ClientKey {
        ClientKey::from(addr.parse::<IpAddr>().expect("a literal address"))
    }

    #[test]
    fn every_address_of_one_ipv6_64_is_one_client() {
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    #[test]
    fn ipv4_addresses_are_clients_of_their_own() {
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
    }

    #[test]
    fn an_ipv4_mapped_address_is_the_ipv4_client() {
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
    }

    #[test]
    fn keys_display_as_an_address_or_a_prefix() {
        assert_eq!(key("192.0.2.1").to_string(), "192.0.2.1");
        assert_eq!(key("2001:db8:1:2::9").to_string(), "2001:db8:1:2::/64");
    }
}

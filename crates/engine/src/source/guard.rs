//! The address guard: which hosts a source request may reach.
//!
//! Jobs are written by strangers and the worker runs inside a VPC next to
//! credential endpoints (`169.254.170.2`, `169.254.169.254`), so by default
//! only public unicast addresses are reachable. The guard sits where reqwest
//! connects: a DNS resolver that checks *every* address a name resolves to and
//! hands reqwest exactly the checked addresses (no rebinding window), plus a
//! check of IP-literal hosts (which reqwest never resolves) on the first
//! request and on every redirect hop. Operators widen it with allowed CIDRs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// What the guard lets through besides public unicast addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Networks allowed even though they are private, loopback, etc.
    pub allow: Vec<IpNet>,
    /// When set, only these destination ports.
    pub ports: Option<Vec<u16>>,
}

/// Why a destination was refused; never contains the full URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    #[error("address {0} is not a public unicast address and is not allowed")]
    Address(IpAddr),
    #[error("port {0} is not an allowed port")]
    Port(u16),
    #[error("scheme {0:?} is not http or https")]
    Scheme(String),
    #[error("host {0:?} resolved to no address")]
    NoAddress(String),
}

impl AddressPolicy {
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.allow.iter().any(|net| net.contains(&ip)) || is_public(ip)
    }

    /// Checks what can be checked without DNS: scheme, port, IP-literal host.
    pub fn check_url(&self, url: &Url) -> Result<(), Blocked> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Blocked::Scheme(url.scheme().to_owned()));
        }
        if let (Some(ports), Some(port)) = (&self.ports, url.port_or_known_default())
            && !ports.contains(&port)
        {
            return Err(Blocked::Port(port));
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) if is_localhost_name(name) => {
                Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
            }
            _ => None,
        };
        match literal {
            Some(ip) if !self.permits(ip) => Err(Blocked::Address(ip)),
            _ => Ok(()),
        }
    }
}

/// Finds a `Blocked` anywhere in an error's source chain (reqwest wraps ours).
pub fn find_blocked(err: &(dyn std::error::Error + 'static)) -> Option<Blocked> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(blocked) = err.downcast_ref::<Blocked>() {
            return Some(blocked.clone());
        }
        current = err.source();
    }
    None
}

/// A resolver that refuses a name if any address it resolves to is blocked.
pub struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<AddressPolicy>) -> Self {
        Self { policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            if is_localhost_name(&host) && !policy.permits(IpAddr::V4(Ipv4Addr::LOCALHOST)) {
                return Err(Box::new(Blocked::Address(IpAddr::V4(Ipv4Addr::LOCALHOST)))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(
                    Box::new(Blocked::NoAddress(host)) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            // Every address, not just the first: a name with one public and
            // one private address must not get through on a retry.
            if let Some(bad) = addrs.iter().find(|a| !policy.permits(a.ip())) {
                return Err(Box::new(Blocked::Address(bad.ip()))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// `localhost` and `*.localhost` are loopback by definition (RFC 6761), even
/// where the system resolver does not know the subdomains.
fn is_localhost_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// IPv4 addresses hidden in IPv6 ones are judged as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64
/// (`64:ff9b::/96`) and 6to4 (`2002:AABB:CCDD::/48`) addresses.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        [0, 0, 0, 0, 0, 0, _, _] if !(s[6] == 0 && s[7] <= 1) => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        [0x2002, a, b, ..] => Some(Ipv4Addr::new(
            (a >> 8) as u8,
            a as u8,
            (b >> 8) as u8,
            b as u8,
        )),
        _ => None,
    }
}

/// Public unicast: not any of the special-purpose ranges (IANA registries).
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    const BLOCKED: &[(u32, u8)] = &[
        (0x0000_0000, 8),  // 0.0.0.0/8 "this network"
        (0x0a00_0000, 8),  // 10/8 private
        (0x6440_0000, 10), // 100.64/10 CGNAT
        (0x7f00_0000, 8),  // 127/8 loopback
        (0xa9fe_0000, 16), // 169.254/16 link-local (ECS/EC2 metadata)
        (0xac10_0000, 12), // 172.16/12 private
        (0xc000_0000, 24), // 192.0.0/24 IETF protocol assignments
        (0xc000_0200, 24), // 192.0.2/24 documentation
        (0xc058_6300, 24), // 192.88.99/24 6to4 relay
        (0xc0a8_0000, 16), // 192.168/16 private
        (0xc612_0000, 15), // 198.18/15 benchmarking
        (0xc633_6400, 24), // 198.51.100/24 documentation
        (0xcb00_7100, 24), // 203.0.113/24 documentation
        (0xe000_0000, 4),  // 224/4 multicast
        (0xf000_0000, 4),  // 240/4 reserved, broadcast
    ];
    let bits = u32::from(ip);
    !BLOCKED
        .iter()
        .any(|&(net, len)| bits >> (32 - len) == net >> (32 - len))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let blocked = ip.is_unspecified()
        || ip.is_loopback()
        || s[0] & 0xffc0 == 0xfe80 // fe80::/10 link-local
        || s[0] & 0xffc0 == 0xfec0 // fec0::/10 site-local (deprecated)
        || s[0] & 0xfe00 == 0xfc00 // fc00::/7 unique local (incl. fd00:ec2::254)
        || s[0] & 0xff00 == 0xff00 // ff00::/8 multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] < 0x0200) // 2001::/23 IETF protocol assignments (Teredo…)
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // 100::/64 discard
        || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64 with a non-embedded suffix
        || s[0] == 0x2002 // 6to4 (embedded v4 judged above)
        || s[0] == 0; // ::/16 remainder (mapped, compatible, reserved)
    !blocked
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn blocked(url: &str) -> bool {
        AddressPolicy::default()
            .check_url(&url.parse().unwrap())
            .is_err()
    }

    #[test]
    fn every_special_spelling_is_blocked() {
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://0.0.0.0/",
            "http://[::]/",
            "http://[::1]/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.170.2/v2/credentials",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://[fc00::1]/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://198.18.0.1/",
            "http://192.0.2.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:7f00:1::]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://[ff02::1]/",
            "http://[2001:db8::1]/",
            "http://localhost/",
            "http://a.b.LOCALHOST./",
        ] {
            assert!(blocked(url), "{url} must be blocked");
        }
    }

    #[test]
    fn public_addresses_and_names_pass_the_url_check() {
        for url in [
            "https://93.184.215.14/",
            "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/",
            "https://example.com/",
            "http://[64:ff9b::5db8:d70e]/",
        ] {
            assert!(!blocked(url), "{url} must pass");
        }
    }

    #[test]
    fn schemes_and_ports_are_checked() {
        assert!(blocked("ftp://example.com/"));
        assert!(blocked("file:///etc/passwd"));
        let policy = AddressPolicy {
            ports: Some(vec![443]),
            ..AddressPolicy::default()
        };
        assert!(
            policy
                .check_url(&"https://example.com/".parse().unwrap())
                .is_ok()
        );
        assert_eq!(
            policy.check_url(&"https://example.com:8443/".parse().unwrap()),
            Err(Blocked::Port(8443))
        );
    }

    #[test]
    fn allowed_networks_open_exactly_themselves() {
        let policy = AddressPolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            ports: None,
        };
        assert!(policy.permits("127.0.0.1".parse().unwrap()));
        assert!(policy.permits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!policy.permits("10.0.0.1".parse().unwrap()));
        assert!(!policy.permits("169.254.169.254".parse().unwrap()));
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused() {
        let resolver = GuardedResolver::new(Arc::new(AddressPolicy::default()));
        for host in ["localhost", "something.localhost"] {
            let name: Name = host.parse().unwrap();
            let result = resolver.resolve(name).await;
            let err = result
                .err()
                .unwrap_or_else(|| panic!("{host} must be refused"));
            assert!(find_blocked(err.as_ref()).is_some(), "{host}: {err}");
        }
    }

    proptest! {
        #[test]
        fn any_v4_in_a_private_range_is_blocked_in_every_v6_wrapping(a in any::<u8>(), b in any::<u8>(), c in any::<u8>()) {
            for v4 in [Ipv4Addr::new(10, a, b, c), Ipv4Addr::new(127, a, b, c), Ipv4Addr::new(169, 254, b, c), Ipv4Addr::new(192, 168, b, c)] {
                prop_assert!(!is_public(IpAddr::V4(v4)));
                prop_assert!(!is_public(IpAddr::V6(v4.to_ipv6_mapped())));
                let [w, x, y, z] = v4.octets();
                let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([w, x]), u16::from_be_bytes([y, z]));
                prop_assert!(!is_public(IpAddr::V6(nat64)));
                let six_to_four = Ipv6Addr::new(0x2002, u16::from_be_bytes([w, x]), u16::from_be_bytes([y, z]), 0, 0, 0, 0, 1);
                prop_assert!(!is_public(IpAddr::V6(six_to_four)));
            }
        }

        #[test]
        fn url_check_never_panics(host in "[a-z0-9.:\\[\\]x-]{1,40}") {
            if let Ok(url) = format!("http://{host}/").parse::<Url>() {
                let _ = AddressPolicy::default().check_url(&url);
            }
        }
    }
}

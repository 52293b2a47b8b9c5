//! Which addresses the server may connect to when a user names the URL (link previews,
//! push gateways): a deny list of loopback, private, link-local, multicast and other
//! special ranges, which configured ranges can open, checked on every resolved address.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

/// A CIDR range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    address: IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address.parse().ok()?, prefix.parse().ok()?),
            None => {
                let address: IpAddr = text.parse().ok()?;
                (address, if address.is_ipv4() { 32 } else { 128 })
            }
        };
        let bits = if address.is_ipv4() { 32 } else { 128 };
        (prefix <= bits).then_some(Self { address, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let prefix = u32::from(self.prefix);
        match (self.address, ip) {
            (IpAddr::V4(range), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
                u32::from(range) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(range), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
                u128::from(range) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Where an outbound request may never connect unless allowed: this host, private networks,
/// link-local, multicast, shared and reserved space, documentation ranges.
const DENIED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b::/96",
    "100::/64",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// Which addresses outbound requests may reach.
#[derive(Clone, Debug)]
pub struct AddressPolicy {
    denied: Vec<IpRange>,
    allowed: Vec<IpRange>,
}

impl AddressPolicy {
    /// The deny list with `allowed` (CIDR ranges) let through.
    pub fn new(allowed: &[String]) -> std::result::Result<Self, String> {
        let allowed = allowed
            .iter()
            .map(|text| IpRange::parse(text).ok_or_else(|| format!("not an IP range: {text}")))
            .collect::<std::result::Result<_, _>>()?;
        let denied = DENIED
            .iter()
            .map(|text| IpRange::parse(text).expect("the deny list parses"))
            .collect();
        Ok(Self { denied, allowed })
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        // An IPv4 address written as IPv6 is judged as itself.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allowed.iter().any(|range| range.contains(ip))
            || !self.denied.iter().any(|range| range.contains(ip))
    }
}

/// A resolver that drops the addresses the policy denies (a name resolving only to
/// those fails), so a hostname cannot lead a request into the local network.
pub struct GuardedResolver(pub Arc<AddressPolicy>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let permitted: Vec<SocketAddr> = found
                .filter(|address| policy.permits(address.ip()))
                .collect();
            if permitted.is_empty() {
                return Err(format!("{} resolves only to denied addresses", name.as_str()).into());
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deny_list_covers_local_and_private_addresses() {
        let policy = AddressPolicy::new(&[]).unwrap();
        for denied in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "ff02::1",
        ] {
            assert!(!policy.permits(denied.parse().unwrap()), "{denied}");
        }
        for permitted in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(policy.permits(permitted.parse().unwrap()), "{permitted}");
        }
        let opened = AddressPolicy::new(&["127.0.0.0/8".to_owned()]).unwrap();
        assert!(opened.permits("127.0.0.1".parse().unwrap()));
        assert!(!opened.permits("10.0.0.1".parse().unwrap()));
        assert!(AddressPolicy::new(&["not a range".to_owned()]).is_err());
    }
}

//! Server name resolution, as the server-server API's "Resolving server names" gives it: from a
//! destination's server name to the name its requests carry (URL host, TLS server name and
//! `Host` header) and the socket addresses to connect to.
//!
//! [`resolve`] only decides. The three lookups it needs (the `/.well-known/matrix/server`
//! document, SRV records, A/AAAA records) come from a [`Lookup`], so the procedure is tested
//! without a network; [`NetworkLookup`] does them for real, with caches.

mod network;
mod well_known;

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

use ruma::{OwnedServerName, ServerName};

pub use network::NetworkLookup;

/// The port used when neither the server name, the delegated name nor an SRV record gives one.
pub const DEFAULT_PORT: u16 = 8448;

/// The SRV services looked up for a hostname without a port, in order: the current one, then
/// the deprecated one.
const SRV_SERVICES: [&str; 2] = ["_matrix-fed._tcp", "_matrix._tcp"];

/// A name resolution that failed: no address could be found for `host`.
#[derive(Debug, thiserror::Error)]
#[error("could not resolve {host}: {reason}")]
pub struct DiscoveryError {
    /// The hostname that did not resolve.
    pub host: String,
    /// Why (the DNS error, or that it had no A/AAAA records).
    pub reason: String,
}

/// One SRV record's target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvTarget {
    /// The hostname to resolve with A/AAAA records.
    pub host: String,
    /// The port to connect to.
    pub port: u16,
}

/// The lookups the resolution procedure needs.
pub trait Lookup: Send + Sync {
    /// The `m.server` of `https://<hostname>/.well-known/matrix/server`, or `None` when there is
    /// no valid one (failed request, non-200 status, bad JSON, missing or invalid `m.server`).
    fn well_known(&self, hostname: &str) -> impl Future<Output = Option<OwnedServerName>> + Send;

    /// The targets of the SRV records of `name` (e.g. `_matrix-fed._tcp.example.org`), most
    /// preferred first; empty when there are none.
    fn srv(&self, name: &str) -> impl Future<Output = Vec<SrvTarget>> + Send;

    /// The addresses from the A and AAAA records of `hostname`; an error when there are none.
    fn ips(
        &self,
        hostname: &str,
    ) -> impl Future<Output = Result<Vec<IpAddr>, DiscoveryError>> + Send;
}

/// The host part of the name a request carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// An IP literal; the certificate must be valid for this address.
    Ip(IpAddr),
    /// A hostname; the certificate must be valid for this name.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// Where the requests for one destination go, and under which name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The URL host, TLS server name and host part of the `Host` header.
    pub host: Host,
    /// The port in the `Host` header, when the spec puts one there (an explicit port in the
    /// server name or the delegated name); `None` when the header is the host alone.
    pub port: Option<u16>,
    /// The addresses to connect to, most preferred first. Never empty.
    pub addresses: Vec<SocketAddr>,
}

impl Destination {
    /// The value of the `Host` header: the host, with the port when there is one.
    pub fn host_header(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.to_string(),
        }
    }

    fn ip(ip: IpAddr, port: Option<u16>) -> Self {
        Destination {
            host: Host::Ip(ip),
            port,
            addresses: vec![SocketAddr::new(ip, port.unwrap_or(DEFAULT_PORT))],
        }
    }
}

/// Resolves `server_name` by the spec's procedure.
pub async fn resolve(
    server_name: &ServerName,
    lookup: &impl Lookup,
) -> Result<Destination, DiscoveryError> {
    // 1. An IP literal, with its port or 8448; the Host header is the server name.
    if let Some(ip) = ip_literal(server_name) {
        return Ok(Destination::ip(ip, server_name.port()));
    }
    let hostname = server_name.host();
    // 2. A hostname with an explicit port: its A/AAAA records; Host is the server name.
    if let Some(port) = server_name.port() {
        return hostname_with_port(hostname, port, lookup).await;
    }
    // 3. Delegation through /.well-known/matrix/server.
    if let Some(delegated) = lookup.well_known(hostname).await {
        return resolve_delegated(&delegated, lookup).await;
    }
    // 4.–6. SRV records of the hostname, else the hostname on 8448.
    hostname_without_port(hostname, lookup).await
}

/// Step 3's sub-steps for the delegated name from the well-known document.
async fn resolve_delegated(
    delegated: &ServerName,
    lookup: &impl Lookup,
) -> Result<Destination, DiscoveryError> {
    // 3.1 An IP literal, with the delegated port or 8448.
    if let Some(ip) = ip_literal(delegated) {
        return Ok(Destination::ip(ip, delegated.port()));
    }
    match delegated.port() {
        // 3.2 A hostname with a port.
        Some(port) => hostname_with_port(delegated.host(), port, lookup).await,
        // 3.3–3.5 SRV records of the delegated hostname, else that hostname on 8448.
        None => hostname_without_port(delegated.host(), lookup).await,
    }
}

/// Steps 2 and 3.2: the A/AAAA records of `hostname`, on `port`; `Host: hostname:port`.
async fn hostname_with_port(
    hostname: &str,
    port: u16,
    lookup: &impl Lookup,
) -> Result<Destination, DiscoveryError> {
    let ips = lookup.ips(hostname).await?;
    Ok(Destination {
        host: Host::Name(hostname.to_owned()),
        port: Some(port),
        addresses: ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect(),
    })
}

/// Steps 3.3–3.5 and 4–6: the first SRV service of `hostname` that has records, with the
/// addresses of its targets; without any, `hostname` on 8448. `Host: hostname` either way.
async fn hostname_without_port(
    hostname: &str,
    lookup: &impl Lookup,
) -> Result<Destination, DiscoveryError> {
    for service in SRV_SERVICES {
        let targets = lookup.srv(&format!("{service}.{hostname}")).await;
        if targets.is_empty() {
            continue;
        }
        let mut addresses = Vec::new();
        let mut last_error = None;
        for target in &targets {
            match lookup.ips(&target.host).await {
                Ok(ips) => {
                    addresses.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, target.port)))
                }
                Err(error) => last_error = Some(error),
            }
        }
        if addresses.is_empty() {
            return Err(DiscoveryError {
                host: hostname.to_owned(),
                reason: match last_error {
                    Some(error) => format!("no SRV target of {service} resolved ({error})"),
                    None => format!("no SRV target of {service} resolved"),
                },
            });
        }
        return Ok(Destination {
            host: Host::Name(hostname.to_owned()),
            port: None,
            addresses,
        });
    }
    let ips = lookup.ips(hostname).await?;
    Ok(Destination {
        host: Host::Name(hostname.to_owned()),
        port: None,
        addresses: ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, DEFAULT_PORT))
            .collect(),
    })
}

/// The address of an IP-literal server name (`1.2.3.4`, `[::1]`, with or without port).
fn ip_literal(server_name: &ServerName) -> Option<IpAddr> {
    let host = server_name.host();
    let unbracketed = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    unbracketed.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        net::{Ipv4Addr, Ipv6Addr},
        sync::Mutex,
    };

    use ruma::server_name;

    use super::*;

    /// Lookups answered from tables; records which were asked for.
    #[derive(Default)]
    struct Fake {
        well_known: HashMap<&'static str, &'static str>,
        srv: HashMap<&'static str, Vec<SrvTarget>>,
        ips: HashMap<&'static str, Vec<IpAddr>>,
        asked: Mutex<Vec<String>>,
    }

    impl Fake {
        fn well_known(mut self, hostname: &'static str, server: &'static str) -> Self {
            self.well_known.insert(hostname, server);
            self
        }

        fn srv(mut self, name: &'static str, targets: &[(&str, u16)]) -> Self {
            let targets = targets
                .iter()
                .map(|(host, port)| SrvTarget {
                    host: (*host).to_owned(),
                    port: *port,
                })
                .collect();
            self.srv.insert(name, targets);
            self
        }

        fn ip(mut self, hostname: &'static str, ip: IpAddr) -> Self {
            self.ips.entry(hostname).or_default().push(ip);
            self
        }

        fn asked(&self) -> Vec<String> {
            self.asked.lock().unwrap().clone()
        }
    }

    impl Lookup for Fake {
        async fn well_known(&self, hostname: &str) -> Option<OwnedServerName> {
            self.asked
                .lock()
                .unwrap()
                .push(format!("well-known {hostname}"));
            let server = self.well_known.get(hostname)?;
            OwnedServerName::try_from(*server).ok()
        }

        async fn srv(&self, name: &str) -> Vec<SrvTarget> {
            self.asked.lock().unwrap().push(format!("srv {name}"));
            self.srv.get(name).cloned().unwrap_or_default()
        }

        async fn ips(&self, hostname: &str) -> Result<Vec<IpAddr>, DiscoveryError> {
            self.asked.lock().unwrap().push(format!("ips {hostname}"));
            self.ips
                .get(hostname)
                .cloned()
                .ok_or_else(|| DiscoveryError {
                    host: hostname.to_owned(),
                    reason: "no records".to_owned(),
                })
        }
    }

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));

    fn name(host: &str, port: Option<u16>, addresses: &[(IpAddr, u16)]) -> Destination {
        Destination {
            host: Host::Name(host.to_owned()),
            port,
            addresses: addresses.iter().map(|&address| address.into()).collect(),
        }
    }

    async fn resolved(server: &ServerName, lookup: &Fake) -> Destination {
        resolve(server, lookup).await.unwrap()
    }

    #[tokio::test]
    async fn step_1_an_ipv4_literal_goes_to_8448_without_any_lookup() {
        let fake = Fake::default();
        let destination = resolved(server_name!("192.0.2.1"), &fake).await;
        assert_eq!(destination, Destination::ip(A, None));
        assert_eq!(destination.addresses, [SocketAddr::new(A, 8448)]);
        assert_eq!(destination.host_header(), "192.0.2.1");
        assert!(fake.asked().is_empty());
    }

    #[tokio::test]
    async fn step_1_an_ip_literal_keeps_its_port_in_the_address_and_the_host_header() {
        let fake = Fake::default();
        let destination = resolved(server_name!("[2001:db8::1]:8000"), &fake).await;
        assert_eq!(destination.host, Host::Ip(V6));
        assert_eq!(destination.addresses, [SocketAddr::new(V6, 8000)]);
        assert_eq!(destination.host_header(), "[2001:db8::1]:8000");
        let destination = resolved(server_name!("[2001:db8::1]"), &fake).await;
        assert_eq!(destination.addresses, [SocketAddr::new(V6, 8448)]);
        assert_eq!(destination.host_header(), "[2001:db8::1]");
        assert!(fake.asked().is_empty());
    }

    #[tokio::test]
    async fn step_2_a_hostname_with_a_port_uses_its_addresses_without_well_known_or_srv() {
        let fake = Fake::default()
            .ip("example.org", A)
            .ip("example.org", V6)
            .well_known("example.org", "elsewhere.org")
            .srv("_matrix-fed._tcp.example.org", &[("elsewhere.org", 1)]);
        let destination = resolved(server_name!("example.org:8000"), &fake).await;
        assert_eq!(
            destination,
            name("example.org", Some(8000), &[(A, 8000), (V6, 8000)])
        );
        assert_eq!(destination.host_header(), "example.org:8000");
        assert_eq!(fake.asked(), ["ips example.org"]);
    }

    #[tokio::test]
    async fn step_2_a_hostname_that_does_not_resolve_is_an_error() {
        let fake = Fake::default();
        let error = resolve(server_name!("example.org:8000"), &fake)
            .await
            .unwrap_err();
        assert_eq!(error.host, "example.org");
    }

    #[tokio::test]
    async fn step_3_1_delegation_to_an_ip_literal_uses_it_and_names_it_in_host() {
        let fake = Fake::default().well_known("example.org", "192.0.2.2");
        let destination = resolved(server_name!("example.org"), &fake).await;
        assert_eq!(destination, Destination::ip(B, None));
        assert_eq!(destination.addresses, [SocketAddr::new(B, 8448)]);
        assert_eq!(destination.host_header(), "192.0.2.2");

        let fake = Fake::default().well_known("example.org", "[2001:db8::1]:9000");
        let destination = resolved(server_name!("example.org"), &fake).await;
        assert_eq!(destination.addresses, [SocketAddr::new(V6, 9000)]);
        assert_eq!(destination.host_header(), "[2001:db8::1]:9000");
        assert_eq!(fake.asked(), ["well-known example.org"]);
    }

    #[tokio::test]
    async fn step_3_2_delegation_with_a_port_resolves_the_delegated_hostname_without_srv() {
        let fake = Fake::default()
            .well_known("example.org", "matrix.example.org:443")
            .srv("_matrix-fed._tcp.matrix.example.org", &[("other.org", 1)])
            .ip("matrix.example.org", B);
        let destination = resolved(server_name!("example.org"), &fake).await;
        assert_eq!(
            destination,
            name("matrix.example.org", Some(443), &[(B, 443)])
        );
        assert_eq!(destination.host_header(), "matrix.example.org:443");
        assert_eq!(
            fake.asked(),
            ["well-known example.org", "ips matrix.example.org"]
        );
    }

    #[tokio::test]
    async fn step_3_3_delegation_without_a_port_follows_the_matrix_fed_srv_of_the_delegated_name() {
        let fake = Fake::default()
            .well_known("example.org", "matrix.example.org")
            .srv(
                "_matrix-fed._tcp.matrix.example.org",
                &[("a.example.net", 8001), ("b.example.net", 8002)],
            )
            .srv("_matrix._tcp.matrix.example.org", &[("old.example.net", 1)])
            .ip("a.example.net", A)
            .ip("b.example.net", B);
        let destination = resolved(server_name!("example.org"), &fake).await;
        assert_eq!(
            destination,
            name("matrix.example.org", None, &[(A, 8001), (B, 8002)])
        );
        assert_eq!(destination.host_header(), "matrix.example.org");
        assert_eq!(
            fake.asked(),
            [
                "well-known example.org",
                "srv _matrix-fed._tcp.matrix.example.org",
                "ips a.example.net",
                "ips b.example.net",
            ]
        );
    }

    #[tokio::test]
    async fn step_3_4_without_matrix_fed_the_deprecated_matrix_srv_of_the_delegated_name_is_used() {
        let fake = Fake::default()
            .well_known("example.org", "matrix.example.org")
            .srv(
                "_matrix._tcp.matrix.example.org",
                &[("old.example.net", 8009)],
            )
            .ip("old.example.net", A);
        let destination = resolved(server_name!("example.org"), &fake).await;
        assert_eq!(destination, name("matrix.example.org", None, &[(A, 8009)]));
        assert_eq!(
            fake.asked(),
            [
                "well-known example.org",
                "srv _matrix-fed._tcp.matrix.example.org",
                "srv _matrix._tcp.matrix.example.org",
                "ips old.example.net",
            ]
        );
    }

    #[tokio::test]
    async fn step_3_5_without_srv_the_delegated_hostname_is_used_on_8448() {
        let fake = Fake::default()
            .well_known("example.org", "matrix.example.org")
            .ip("example.org", A)
            .ip("matrix.example.org", B);
        let destination = resolved(server_name!("example.org"), &fake).await;
        assert_eq!(destination, name("matrix.example.org", None, &[(B, 8448)]));
        assert_eq!(destination.host_header(), "matrix.example.org");
    }

    #[tokio::test]
    async fn a_delegated_name_is_not_delegated_again() {
        let fake = Fake::default()
            .well_known("example.org", "matrix.example.org")
            .well_known("matrix.example.org", "third.example.org")
            .ip("matrix.example.org", B);
        let destination = resolved(server_name!("example.org"), &fake).await;
        assert_eq!(destination, name("matrix.example.org", None, &[(B, 8448)]));
        assert!(
            !fake
                .asked()
                .contains(&"well-known matrix.example.org".to_owned())
        );
    }

    #[tokio::test]
    async fn step_4_without_well_known_the_matrix_fed_srv_of_the_hostname_is_used() {
        let fake = Fake::default()
            .srv("_matrix-fed._tcp.example.org", &[("fed.example.org", 8443)])
            .ip("fed.example.org", V6)
            .ip("example.org", A);
        let destination = resolved(server_name!("example.org"), &fake).await;
        assert_eq!(destination, name("example.org", None, &[(V6, 8443)]));
        assert_eq!(destination.host_header(), "example.org");
        assert_eq!(
            fake.asked(),
            [
                "well-known example.org",
                "srv _matrix-fed._tcp.example.org",
                "ips fed.example.org",
            ]
        );
    }

    #[tokio::test]
    async fn step_5_without_matrix_fed_the_deprecated_matrix_srv_of_the_hostname_is_used() {
        let fake = Fake::default()
            .srv("_matrix._tcp.example.org", &[("old.example.org", 8449)])
            .ip("old.example.org", B);
        let destination = resolved(server_name!("example.org"), &fake).await;
        assert_eq!(destination, name("example.org", None, &[(B, 8449)]));
    }

    #[tokio::test]
    async fn step_6_without_well_known_or_srv_the_hostname_is_used_on_8448() {
        let fake = Fake::default().ip("example.org", A).ip("example.org", V6);
        let destination = resolved(server_name!("example.org"), &fake).await;
        assert_eq!(
            destination,
            name("example.org", None, &[(A, 8448), (V6, 8448)])
        );
        assert_eq!(destination.host_header(), "example.org");
        assert_eq!(
            fake.asked(),
            [
                "well-known example.org",
                "srv _matrix-fed._tcp.example.org",
                "srv _matrix._tcp.example.org",
                "ips example.org",
            ]
        );
    }

    #[tokio::test]
    async fn srv_targets_that_do_not_resolve_are_skipped_and_none_resolving_is_an_error() {
        let fake = Fake::default()
            .srv(
                "_matrix-fed._tcp.example.org",
                &[("gone.example.org", 1), ("here.example.org", 2)],
            )
            .ip("here.example.org", A);
        let destination = resolved(server_name!("example.org"), &fake).await;
        assert_eq!(destination.addresses, [SocketAddr::new(A, 2)]);

        // Records were found, so the procedure stops there rather than falling back to 8448.
        let fake = Fake::default()
            .srv("_matrix-fed._tcp.example.org", &[("gone.example.org", 1)])
            .ip("example.org", A);
        let error = resolve(server_name!("example.org"), &fake)
            .await
            .unwrap_err();
        assert_eq!(error.host, "example.org");
        assert!(error.reason.contains("gone.example.org"), "{error}");
    }

    #[tokio::test]
    async fn a_hostname_that_does_not_resolve_at_all_is_an_error() {
        let fake = Fake::default();
        let error = resolve(server_name!("example.org"), &fake)
            .await
            .unwrap_err();
        assert_eq!(error.host, "example.org");
    }
}

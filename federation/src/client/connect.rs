//! Connecting where discovery says while the request names the host the spec says.
//!
//! The URL's host is the destination's [`Host`], so it is also the TLS server name (SNI and
//! the name the certificate must match) and the `Host` header (HTTP/1.1) or `:authority`
//! (HTTP/2). Where to connect comes from discovery through an [`AddressBook`], the reqwest
//! resolver that maps that host to the addresses discovery found. Three pools keep the
//! meanings of a URL apart:
//!
//! - `implicit_port`: a hostname with no port in the server name. The URL has no port and the
//!   address book gives full socket addresses: the SRV targets' or the host's on 8448.
//! - `explicit_port`: a port in the server name. The URL has that port, which overrides any
//!   resolved port, and the address book gives the host's IPs. A URL such as
//!   `https://example.org:8448` therefore never shares a pool with `https://example.org`.
//! - `host_header`: an IP literal without a port. The spec wants `Host: <ip>` while the
//!   connection goes to port 8448, which only an explicit header over HTTP/1.1 can say (HTTP/2
//!   would send the URL's authority, port included), so this pool speaks HTTP/1.1 only.
//!
//! An IP literal with a port is a plain URL in the `explicit_port` pool; no resolver is asked.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use http::HeaderValue;

use super::{ClientError, ClientOptions};
use crate::discovery::{DEFAULT_PORT, Destination, Host};

/// The time allowed for a TCP connection and TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The HTTP clients and their address books.
pub(super) struct Connector {
    implicit_port: reqwest::Client,
    implicit_port_addresses: Arc<AddressBook>,
    explicit_port: reqwest::Client,
    explicit_port_addresses: Arc<AddressBook>,
    host_header: reqwest::Client,
    /// For URLs outside federation discovery (redirects to a content delivery
    /// network): the system resolver, the same trusted roots.
    plain: reqwest::Client,
}

/// How one request goes: through which client, to which base URL, with which `Host` header.
pub(super) struct Route<'a> {
    pub(super) client: &'a reqwest::Client,
    /// `https://<host>[:<port>]`, without a trailing slash.
    pub(super) base_url: String,
    /// A `Host` header to set instead of the one derived from the URL.
    pub(super) host_header: Option<HeaderValue>,
}

impl Connector {
    pub(super) fn new(options: &ClientOptions) -> Result<Self, ClientError> {
        let implicit_port_addresses = Arc::new(AddressBook::default());
        let explicit_port_addresses = Arc::new(AddressBook::default());
        Ok(Connector {
            implicit_port: build(options, implicit_port_addresses.clone(), false)?,
            explicit_port: build(options, explicit_port_addresses.clone(), false)?,
            host_header: build(options, Arc::new(AddressBook::default()), true)?,
            plain: build_plain(options)?,
            implicit_port_addresses,
            explicit_port_addresses,
        })
    }

    /// The client for URLs outside federation discovery.
    pub(super) fn plain(&self) -> &reqwest::Client {
        &self.plain
    }

    /// The route for `destination`, recording its addresses for the resolver.
    pub(super) fn route(&self, destination: &Destination) -> Route<'_> {
        match (&destination.host, destination.port) {
            (Host::Ip(ip), Some(port)) => Route {
                client: &self.explicit_port,
                base_url: format!("https://{}", SocketAddr::new(*ip, port)),
                host_header: None,
            },
            (Host::Ip(ip), None) => Route {
                client: &self.host_header,
                base_url: format!("https://{}", SocketAddr::new(*ip, DEFAULT_PORT)),
                host_header: HeaderValue::try_from(destination.host_header()).ok(),
            },
            (Host::Name(name), Some(port)) => {
                let ips = destination.addresses.iter().map(|address| address.ip());
                self.explicit_port_addresses
                    .insert(name, ips.map(|ip| SocketAddr::new(ip, 0)).collect());
                Route {
                    client: &self.explicit_port,
                    base_url: format!("https://{name}:{port}"),
                    host_header: None,
                }
            }
            (Host::Name(name), None) => {
                self.implicit_port_addresses
                    .insert(name, destination.addresses.clone());
                Route {
                    client: &self.implicit_port,
                    base_url: format!("https://{name}"),
                    host_header: None,
                }
            }
        }
    }
}

fn build(
    options: &ClientOptions,
    addresses: Arc<AddressBook>,
    http1_only: bool,
) -> Result<reqwest::Client, ClientError> {
    let tls = crate::tls::client_config(
        options.verify_certificates,
        &options.extra_root_certificates,
        http1_only,
    )?;
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .dns_resolver(addresses)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(options.timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(options.timeout))
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .user_agent(crate::USER_AGENT);
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().map_err(ClientError::Transport)
}

fn build_plain(options: &ClientOptions) -> Result<reqwest::Client, ClientError> {
    let tls = crate::tls::client_config(
        options.verify_certificates,
        &options.extra_root_certificates,
        false,
    )?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::limited(5))
        .timeout(options.timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(options.timeout))
        .user_agent(crate::USER_AGENT)
        .build()
        .map_err(ClientError::Transport)
}

/// The addresses discovery found, by host, as a reqwest resolver.
///
/// Within one pool a host always resolves the same way (discovery's result for it depends on
/// the host alone), so the latest entry is the right one for any request naming that host.
#[derive(Default)]
struct AddressBook(RwLock<HashMap<String, Vec<SocketAddr>>>);

impl AddressBook {
    fn insert(&self, host: &str, addresses: Vec<SocketAddr>) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            // URL hosts are lowercased.
            .insert(host.to_ascii_lowercase(), addresses);
    }
}

impl reqwest::dns::Resolve for AddressBook {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addresses = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name.as_str())
            .cloned();
        Box::pin(async move {
            match addresses {
                Some(addresses) => Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs),
                None => Err(format!("no addresses discovered for {}", name.as_str()).into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr, Ipv6Addr},
        str::FromStr,
    };

    use reqwest::dns::Resolve;

    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

    fn connector() -> Connector {
        Connector::new(&ClientOptions::default()).unwrap()
    }

    async fn resolved(book: &AddressBook, host: &str) -> Vec<SocketAddr> {
        let name = reqwest::dns::Name::from_str(host).unwrap();
        book.resolve(name).await.unwrap().collect()
    }

    #[test]
    fn an_ip_literal_without_a_port_goes_to_8448_over_http1_with_the_bare_ip_as_host() {
        let connector = connector();
        let destination = Destination {
            host: Host::Ip(A),
            port: None,
            addresses: vec![SocketAddr::new(A, 8448)],
        };
        let route = connector.route(&destination);
        assert!(std::ptr::eq(route.client, &connector.host_header));
        assert_eq!(route.base_url, "https://192.0.2.1:8448");
        assert_eq!(route.host_header.unwrap(), "192.0.2.1");
    }

    #[test]
    fn an_ip_literal_with_a_port_is_a_plain_url() {
        let connector = connector();
        let destination = Destination {
            host: Host::Ip(V6),
            port: Some(8000),
            addresses: vec![SocketAddr::new(V6, 8000)],
        };
        let route = connector.route(&destination);
        assert!(std::ptr::eq(route.client, &connector.explicit_port));
        assert_eq!(route.base_url, "https://[::1]:8000");
        assert_eq!(route.host_header, None);
    }

    #[tokio::test]
    async fn a_hostname_with_a_port_puts_it_in_the_url_and_its_ips_in_the_book() {
        let connector = connector();
        let destination = Destination {
            host: Host::Name("Example.ORG".to_owned()),
            port: Some(8000),
            addresses: vec![SocketAddr::new(A, 8000), SocketAddr::new(V6, 8000)],
        };
        let route = connector.route(&destination);
        assert!(std::ptr::eq(route.client, &connector.explicit_port));
        assert_eq!(route.base_url, "https://Example.ORG:8000");
        assert_eq!(route.host_header, None);
        // Port 0: the URL's port applies, also when it is 443 and the URL drops it.
        assert_eq!(
            resolved(&connector.explicit_port_addresses, "example.org").await,
            [SocketAddr::new(A, 0), SocketAddr::new(V6, 0)]
        );
        assert!(
            connector
                .implicit_port_addresses
                .0
                .read()
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_hostname_without_a_port_resolves_to_the_discovered_ports() {
        let connector = connector();
        let destination = Destination {
            host: Host::Name("example.org".to_owned()),
            port: None,
            addresses: vec![SocketAddr::new(A, 8443)],
        };
        let route = connector.route(&destination);
        assert!(std::ptr::eq(route.client, &connector.implicit_port));
        assert_eq!(route.base_url, "https://example.org");
        assert_eq!(
            resolved(&connector.implicit_port_addresses, "example.org").await,
            [SocketAddr::new(A, 8443)]
        );
    }

    #[tokio::test]
    async fn an_unknown_host_does_not_resolve() {
        let book = AddressBook::default();
        let name = reqwest::dns::Name::from_str("example.org").unwrap();
        assert!(book.resolve(name).await.is_err());
    }
}

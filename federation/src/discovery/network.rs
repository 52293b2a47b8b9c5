//! The lookups done for real: DNS through hickory, the well-known document over HTTPS.
//!
//! Well-known results are cached here, for as long as [`well_known::parse`] says. DNS answers
//! (SRV, A, AAAA, and negative answers) are cached by hickory's resolver for their TTLs.

use std::{
    cmp::Reverse,
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use hickory_resolver::{
    TokioResolver,
    config::{LookupIpStrategy, ResolverConfig},
    net::runtime::TokioRuntimeProvider,
    proto::rr::RData,
};
use ruma::OwnedServerName;
use tracing::debug;

use super::{DiscoveryError, Lookup, SrvTarget, well_known};
use crate::body;

/// The time allowed for fetching a well-known document, redirects included.
const WELL_KNOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest well-known document read.
const WELL_KNOWN_MAX_SIZE: usize = 64 * 1024;
/// The most redirects followed for a well-known document.
const WELL_KNOWN_MAX_REDIRECTS: usize = 5;
/// Cached well-known results past which expired ones are swept out.
const WELL_KNOWN_SWEEP_AT: usize = 1024;
/// DNS answers kept by the resolver.
const DNS_CACHE_SIZE: u64 = 4096;

/// [`Lookup`] over the network, with caches.
pub struct NetworkLookup {
    dns: Arc<TokioResolver>,
    http: reqwest::Client,
    well_known: Mutex<HashMap<String, CachedWellKnown>>,
}

struct CachedWellKnown {
    server: Option<OwnedServerName>,
    until: Instant,
}

impl NetworkLookup {
    /// A lookup using the system's DNS configuration (`/etc/resolv.conf`, the hosts file), and
    /// `tls` for fetching well-known documents.
    pub(crate) fn new(tls: rustls::ClientConfig) -> Result<Self, DiscoveryError> {
        let unusable = |reason: String| DiscoveryError {
            host: "(resolver)".to_owned(),
            reason,
        };
        let mut builder = match TokioResolver::builder_tokio() {
            Ok(builder) => builder,
            Err(error) => {
                debug!(%error, "no system DNS configuration; using the resolver's defaults");
                TokioResolver::builder_with_config(
                    ResolverConfig::default(),
                    TokioRuntimeProvider::default(),
                )
            }
        };
        builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        builder.options_mut().cache_size = DNS_CACHE_SIZE;
        let dns = Arc::new(
            builder
                .build()
                .map_err(|error| unusable(error.to_string()))?,
        );
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .dns_resolver(Arc::new(HickoryResolve(dns.clone())))
            .no_proxy()
            .timeout(WELL_KNOWN_TIMEOUT)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() > WELL_KNOWN_MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if attempt.url().scheme() != "https" {
                    attempt.error("redirect away from https")
                } else if attempt.previous().contains(attempt.url()) {
                    attempt.error("redirect loop")
                } else {
                    attempt.follow()
                }
            }))
            .user_agent(crate::USER_AGENT)
            .build()
            .map_err(|error| unusable(error.to_string()))?;
        Ok(NetworkLookup {
            dns,
            http,
            well_known: Mutex::new(HashMap::new()),
        })
    }

    async fn fetch_well_known(&self, hostname: &str) -> well_known::WellKnown {
        let url = format!("https://{hostname}/.well-known/matrix/server");
        let response = match self.http.get(&url).send().await {
            Ok(response) => response,
            Err(error) => {
                debug!(%hostname, error = %crate::error_chain(&error), "no well-known");
                return well_known::WellKnown::failure();
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        match body::read_limited(response, WELL_KNOWN_MAX_SIZE).await {
            Ok(body) => well_known::parse(status, &headers, &body, SystemTime::now()),
            Err(error) => {
                debug!(%hostname, ?error, "well-known body unreadable");
                well_known::WellKnown::failure()
            }
        }
    }
}

impl Lookup for NetworkLookup {
    async fn well_known(&self, hostname: &str) -> Option<OwnedServerName> {
        let key = hostname.to_ascii_lowercase();
        let now = Instant::now();
        {
            let cache = self
                .well_known
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(cached) = cache.get(&key).filter(|cached| cached.until > now) {
                return cached.server.clone();
            }
        }
        let fetched = self.fetch_well_known(hostname).await;
        debug!(%hostname, server = ?fetched.server, cache_for = ?fetched.cache_for, "well-known");
        let mut cache = self
            .well_known
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= WELL_KNOWN_SWEEP_AT {
            cache.retain(|_, cached| cached.until > now);
        }
        cache.insert(
            key,
            CachedWellKnown {
                server: fetched.server.clone(),
                until: now + fetched.cache_for,
            },
        );
        fetched.server
    }

    async fn srv(&self, name: &str) -> Vec<SrvTarget> {
        let lookup = match self.dns.srv_lookup(name).await {
            Ok(lookup) => lookup,
            Err(error) => {
                if !error.is_no_records_found() {
                    debug!(%name, %error, "SRV lookup failed");
                }
                return Vec::new();
            }
        };
        let mut records: Vec<_> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => Some(srv),
                _ => None,
            })
            // A target of "." says the service is not offered there.
            .filter(|srv| !srv.target.is_root())
            .collect();
        // Lowest priority first; within one priority, heavier weights first.
        records.sort_by_key(|srv| (srv.priority, Reverse(srv.weight)));
        records
            .into_iter()
            .map(|srv| SrvTarget {
                host: srv.target.to_ascii().trim_end_matches('.').to_owned(),
                port: srv.port,
            })
            .collect()
    }

    async fn ips(&self, hostname: &str) -> Result<Vec<IpAddr>, DiscoveryError> {
        let failed = |reason: String| DiscoveryError {
            host: hostname.to_owned(),
            reason,
        };
        let lookup = self
            .dns
            .lookup_ip(hostname)
            .await
            .map_err(|error| failed(error.to_string()))?;
        let ips: Vec<IpAddr> = lookup.iter().collect();
        if ips.is_empty() {
            return Err(failed("no A or AAAA records".to_owned()));
        }
        Ok(ips)
    }
}

/// reqwest's name resolution through hickory (for fetching well-known documents).
struct HickoryResolve(Arc<TokioResolver>);

impl reqwest::dns::Resolve for HickoryResolve {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let dns = self.0.clone();
        Box::pin(async move {
            let lookup = dns.lookup_ip(name.as_str()).await?;
            let addresses: Vec<SocketAddr> =
                lookup.iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

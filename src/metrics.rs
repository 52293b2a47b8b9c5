//! Prometheus metrics: what operators watch. One registry for the process, written to by
//! the router (requests), storage (batch writes), sync (held long-polls) and the
//! federation sender (transactions per destination), and read at `/metrics` on the
//! metrics listener (`[global.metrics]`) in the OpenMetrics text format.
//!
//! The registry is process-wide, as a logger is: instruments are recorded where things
//! happen, without threading a handle through every layer.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicI64, AtomicU64},
    },
    time::Duration,
};

use parking_lot::Mutex;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}`),
    /// `unmatched` for unknown paths: a bounded set.
    pub endpoint: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    pub destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub destination: String,
    /// `sent` or `failed`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurabilityLabels {
    /// `synced` (waits for the disk) or `unsynced`.
    pub durability: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PropertyLabels {
    pub property: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 33 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// Every instrument.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Histograms<EndpointLabels>,
    pub requests_in_flight: Gauge<i64, AtomicI64>,
    pub sync_waiters: Gauge<i64, AtomicI64>,
    pub storage_batch_duration: Histograms<DurabilityLabels>,
    pub federation_transactions: Family<OutcomeLabels, Counter>,
    pub federation_queued: Family<DestinationLabels, Gauge<i64, AtomicI64>>,
    pub federation_backoff: Family<DestinationLabels, Gauge<f64, AtomicU64>>,
    pub storage_properties: Family<PropertyLabels, Gauge<i64, AtomicI64>>,
    /// Read just before each scrape: values that are looked up rather than counted.
    on_scrape: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("palisade");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by endpoint, method and status",
            requests.clone(),
        );
        let request_duration: Histograms<EndpointLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by endpoint and method (a sync long-poll counts its wait)",
            request_duration.clone(),
        );
        let requests_in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being answered",
            requests_in_flight.clone(),
        );
        let sync_waiters = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "sync_waiters",
            "Syncs (/sync and sliding sync) held open, waiting for news",
            sync_waiters.clone(),
        );
        let storage_batch_duration: Histograms<DurabilityLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "storage_batch_duration_seconds",
            "Time to write one atomic storage batch",
            storage_batch_duration.clone(),
        );
        let federation_transactions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "federation_transactions",
            "Federation transactions sent to each destination, by outcome",
            federation_transactions.clone(),
        );
        let federation_queued = Family::<DestinationLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "federation_queued",
            "Items waiting for each destination (counted up to one transaction's worth, 150)",
            federation_queued.clone(),
        );
        let federation_backoff = Family::<DestinationLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "federation_backoff_seconds",
            "How long the sender waits before retrying each destination (0: not failing)",
            federation_backoff.clone(),
        );
        let storage_properties = Family::<PropertyLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "storage_property",
            "Storage engine figures (RocksDB properties summed over keyspaces, bytes or counts)",
            storage_properties.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            request_duration,
            requests_in_flight,
            sync_waiters,
            storage_batch_duration,
            federation_transactions,
            federation_queued,
            federation_backoff,
            storage_properties,
            on_scrape: Mutex::new(Vec::new()),
        }
    }

    /// Runs `refresh` before each scrape (to read storage figures, say).
    pub fn on_scrape(&self, refresh: impl Fn() + Send + Sync + 'static) {
        self.on_scrape.lock().push(Box::new(refresh));
    }

    /// The OpenMetrics text of every instrument.
    pub fn render(&self) -> String {
        for refresh in self.on_scrape.lock().iter() {
            refresh();
        }
        let mut text = String::new();
        if let Err(error) =
            prometheus_client::encoding::text::encode(&mut text, &self.registry.lock())
        {
            tracing::error!(%error, "metrics could not be written");
        }
        text
    }

    /// Records an answered request.
    pub fn request(&self, endpoint: &str, method: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_owned(),
                method: method.to_owned(),
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_owned(),
                method: method.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Records a storage batch write.
    pub fn storage_batch(&self, synced: bool, took: Duration) {
        let durability = if synced { "synced" } else { "unsynced" };
        self.storage_batch_duration
            .get_or_create(&DurabilityLabels {
                durability: durability.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Records a federation transaction's outcome and the destination's backoff.
    pub fn federation_transaction(&self, destination: &str, sent: bool, backoff: Duration) {
        let outcome = if sent { "sent" } else { "failed" };
        self.federation_transactions
            .get_or_create(&OutcomeLabels {
                destination: destination.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.federation_backoff
            .get_or_create(&DestinationLabels {
                destination: destination.to_owned(),
            })
            .set(backoff.as_secs_f64());
    }

    /// Records how many items wait for a destination.
    pub fn federation_queue(&self, destination: &str, items: usize) {
        self.federation_queued
            .get_or_create(&DestinationLabels {
                destination: destination.to_owned(),
            })
            .set(i64::try_from(items).unwrap_or(i64::MAX));
    }

    /// Sets a storage engine figure.
    pub fn storage_property(&self, property: &str, value: u64) {
        self.storage_properties
            .get_or_create(&PropertyLabels {
                property: property.to_owned(),
            })
            .set(i64::try_from(value).unwrap_or(i64::MAX));
    }
}

/// The process's instruments.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Counts a gauge up while alive (a request in flight, a held sync).
pub struct Tracked(Gauge<i64, AtomicI64>);

impl Tracked {
    pub fn new(gauge: &Gauge<i64, AtomicI64>) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.dec();
    }
}

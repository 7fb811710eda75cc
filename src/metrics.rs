//! Prometheus metrics: the core's [`Telemetry`](crate::core::telemetry::Telemetry) events
//! and the transports' connection and stream gauges, rendered as text at `/metrics` (main
//! port, or a separate listener).
//!
//! Every family has the `xferd_` prefix and, where it concerns traffic, one `protocol`
//! label (`h1`, `h2`, `h3`); error counters add the stable error `code`. Label values come
//! from fixed sets, so cardinality stays low whatever clients send; counters and histograms
//! have every series of those sets from start-up, at zero. Process metrics
//! (`process_*`) come from the prometheus crate's process collector.

use crate::core::buffers::Pool;
use crate::core::error::ALL_CODES;
use crate::core::profiles::Profiles;
use crate::core::retry::OPS;
use crate::core::telemetry::{Agent, Direction, Protocol, Route};
use prometheus::{
    exponential_buckets, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use std::sync::Arc;

mod cached;
mod events;
mod housekeeping;

use housekeeping::{housekeeping, Housekeeping};

struct Traffic {
    bytes: IntCounterVec,
    count: IntCounterVec,
    throughput: HistogramVec,
    latency: HistogramVec,
    errors: IntCounterVec,
    /// The series above per protocol, resolved once.
    by: [cached::TrafficSeries; 3],
}

pub struct Metrics {
    registry: Registry,
    upload: Traffic,
    download: Traffic,
    chunk_size: HistogramVec,
    chunk_latency: HistogramVec,
    ranges: IntCounterVec,
    pool_in_use: IntGauge,
    pool_pooled: IntGauge,
    pool_limit: IntGauge,
    buffer_optimal: IntGaugeVec,
    buffer_changes: IntCounterVec,
    chunk_advised: IntGaugeVec,
    bandwidth: GaugeVec,
    rtt: GaugeVec,
    reliability: GaugeVec,
    connections: IntGaugeVec,
    streams: IntGaugeVec,
    profiles: IntGauge,
    retries: IntCounterVec,
    /// Requests by route, client family and protocol.
    requests: IntCounterVec,
    breaker: Gauge,
    pool: Arc<Pool>,
    client_profiles: Arc<Profiles>,
    /// `[scan]`: scans by outcome (`xferd_scans_total`).
    scans: IntCounterVec,
    /// `[admin]`: admin API requests by route and status class (`xferd_admin_requests_total`).
    admin_requests: IntCounterVec,
    /// Requests read from HTTP/3 0-RTT early data, by outcome (`xferd_early_data_requests_total`).
    early_data: IntCounterVec,
    /// Expiry, quota and audit series (issue 12).
    housekeeping: Housekeeping,
    /// Series of the request path, resolved once (see [`cached`]).
    hot: Hot,
}

/// Per-protocol series the request path uses, resolved once.
struct Hot {
    connections: [IntGauge; 3],
    streams: [IntGauge; 3],
    requests: cached::Requests,
    ranges: [prometheus::IntCounter; 3],
    buffer_changes: [prometheus::IntCounter; 3],
    chunk_size: [prometheus::Histogram; 3],
    chunk_latency: [prometheus::Histogram; 3],
    buffer_optimal: cached::Lazy<IntGauge>,
    chunk_advised: cached::Lazy<IntGauge>,
    bandwidth: cached::Lazy<prometheus::Gauge>,
    rtt: cached::Lazy<prometheus::Gauge>,
    reliability: cached::Lazy<prometheus::Gauge>,
}

/// Routes of the admin API, as labelled in `xferd_admin_requests_total`.
pub const ADMIN_ROUTES: &[&str] = &[
    "health", "files", "stat", "delete", "usage", "sessions", "other",
];
/// Outcomes of admin API requests, as labelled.
pub const ADMIN_RESULTS: &[&str] = &["ok", "unauthorized", "client_error", "server_error"];

const P: &[&str] = &["protocol"];
const PC: &[&str] = &["protocol", "code"];

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| bug(name, e));
    register(r, name, c.clone());
    c
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), P)
        .unwrap_or_else(|e| bug(name, e));
    register(r, name, h.clone());
    h
}

fn gauge_vec(r: &Registry, name: &str, help: &str) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), P).unwrap_or_else(|e| bug(name, e));
    register(r, name, g.clone());
    g
}

fn int_gauge_vec(r: &Registry, name: &str, help: &str) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), P).unwrap_or_else(|e| bug(name, e));
    register(r, name, g.clone());
    g
}

fn int_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| bug(name, e));
    register(r, name, g.clone());
    g
}

fn register<C: prometheus::core::Collector + 'static>(r: &Registry, name: &str, c: C) {
    if let Err(e) = r.register(Box::new(c)) {
        bug(name, e)
    }
}

/// Metric definitions are constants; a failure here is a programming error caught by the
/// tests, never input-dependent.
fn bug(name: &str, e: prometheus::Error) -> ! {
    panic!("metric {name} is malformed: {e}")
}

fn traffic(r: &Registry, dir: &str) -> Traffic {
    let rate_buckets = exponential_buckets(64_000.0, 4.0, 10).unwrap_or_default();
    let time_buckets = exponential_buckets(0.001, 4.0, 12).unwrap_or_default();
    let bytes = counter(
        r,
        &format!("xferd_{dir}_bytes_total"),
        &format!("Bytes of {dir}s completed."),
        P,
    );
    let count = counter(
        r,
        &format!("xferd_{dir}s_total"),
        &format!("{dir}s completed."),
        P,
    );
    let throughput = histogram(
        r,
        &format!("xferd_{dir}_throughput_bytes_per_second"),
        &format!("Throughput of completed {dir}s."),
        rate_buckets,
    );
    let latency = histogram(
        r,
        &format!("xferd_{dir}_duration_seconds"),
        &format!("Duration of completed {dir}s."),
        time_buckets,
    );
    let errors = counter(
        r,
        &format!("xferd_{dir}_errors_total"),
        &format!("{dir} requests refused or failed, by stable error code."),
        PC,
    );
    Traffic {
        by: cached::TrafficSeries::resolve(&bytes, &count, &latency, &throughput),
        bytes,
        count,
        throughput,
        latency,
        errors,
    }
}

impl Metrics {
    /// Metrics over the server's buffer pool and client profiles (read at scrape time).
    pub fn new(pool: Arc<Pool>, client_profiles: Arc<Profiles>) -> Arc<Metrics> {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        register(
            &r,
            "process",
            prometheus::process_collector::ProcessCollector::for_self(),
        );
        let chunk_size = histogram(
            &r,
            "xferd_upload_chunk_size_bytes",
            "Size of resumable-upload chunks (tus PATCH, IETF append, HFS chunk).",
            exponential_buckets(65_536.0, 4.0, 9).unwrap_or_default(),
        );
        let chunk_latency = histogram(
            &r,
            "xferd_upload_chunk_duration_seconds",
            "Time to receive and store one resumable-upload chunk.",
            exponential_buckets(0.001, 4.0, 12).unwrap_or_default(),
        );
        let ranges = counter(
            &r,
            "xferd_range_requests_total",
            "Downloads with a Range header that was honoured.",
            P,
        );
        let buffer_changes = counter(
            &r,
            "xferd_buffer_size_changes_total",
            "Times a running transfer's buffer size was changed.",
            P,
        );
        let connections = int_gauge_vec(&r, "xferd_connections_active", "Open connections.");
        let streams = int_gauge_vec(
            &r,
            "xferd_streams_active",
            "Requests in progress (HTTP/2 and HTTP/3 streams, HTTP/1.1 requests).",
        );
        let requests = counter(
            &r,
            "xferd_requests_total",
            "Requests answered, by route (page, tus, ietf, hfs, form, put, download, \
             other), client family (browser, xmpp_client, curl, xferd_client, other) \
             and protocol.",
            &["route", "agent", "protocol"],
        );
        let hot = Hot {
            connections: cached::per_protocol(|l| connections.with_label_values(l)),
            streams: cached::per_protocol(|l| streams.with_label_values(l)),
            requests: cached::Requests::resolve(&requests),
            ranges: cached::per_protocol(|l| ranges.with_label_values(l)),
            buffer_changes: cached::per_protocol(|l| buffer_changes.with_label_values(l)),
            chunk_size: cached::per_protocol(|l| chunk_size.with_label_values(l)),
            chunk_latency: cached::per_protocol(|l| chunk_latency.with_label_values(l)),
            buffer_optimal: cached::Lazy::default(),
            chunk_advised: cached::Lazy::default(),
            bandwidth: cached::Lazy::default(),
            rtt: cached::Lazy::default(),
            reliability: cached::Lazy::default(),
        };
        let m = Metrics {
            upload: traffic(&r, "upload"),
            download: traffic(&r, "download"),
            chunk_size,
            chunk_latency,
            ranges,
            pool_in_use: int_gauge(
                &r,
                "xferd_buffer_pool_bytes_in_use",
                "Buffer memory held by running transfers.",
            ),
            pool_pooled: int_gauge(
                &r,
                "xferd_buffer_pool_bytes_idle",
                "Buffer memory kept in the pool's free lists.",
            ),
            pool_limit: int_gauge(
                &r,
                "xferd_buffer_pool_bytes_limit",
                "Configured cap on buffer memory (performance.buffer_memory_limit).",
            ),
            buffer_optimal: int_gauge_vec(
                &r,
                "xferd_buffer_size_optimal_bytes",
                "I/O buffer size most recently chosen by the adaptive engine.",
            ),
            buffer_changes,
            chunk_advised: int_gauge_vec(
                &r,
                "xferd_chunk_size_advised_bytes",
                "Chunk size most recently advised to a resumable-upload client.",
            ),
            bandwidth: gauge_vec(
                &r,
                "xferd_network_bandwidth_bytes_per_second",
                "Latest bandwidth estimate of a connection.",
            ),
            rtt: gauge_vec(
                &r,
                "xferd_network_rtt_seconds",
                "Latest smoothed round-trip time of a connection.",
            ),
            reliability: gauge_vec(
                &r,
                "xferd_network_reliability_ratio",
                "Latest delivery reliability (1 - packet loss) of a connection.",
            ),
            connections,
            streams,
            profiles: int_gauge(&r, "xferd_client_profiles", "Client profiles in memory."),
            retries: counter(
                &r,
                "xferd_storage_retries_total",
                "Storage operations retried after a transient failure.",
                &["op"],
            ),
            requests,
            breaker: {
                let g = Gauge::new(
                    "xferd_storage_circuit_open",
                    "1 while the storage circuit breaker is open.",
                )
                .unwrap_or_else(|e| bug("xferd_storage_circuit_open", e));
                register(&r, "xferd_storage_circuit_open", g.clone());
                g
            },
            housekeeping: housekeeping(&r),
            scans: counter(
                &r,
                "xferd_scans_total",
                "Virus scans of uploads by outcome (clean, infected, skipped over scan.max_size, failed_open, failed_closed).",
                &["outcome"],
            ),
            admin_requests: counter(
                &r,
                "xferd_admin_requests_total",
                "Admin API requests by route and result.",
                &["route", "result"],
            ),
            early_data: counter(
                &r,
                "xferd_early_data_requests_total",
                "HTTP/3 requests read from 0-RTT early data, before the handshake completed, by \
                 outcome: served (a safe method, at once), held (until the handshake, then \
                 served), refused (425: the connection was lost first, as a replay is).",
                &["outcome"],
            ),
            hot,
            registry: r,
            pool,
            client_profiles,
        };
        m.pool_limit
            .set(i64::try_from(m.pool.limit()).unwrap_or(i64::MAX));
        m.zero_series();
        Arc::new(m)
    }

    /// Creates every counter and histogram series of a fixed label set (protocol, error
    /// code, storage op) and the connection and stream gauges with zeros, so that
    /// dashboards and alerts see each family from start-up, not from its first event.
    fn zero_series(&self) {
        for p in Protocol::ALL {
            let l = [p.label()];
            for c in [
                &self.upload.bytes,
                &self.download.bytes,
                &self.upload.count,
                &self.download.count,
                &self.ranges,
                &self.buffer_changes,
            ] {
                c.with_label_values(&l);
            }
            for h in [
                &self.upload.throughput,
                &self.upload.latency,
                &self.download.throughput,
                &self.download.latency,
                &self.chunk_size,
                &self.chunk_latency,
            ] {
                h.with_label_values(&l);
            }
            // Gauges of a latest reading (buffer size chosen, chunk advised, bandwidth, RTT,
            // reliability) have no true zero and appear with their first reading.
            self.connections.with_label_values(&l);
            self.streams.with_label_values(&l);
            for code in ALL_CODES {
                self.upload.errors.with_label_values(&[p.label(), code]);
                self.download.errors.with_label_values(&[p.label(), code]);
            }
        }
        for op in OPS {
            self.retries.with_label_values(&[op]);
        }
        for route in Route::ALL {
            for agent in Agent::ALL {
                for p in Protocol::ALL {
                    self.requests
                        .with_label_values(&[route.label(), agent.label(), p.label()]);
                }
            }
        }
        for o in crate::core::scan::Outcome::ALL {
            self.scans.with_label_values(&[o.label()]);
        }
        for o in crate::core::telemetry::EarlyData::ALL {
            self.early_data.with_label_values(&[o.label()]);
        }
        for route in ADMIN_ROUTES {
            for result in ADMIN_RESULTS {
                self.admin_requests.with_label_values(&[route, result]);
            }
        }
    }

    /// Counts an admin API request (`route` from [`ADMIN_ROUTES`], `result` from
    /// [`ADMIN_RESULTS`]).
    pub fn admin_request(&self, route: &'static str, result: &'static str) {
        self.admin_requests
            .with_label_values(&[route, result])
            .inc();
    }

    fn traffic(&self, dir: Direction) -> &Traffic {
        match dir {
            Direction::Upload => &self.upload,
            Direction::Download => &self.download,
        }
    }

    /// Shows the usage of these quotas (set once, at start-up).
    pub fn set_quotas(&self, quotas: Arc<crate::core::quota::Quotas>) {
        let _ = self.housekeeping.quotas.set(quotas);
    }

    pub fn audit_written(&self) {
        self.housekeeping.audit_lines.inc();
    }

    pub fn audit_dropped(&self) {
        self.housekeeping.audit_dropped.inc();
    }

    fn render_quotas(&self) {
        let h = &self.housekeeping;
        let Some(q) = h.quotas.get() else { return };
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for u in q.usage() {
            let scope = if u.prefix.is_empty() {
                "total"
            } else {
                u.prefix.as_str()
            };
            h.quota_used.with_label_values(&[scope]).set(n(u.used));
            h.quota_reserved
                .with_label_values(&[scope])
                .set(n(u.reserved));
            h.quota_limit.with_label_values(&[scope]).set(n(u.max));
        }
    }

    /// Adds a collector owned elsewhere (the S3 backend's request counter) to `/metrics`.
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.register(c) {
            tracing::warn!(error = %e, "metric not registered");
        }
    }

    /// Counts an open connection until the guard drops.
    pub fn connection(self: &Arc<Self>, p: Protocol) -> Gauged {
        Gauged::new(self.hot.connections[p.index()].clone())
    }

    /// Counts a request in progress until the guard drops.
    pub fn stream(self: &Arc<Self>, p: Protocol) -> Gauged {
        Gauged::new(self.hot.streams[p.index()].clone())
    }
}

/// Decrements its gauge on drop.
pub struct Gauged(IntGauge);

impl Gauged {
    fn new(g: IntGauge) -> Gauged {
        g.inc();
        Gauged(g)
    }
}

impl Drop for Gauged {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests;

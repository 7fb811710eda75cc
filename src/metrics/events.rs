//! The core's [`Telemetry`] events, recorded into the [`Metrics`] families.

use super::Metrics;
use crate::core::readings::Estimate;
use crate::core::telemetry::{Agent, Direction, Protocol, Route, Telemetry};
use prometheus::{Encoder, TextEncoder};
use std::time::Duration;

impl Telemetry for Metrics {
    fn transfer(&self, dir: Direction, p: Protocol, bytes: u64, elapsed: Duration) {
        let t = &self.traffic(dir).by[p.index()];
        t.bytes.inc_by(bytes);
        t.count.inc();
        let secs = elapsed.as_secs_f64();
        t.latency.observe(secs);
        if secs > 0.0 {
            t.throughput.observe(bytes as f64 / secs);
        }
    }

    fn chunk(&self, p: Protocol, bytes: u64, elapsed: Duration) {
        let i = p.index();
        let up = &self.upload.by[i];
        up.bytes.inc_by(bytes);
        self.hot.chunk_size[i].observe(bytes as f64);
        let secs = elapsed.as_secs_f64();
        self.hot.chunk_latency[i].observe(secs);
        if secs > 0.0 {
            up.throughput.observe(bytes as f64 / secs);
        }
    }

    fn error(&self, dir: Direction, p: Protocol, code: &'static str) {
        self.traffic(dir)
            .errors
            .with_label_values(&[p.label(), code])
            .inc();
    }

    fn range_request(&self, p: Protocol) {
        self.hot.ranges[p.index()].inc();
    }

    fn buffer_size(&self, p: Protocol, size: usize, changed: bool) {
        if let Some(g) = self.hot.buffer_optimal.get(&self.buffer_optimal, p) {
            g.set(i64::try_from(size).unwrap_or(i64::MAX));
        }
        if changed {
            self.hot.buffer_changes[p.index()].inc();
        }
    }

    fn chunk_advised(&self, p: Protocol, size: u64) {
        if let Some(g) = self.hot.chunk_advised.get(&self.chunk_advised, p) {
            g.set(i64::try_from(size).unwrap_or(i64::MAX));
        }
    }

    fn network(&self, p: Protocol, e: &Estimate) {
        let hot = &self.hot;
        if let Some(g) = hot.bandwidth.get(&self.bandwidth, p) {
            g.set(e.bandwidth as f64);
        }
        if let Some(g) = hot.rtt.get(&self.rtt, p) {
            g.set(e.rtt.as_secs_f64());
        }
        if let Some(g) = hot.reliability.get(&self.reliability, p) {
            g.set(e.reliability());
        }
    }

    fn storage_retry(&self, op: &'static str) {
        self.retries.with_label_values(&[op]).inc();
    }

    fn breaker_open(&self, open: bool) {
        self.breaker.set(if open { 1.0 } else { 0.0 });
    }

    fn expired(&self, files: u64, bytes: u64) {
        self.housekeeping.expired_files.inc_by(files);
        self.housekeeping.expired_bytes.inc_by(bytes);
    }

    fn deduplicated(&self, bytes: u64) {
        self.housekeeping.dedup_saved.inc_by(bytes);
        self.housekeeping.dedup_linked.inc();
    }

    fn scan(&self, outcome: crate::core::scan::Outcome) {
        self.scans.with_label_values(&[outcome.label()]).inc();
    }

    fn request(&self, route: Route, agent: Agent, p: Protocol) {
        match self.hot.requests.get(route, agent, p) {
            Some(c) => c.inc(),
            None => self
                .requests
                .with_label_values(&[route.label(), agent.label(), p.label()])
                .inc(),
        }
    }

    fn early_data(&self, outcome: crate::core::telemetry::EarlyData) {
        self.early_data.with_label_values(&[outcome.label()]).inc();
    }

    fn render(&self) -> Option<String> {
        self.render_quotas();
        self.pool_in_use
            .set(i64::try_from(self.pool.in_use()).unwrap_or(i64::MAX));
        self.pool_pooled
            .set(i64::try_from(self.pool.pooled()).unwrap_or(i64::MAX));
        self.profiles
            .set(i64::try_from(self.client_profiles.len()).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .ok()?;
        String::from_utf8(out).ok()
    }
}

//! The series the request path touches, resolved once: `with_label_values` hashes its label
//! values and takes the family's lock on every call, which a profile of 4 KiB GETs showed
//! per request (the stream gauge, the request counter, the download counters). These arrays
//! hold the same series (clones share the value), indexed by [`Protocol::index`],
//! [`Route::index`] and [`Agent::index`]; the text exposition is unchanged.
//!
//! Gauges of a latest reading (buffer size chosen, chunk size advised, network estimates)
//! have no true zero and must appear only with their first reading, so they are resolved
//! on first use ([`OnceLock`]).

use crate::core::telemetry::{Agent, Protocol, Route};
use prometheus::core::{MetricVec, MetricVecBuilder};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};
use std::sync::OnceLock;

/// One direction's series of one protocol.
pub(super) struct TrafficSeries {
    pub bytes: IntCounter,
    pub count: IntCounter,
    pub latency: Histogram,
    pub throughput: Histogram,
}

impl TrafficSeries {
    pub fn resolve(
        bytes: &IntCounterVec,
        count: &IntCounterVec,
        latency: &HistogramVec,
        throughput: &HistogramVec,
    ) -> [TrafficSeries; 3] {
        Protocol::ALL.map(|p| {
            let l = [p.label()];
            TrafficSeries {
                bytes: bytes.with_label_values(&l),
                count: count.with_label_values(&l),
                latency: latency.with_label_values(&l),
                throughput: throughput.with_label_values(&l),
            }
        })
    }
}

/// A labelled family's series for each protocol.
pub(super) fn per_protocol<T, F: Fn(&[&str]) -> T>(resolve: F) -> [T; 3] {
    Protocol::ALL.map(|p| resolve(&[p.label()]))
}

/// `xferd_requests_total` for every route, agent and protocol.
pub(super) struct Requests(Vec<IntCounter>);

impl Requests {
    pub fn resolve(family: &IntCounterVec) -> Requests {
        let mut v = Vec::with_capacity(Route::ALL.len() * Agent::ALL.len() * Protocol::ALL.len());
        for route in Route::ALL {
            for agent in Agent::ALL {
                for p in Protocol::ALL {
                    v.push(family.with_label_values(&[route.label(), agent.label(), p.label()]));
                }
            }
        }
        Requests(v)
    }

    pub fn get(&self, route: Route, agent: Agent, p: Protocol) -> Option<&IntCounter> {
        let i =
            (route.index() * Agent::ALL.len() + agent.index()) * Protocol::ALL.len() + p.index();
        self.0.get(i)
    }
}

/// A gauge per protocol that appears with its first value.
pub(super) struct Lazy<G>([OnceLock<G>; 3]);

impl<G> Default for Lazy<G> {
    fn default() -> Self {
        Lazy([OnceLock::new(), OnceLock::new(), OnceLock::new()])
    }
}

impl<G> Lazy<G> {
    /// The series of `p` in `family`, resolved on first use.
    pub fn get<B>(&self, family: &MetricVec<B>, p: Protocol) -> Option<&G>
    where
        B: MetricVecBuilder<M = G>,
    {
        let slot = self.0.get(p.index())?;
        Some(slot.get_or_init(|| family.with_label_values(&[p.label()])))
    }
}

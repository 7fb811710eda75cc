//! # xferd
//!
//! A file-transfer server: XEP-0363 signed uploads and range downloads, identical over
//! HTTP/1.1, HTTP/2 (hyper, TCP+TLS) and HTTP/3 (quinn + h3, UDP) on one port.
//!
//! ## Layers
//!
//! ```text
//! storage    (leaf)
//! core       -> storage (the contract only)
//! metrics    -> core
//! tls        (leaf)
//! transport  -> core, metrics, tls
//! config     -> core, transport   (their option types)
//! client     -> core, tls, transport
//! server     -> config, core, metrics, storage, tls, transport, scan, admin
//! relay      (leaf)
//! scan       -> core, storage (the contract only)
//! admin      -> core, storage (the contract only), metrics
//! ```
//!
//! A module uses only the modules listed after it: storage imports nothing of the crate; the core
//! imports only the storage *contract* (`storage::{key, store, mem, meta}`), never a backend
//! nor `config` (the server maps the configuration to [`core::Settings`] and picks the
//! backends). `tests/boundaries.rs` checks this table on every `crate::` and `super::` path.
//!
//! ## Layout
//!
//! - [`config`]: TOML -> validated [`config::Config`] (sizes, durations, HFS key aliases).
//! - [`core`]: the protocol-neutral transfer core. It sees `http` request heads, a stream of
//!   body `Bytes` and the current time; it answers with an
//!   `http::Response` whose body is a [`core::body::Body`]. It imports
//!   neither hyper, h3, quinn nor tokio's networking (checked by `tests/boundaries.rs`).
//!   - [`core::auth`]: signature schemes v, v2/token, v3 (constant-time).
//!   - [`core::path`]: percent-decoding and validation of request paths.
//!   - [`core::range`]: `Range` parsing, merging and caps.
//!   - [`core::upload`]: single-shot PUT uploads.
//!   - [`core::download`]: conditional and range downloads.
//!   - [`core::response`]: outcomes and typed errors -> response heads.
//!   - [`core::resumable`]: the session engine behind tus, the IETF draft and HFS chunks.
//!   - [`core::readings`], [`core::sizing`], [`core::profiles`], [`core::adaptive`],
//!     [`core::buffers`]: the adaptive engine (connection readings -> buffer and chunk
//!     sizes, client history, the buffer pool).
//!   - [`core::retry`]: retry, backoff and circuit breaking for storage.
//!   - [`core::ratelimit`]: token buckets per client and per path prefix (`[rate_limit]`).
//!   - [`core::client_addr`]: the client address, from forwarding headers of trusted proxies
//!     only.
//!   - [`core::telemetry`]: the events the core reports (no Prometheus in the core).
//! - [`metrics`]: Prometheus registry and `/metrics`.
//! - [`storage`]: the storage contract ([`storage::store::Store`] for files,
//!   [`storage::store::PartStore`] for resumable uploads in progress, [`storage::key::Key`]
//!   names) and its backends: the local filesystem (temp file, fsync, atomic no-overwrite
//!   rename; positional reads; every path resolved beneath the root without following links,
//!   `storage::dirfd`) and an in-memory one for tests (`storage::mem`).
//! - [`transport`]: the two front doors (hyper over TCP, h3 over quinn), TLS, shutdown,
//!   and the readings each takes from its connections (`TCP_INFO`, quinn stats).
//! - [`client`]: the HTTP/1.1, HTTP/2 and HTTP/3 client behind `xferd upload` and
//!   `xferd download`, also used by the tests.
//! - [`server`]: wires config, core and transports together.
//! - [`scan`]: virus scanners for `[scan]` (clamd over INSTREAM), behind
//!   [`core::scan::Scanner`].
//! - [`admin`]: the admin API (`[admin]`): its own loopback listener with bearer-token
//!   routes over the storage contract and the session records, and the client behind
//!   `xferd admin ...`.
//! - [`relay`]: link emulators for tests and benchmarks: UDP and TCP relays (delay, jitter,
//!   rate, loss, blackouts, source-address changes) and `relay::wire`, a packet-level link
//!   between TUN devices in two network namespaces.

pub mod admin;
pub mod client;
pub mod config;
pub mod core;
pub mod metrics;
pub mod relay;
pub mod scan;
pub mod server;
pub mod sign_page;
pub mod storage;
pub mod tls;
pub mod transport;

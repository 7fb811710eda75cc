//! Shared by `tests/s3.rs` and `tests/s3_failures.rs` (included with `#[path]`): the
//! process's private SeaweedFS (started once, its bucket polled ready, bounded), stores on
//! a key prefix of a test's own, and a server on the s3 backend.
#![allow(dead_code)]

use super::common::s3 as weed;
use super::common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use xferd::client::Proto;
use xferd::storage::key::Key;
use xferd::storage::s3::{Credentials, S3Options, S3Store};

pub const PART: u64 = 5 << 20;

pub fn seaweed() -> Option<&'static weed::SeaweedFs> {
    static WEED: OnceLock<Option<weed::SeaweedFs>> = OnceLock::new();
    WEED.get_or_init(|| {
        let w = weed::start()?;
        let probe = std::sync::Arc::new(store_at(&w.endpoint, ""));
        w.wait_bucket(move || {
            let probe = probe.clone();
            async move { probe.check().await.is_ok() }
        });
        Some(w)
    })
    .as_ref()
}

/// After [`weed::SeaweedFs::restart`]: waits (bounded) until SeaweedFS serves the bytes of
/// `full` (a key stored before the stop, the bucket's prefix included) through S3 again.
/// Its S3 gateway finds its volumes some time after the port and the bucket answer (up to
/// 20 s and more on a loaded machine: GetObject answers 500 "volume 1 not found" until
/// then), and a test of xferd's recovery must not measure weed's.
pub fn wait_serving(w: &weed::SeaweedFs, full: &str) {
    use xferd::storage::store::Store;
    let (store, key) = (
        std::sync::Arc::new(store_at(&w.endpoint, "")),
        Key::parse(full).expect("key"),
    );
    w.wait_bucket(move || {
        let (store, key) = (store.clone(), key.clone());
        async move {
            let Ok(Some(obj)) = store.open(&key).await else {
                return false;
            };
            obj.read_at(0, obj.meta().len as usize).await.is_ok()
        }
    });
}

pub fn store_at(endpoint: &str, prefix: &str) -> S3Store {
    S3Store::new(
        S3Options {
            endpoint: endpoint.into(),
            region: "us-east-1".into(),
            bucket: weed::BUCKET.into(),
            prefix: prefix.into(),
            allow_http: true,
            part_size: PART,
            max_parts_in_flight: 2,
            credentials: Credentials {
                access_key_id: weed::ACCESS_KEY.into(),
                secret_access_key: weed::SECRET_KEY.into(),
                session_token: None,
            },
        },
        None,
    )
    .unwrap()
}

/// A test's view: its prefix, a store on it (to inspect the bucket) and a server on it.
pub struct Env {
    pub store: S3Store,
    pub srv: TestServer,
}

pub fn unique_prefix(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{name}-{}-{}/",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Points `c` at the test SeaweedFS `endpoint` (plain http, its bucket and keys) under
/// `prefix`.
pub fn use_s3(c: &mut xferd::config::Config, endpoint: String, prefix: String) {
    c.storage.backend = xferd::config::StorageBackend::S3;
    let s = &mut c.storage.s3;
    s.endpoint = endpoint;
    s.allow_http = true;
    s.bucket = weed::BUCKET.into();
    s.prefix = prefix;
    s.access_key_id = Some(weed::ACCESS_KEY.into());
    s.secret_access_key = Some(weed::SECRET_KEY.into());
}

pub async fn env(name: &str) -> Option<Env> {
    let w = seaweed()?;
    let prefix = unique_prefix(name);
    let endpoint = w.endpoint.clone();
    let p = prefix.clone();
    let srv = TestServer::start_with(move |c| {
        use_s3(c, endpoint, p);
        let s = &mut c.storage.s3;
        s.part_size = PART;
        s.max_parts_in_flight = 2;
    })
    .await;
    Some(Env {
        store: store_at(&w.endpoint, &prefix),
        srv,
    })
}

pub fn key(s: &str) -> Key {
    Key::parse(s).unwrap()
}

/// Waits (bounded, 10 s) for an async condition.
pub async fn until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// `xferd_s3_requests_total`, summed over operations (read from `/metrics`).
pub async fn s3_requests(srv: &TestServer) -> u64 {
    let mut c = srv.client(Proto::H1).await;
    let r = get(&mut c, "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter(|l| l.starts_with("xferd_s3_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

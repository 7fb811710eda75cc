//! The S3 backend when things go wrong, against a private SeaweedFS (see `tests/s3.rs`):
//! start-up fails clearly (non-zero exit, the problem named, the secret never printed) for
//! a missing bucket, wrong credentials, a dead endpoint and a name that does not resolve;
//! an outage after start-up is a server error, then 503 with Retry-After.

mod common;
#[path = "common/s3_env.rs"]
mod s3_env;

use common::s3 as weed;
use common::*;
use s3_env::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use xferd::client::Proto;
use xferd::storage::store::Store;

fn write_config(
    dir: &std::path::Path,
    endpoint: &str,
    bucket: &str,
    secret: &str,
) -> std::path::PathBuf {
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nstorage_path = \"{d}/data\"\nstate_path = \"{d}/state\"\n\
         [security]\nsecret = \"s\"\n\
         [storage]\nbackend = \"s3\"\n[storage.s3]\nendpoint = \"{endpoint}\"\nallow_http = true\n\
         bucket = \"{bucket}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{secret}\"\n",
        weed::ACCESS_KEY,
        d = dir.display()
    );
    let path = dir.join("xferd.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// `xferd serve` on `config` refuses to start within 30 s; what it said.
fn refused(config: &std::path::Path) -> String {
    serve_must_fail(config, Duration::from_secs(30))
}

#[test]
fn start_up_fails_clearly_for_a_missing_bucket_and_wrong_credentials() {
    let Some(w) = seaweed() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = refused(&write_config(
        dir.path(),
        &w.endpoint,
        "no-such-bucket",
        weed::SECRET_KEY,
    ));
    assert!(
        out.contains("no-such-bucket") && out.contains("does not exist"),
        "{out}"
    );
    let out = refused(&write_config(
        dir.path(),
        &w.endpoint,
        weed::BUCKET,
        "wrong-secret",
    ));
    assert!(out.contains("credentials"), "{out}");
    assert!(
        !out.contains("wrong-secret"),
        "the secret is never printed: {out}"
    );
    // Nothing listens there: the endpoint is named.
    let dead = format!("http://127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    let out = refused(&write_config(
        dir.path(),
        &dead,
        weed::BUCKET,
        weed::SECRET_KEY,
    ));
    assert!(
        out.contains("cannot connect") && out.contains(&dead[7..]),
        "{out}"
    );
    // A name that does not resolve: said so (bounded by the connect timeout).
    let nowhere = "http://xferd-no-such-host.invalid:9000";
    let out = refused(&write_config(
        dir.path(),
        nowhere,
        weed::BUCKET,
        weed::SECRET_KEY,
    ));
    assert!(
        out.contains("cannot resolve") && out.contains("xferd-no-such-host.invalid"),
        "{out}"
    );
}

/// A loopback TCP relay to SeaweedFS that can be cut (every connection closed, new ones
/// refused) to play an S3 outage.
struct Relay {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(to: u16) -> Relay {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (u, c) = (up.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut a, _)) = l.accept().await {
                if !u.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let job = tokio::spawn(async move {
                    if let Ok(mut b) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                    }
                });
                c.lock().unwrap().push(job);
            }
        });
        Relay {
            port,
            up,
            conns,
            accept,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for j in self.conns.lock().unwrap().drain(..) {
            j.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// S3 down after start-up: uploads and downloads fail with 5xx (never a client error, never
/// a hang) and, once the breaker opens, 503 with Retry-After.
#[tokio::test]
async fn an_s3_outage_is_a_server_error_then_503_with_retry_after() {
    let Some(w) = seaweed() else { return };
    let relay = Relay::start(w.port).await;
    let prefix = unique_prefix("outage");
    let endpoint = format!("http://127.0.0.1:{}", relay.port);
    let st = store_at(&w.endpoint, &prefix);
    let srv = TestServer::start_with(move |c| {
        use_s3(c, endpoint, prefix);
    })
    .await;
    let mut c = srv.client(Proto::H1).await;
    assert_eq!(
        put(&mut c, &signed_v("o.bin", 3), b"abc", &[]).await.status,
        201
    );
    assert_eq!(
        st.stat(&key("o.bin")).await.unwrap().map(|m| m.len),
        Some(3)
    );
    relay.cut();
    // Uploads alone open the breaker (their first storage call, the existence check, runs
    // under it): 5xx, then 503 with Retry-After. Before, every PUT was a 500 and the
    // breaker never saw them.
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..8 {
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            put(&mut c, &signed_v(&format!("p{i}.bin"), 3), b"abc", &[]),
        )
        .await
        .expect("answered in time");
        statuses.push(r.status.as_u16());
        if r.status == 503 {
            retry_after = r.header("retry-after").map(str::to_string);
            break;
        }
    }
    assert!(statuses.iter().all(|s| *s >= 500), "PUT: {statuses:?}");
    assert_eq!(statuses.last(), Some(&503), "PUT: {statuses:?}");
    assert!(retry_after.is_some_and(|v| v.parse::<u64>().is_ok_and(|n| n > 0)));
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..8 {
        let r = tokio::time::timeout(Duration::from_secs(30), get(&mut c, "/o.bin", &[]))
            .await
            .expect("answered in time");
        statuses.push(r.status.as_u16());
        if r.status == 503 {
            retry_after = r.header("retry-after").map(str::to_string);
            break;
        }
    }
    assert!(statuses.iter().all(|s| *s >= 500), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&503), "{statuses:?}");
    assert!(retry_after.is_some_and(|v| v.parse::<u64>().is_ok_and(|n| n > 0)));
    srv.stop().await;
}

//! `[rate_limit]` end to end over HTTP/1.1, HTTP/2 and HTTP/3: uploads and downloads have
//! separate per-client buckets, a refusal is 429 `rate_limited` with `Retry-After` (counted
//! in the error metrics, not a storage failure), a forged `X-Forwarded-For` changes nothing
//! (HFS believes it from anyone, so any client bypasses HFS's limit), a trusted proxy's
//! header names the client, exempt blocks are never limited, and a prefix's bucket is
//! shared by all its clients.

mod common;

use common::*;
use std::time::Duration;
use xferd::client::Proto;
use xferd::config::{Config, PrefixLimitConfig};

const BOUND: Duration = Duration::from_secs(60);

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// One token a minute (so nothing refills during a test), bursts of 2 uploads, 3 downloads.
fn limited(c: &mut Config) {
    let rl = &mut c.rate_limit;
    rl.enabled = true;
    rl.uploads_per_minute = 1;
    rl.upload_burst = 2;
    rl.downloads_per_minute = 1;
    rl.download_burst = 3;
}

fn assert_limited(r: &Reply, what: &str) {
    assert_eq!(r.status, 429, "{what}: {:?}", r.json());
    assert_eq!(r.json()["error"], "rate_limited", "{what}");
    let wait: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: Retry-After"));
    assert!((1..=60).contains(&wait), "{what}: Retry-After {wait}");
}

#[tokio::test]
async fn uploads_and_downloads_have_separate_buckets_on_every_protocol() {
    tokio::time::timeout(BOUND, async {
        for proto in Proto::ALL {
            let l = label(proto);
            // A server per protocol: all clients here are 127.0.0.1.
            let srv = TestServer::start_with(limited).await;
            let mut c = srv.client(proto).await;
            for i in 0..2 {
                let r = put(&mut c, &signed_v(&format!("f{i}.txt"), 2), b"hi", &[]).await;
                assert_eq!(r.status, 201, "{l} upload {i}: {:?}", r.json());
            }
            let r = put(&mut c, &signed_v("f2.txt", 2), b"hi", &[]).await;
            assert_limited(&r, &format!("{l} third upload"));
            assert_eq!(srv.stored_files(), vec!["f0.txt", "f1.txt"], "{l}");
            // Loopback is not exempt, and the download bucket is untouched by uploads.
            for i in 0..3 {
                let g = get(&mut c, "/f0.txt", &[]).await;
                assert_eq!(
                    (g.status.as_u16(), &g.body[..]),
                    (200, &b"hi"[..]),
                    "{l} {i}"
                );
            }
            let g = get(&mut c, "/f1.txt", &[]).await;
            assert_limited(&g, &format!("{l} fourth download"));
            let h = request(&mut c, "HEAD", "/f1.txt", &[], None).await;
            assert_eq!(h.status, 429, "{l} HEAD counts as a download");
            // Health and metrics are not limited; the refusals are counted by code.
            let r = request(&mut c, "GET", "/health", &[], None).await;
            assert_eq!(r.status, 200, "{l} health");
            let m = request(&mut c, "GET", "/metrics", &[], None).await;
            assert_eq!(m.status, 200, "{l} metrics");
            let text = String::from_utf8_lossy(&m.body).to_string();
            for (dir, n) in [("upload", 1.0), ("download", 2.0)] {
                let series =
                    format!("xferd_{dir}_errors_total{{code=\"rate_limited\",protocol=\"{l}\"}}");
                assert_eq!(sample(&text, &series), Some(n), "{series}");
                let storage =
                    format!("xferd_{dir}_errors_total{{code=\"storage_error\",protocol=\"{l}\"}}");
                assert_eq!(sample(&text, &storage), Some(0.0), "{storage}");
            }
            assert_eq!(
                sample(&text, "xferd_storage_circuit_open"),
                Some(0.0),
                "{l}"
            );
            srv.stop().await;
        }
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn forged_forwarding_headers_do_not_bypass_the_limit() {
    tokio::time::timeout(BOUND, async {
        for proto in [Proto::H1, Proto::H3] {
            let l = label(proto);
            let srv = TestServer::start_with(limited).await;
            let mut c = srv.client(proto).await;
            // What bypasses HFS: claim to be loopback, or someone new each time.
            let forged = [
                ("x-forwarded-for", "127.0.0.1"),
                ("x-forwarded-for", "198.51.100.1"),
                ("forwarded", "for=127.0.0.1"),
                ("x-real-ip", "198.51.100.2"),
            ];
            let mut created = 0;
            for (i, (name, value)) in forged.iter().enumerate() {
                let r = put(
                    &mut c,
                    &signed_v(&format!("x{i}.txt"), 1),
                    b"x",
                    &[(name, value)],
                )
                .await;
                match r.status.as_u16() {
                    201 => created += 1,
                    _ => assert_limited(&r, &format!("{l} {name}: {value}")),
                }
            }
            assert_eq!(created, 2, "{l}: only the burst, whatever the headers say");
            srv.stop().await;
        }
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_walked_from_the_right() {
    let srv = TestServer::start_with(|c| {
        limited(c);
        c.rate_limit.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        c.rate_limit.exempt = vec!["203.0.113.0/24".parse().unwrap()];
    })
    .await;
    tokio::time::timeout(BOUND, async {
        for proto in [Proto::H1, Proto::H3] {
            let l = label(proto);
            let mut c = srv.client(proto).await;
            let client = if proto == Proto::H1 {
                "198.51.100.7"
            } else {
                "198.51.100.8"
            };
            let up = |i: usize| signed_v(&format!("{l}/{i}.txt"), 1);
            // Two uploads from the client behind the proxy (the proxy appended its address
            // to what the client sent).
            let xff = format!("127.0.0.1, {client}");
            for i in 0..2 {
                let r = put(&mut c, &up(i), b"x", &[("x-forwarded-for", &xff)]).await;
                assert_eq!(r.status, 201, "{l} {i}: {:?}", r.json());
            }
            // The same client, whatever it puts on the left, or through a second proxy.
            for (i, xff) in [
                format!("203.0.113.5, {client}"),
                format!("{client}, 127.0.0.2"),
            ]
            .iter()
            .enumerate()
            {
                let r = put(&mut c, &up(10 + i), b"x", &[("x-forwarded-for", xff)]).await;
                assert_limited(&r, &format!("{l} {xff}"));
            }
            // Another client behind the same proxy has its own bucket.
            let r = put(&mut c, &up(20), b"x", &[("x-forwarded-for", "192.0.2.44")]).await;
            assert_eq!(r.status, 201, "{l}: {:?}", r.json());
            // An exempt client is never limited.
            for i in 0..5 {
                let r = put(
                    &mut c,
                    &up(30 + i),
                    b"x",
                    &[("x-forwarded-for", "203.0.113.9")],
                )
                .await;
                assert_eq!(r.status, 201, "{l} exempt {i}: {:?}", r.json());
            }
            // Forwarded is not the configured header: it names nobody, so the requests are
            // the proxy's own (127.0.0.1: 2 tokens, shared by both protocols' loops).
            if proto == Proto::H1 {
                let fwd = format!("for={client}");
                for i in 0..2 {
                    let r = put(&mut c, &up(40 + i), b"x", &[("forwarded", &fwd)]).await;
                    assert_eq!(r.status, 201, "{l} proxy's own {i}: {:?}", r.json());
                }
                let r = put(&mut c, &up(42), b"x", &[("forwarded", &fwd)]).await;
                assert_limited(&r, &format!("{l} proxy's own bucket"));
            }
        }
    })
    .await
    .expect("bounded");
    srv.stop().await;
}

#[tokio::test]
async fn a_prefix_bucket_is_shared_by_its_clients() {
    let srv = TestServer::start_with(|c| {
        limited(c);
        c.rate_limit.uploads_per_minute = 0; // no per-client limit
        c.rate_limit.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.rate_limit.proxy_header = xferd::core::client_addr::ProxyHeader::Forwarded;
        c.rate_limit.prefixes = vec![PrefixLimitConfig {
            path: "/shared/".into(),
            uploads_per_minute: 1,
            upload_burst: 2,
            downloads_per_minute: 0,
            download_burst: 0,
        }];
    })
    .await;
    tokio::time::timeout(BOUND, async {
        let mut c = srv.client(Proto::H3).await;
        for (i, who) in ["192.0.2.1", "[2001:db8::1]:443"].iter().enumerate() {
            let fwd = format!("for=\"{who}\"");
            let r = put(
                &mut c,
                &signed_v(&format!("shared/{i}.txt"), 1),
                b"x",
                &[("forwarded", &fwd)],
            )
            .await;
            assert_eq!(r.status, 201, "{who}: {:?}", r.json());
        }
        let fwd = [("forwarded", "for=192.0.2.3")];
        let r = put(&mut c, &signed_v("shared/2.txt", 1), b"x", &fwd).await;
        assert_limited(&r, "a third client under /shared/");
        // Outside the prefix nothing limits uploads (per-client rate 0 = unlimited).
        for i in 0..5 {
            let r = put(&mut c, &signed_v(&format!("other/{i}.txt"), 1), b"x", &fwd).await;
            assert_eq!(r.status, 201, "other {i}: {:?}", r.json());
        }
    })
    .await
    .expect("bounded");
    srv.stop().await;
}

//! Resilience end to end over HTTP/1.1, HTTP/2 and HTTP/3 against an in-process server:
//! client path conflicts are 409 and never trip the storage circuit breaker, the buffer
//! memory cap holds under concurrent uploads, and labelled metric families have their
//! series (at zero) from start-up.

mod common;

use common::*;
use std::time::Duration;
use xferd::client::Proto;

/// Every network step of a test finishes within this.
const BOUND: Duration = Duration::from_secs(60);

/// The value of one sample line (`name{labels} value`) in a text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn metrics_text(c: &xferd::client::Client) -> String {
    let r = request_on(c, "GET", "/metrics", &[], None).await;
    assert_eq!(r.status, 200);
    String::from_utf8(r.body.to_vec()).unwrap()
}

#[tokio::test]
async fn path_conflicts_are_409_and_do_not_trip_the_storage_breaker() {
    let srv = TestServer::start().await;
    tokio::time::timeout(BOUND, async {
        for proto in Proto::ALL {
            let l = label(proto);
            let mut c = srv.client(proto).await;
            let file = format!("{l}/a/b.txt");
            let r = put(&mut c, &signed_v(&file, 5), b"hello", &[]).await;
            assert_eq!(r.status, 201, "{l}: {:?}", r.json());
            // A component of the path is a file (ENOTDIR), ten times: more than the breaker's
            // threshold of backend failures.
            for (i, below) in [format!("{file}/c.txt"), format!("{file}/d/e.txt")]
                .iter()
                .cycle()
                .take(10)
                .enumerate()
            {
                let r = put(&mut c, &signed_v(below, 3), b"abc", &[]).await;
                assert_eq!(r.status, 409, "{l} #{i} {below}: {:?}", r.json());
                assert_eq!(r.json()["error"], "path_conflict", "{l} #{i}");
            }
            // The target is an existing directory.
            let dir = format!("{l}/a");
            let r = put(&mut c, &signed_v(&dir, 3), b"abc", &[]).await;
            assert_eq!(r.status, 409, "{l} {dir}: {:?}", r.json());
            // Storage still serves everyone: uploads and downloads.
            let ok = format!("{l}/after.bin");
            let data = pattern(7, 0, 3000);
            let r = put(&mut c, &signed_v(&ok, 3000), &data, &[]).await;
            assert_eq!(r.status, 201, "{l}: {:?}", r.json());
            let g = get(&mut c, &format!("/{ok}"), &[]).await;
            assert_eq!(g.status, 200, "{l}");
            assert_eq!(g.body, data, "{l}");
            let g = get(&mut c, &format!("/{file}"), &[]).await;
            assert_eq!((g.status.as_u16(), &g.body[..]), (200, &b"hello"[..]));
        }
        let text = metrics_text(&srv.client(Proto::H1).await).await;
        assert_eq!(sample(&text, "xferd_storage_circuit_open"), Some(0.0));
        for l in ["h1", "h2", "h3"] {
            let series =
                format!("xferd_upload_errors_total{{code=\"path_conflict\",protocol=\"{l}\"}}");
            assert_eq!(sample(&text, &series), Some(10.0), "{series}");
        }
    })
    .await
    .expect("bounded");
    srv.stop().await;
}

#[tokio::test]
async fn labelled_metric_families_have_zero_series_from_start_up() {
    let srv = TestServer::start().await;
    let text = tokio::time::timeout(BOUND, async {
        metrics_text(&srv.client(Proto::H1).await).await
    })
    .await
    .expect("bounded");
    for l in ["h1", "h2", "h3"] {
        for code in [
            "file_exists",
            "signature_invalid",
            "storage_error",
            "upload_not_found",
        ] {
            for dir in ["upload", "download"] {
                let series =
                    format!("xferd_{dir}_errors_total{{code=\"{code}\",protocol=\"{l}\"}}");
                assert_eq!(sample(&text, &series), Some(0.0), "{series}");
            }
        }
        for fam in [
            "xferd_upload_duration_seconds_count",
            "xferd_download_throughput_bytes_per_second_count",
            "xferd_upload_chunk_size_bytes_count",
            "xferd_buffer_size_changes_total",
        ] {
            let series = format!("{fam}{{protocol=\"{l}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
    }
    assert_eq!(
        sample(&text, "xferd_storage_retries_total{op=\"create\"}"),
        Some(0.0)
    );
    srv.stop().await;
}

/// `len` pattern bytes sent in `chunk`-byte pieces, one every `delay`.
fn slow_body(seed: u64, len: u64, chunk: usize, delay: Duration) -> xferd::core::body::BodyStream {
    Box::pin(futures_util::stream::unfold(0u64, move |sent| async move {
        if sent >= len {
            return None;
        }
        tokio::time::sleep(delay).await;
        let n = (len - sent).min(chunk as u64) as usize;
        Some((Ok(pattern(seed, sent, n)), sent + n as u64))
    }))
}

#[tokio::test]
async fn the_buffer_memory_limit_holds_under_concurrent_uploads() {
    // Room for two leases: each accounts two 4 KiB buffers.
    const MIN: u64 = 4096;
    const LIMIT: u64 = 4 * MIN;
    const LEN: u64 = 16 * MIN;
    let srv = TestServer::start_with(|c| {
        c.performance.min_buffer_size = MIN;
        c.performance.max_buffer_size = MIN;
        c.performance.buffer_memory_limit = LIMIT;
    })
    .await;
    tokio::time::timeout(BOUND, async {
        for proto in Proto::ALL {
            let l = label(proto);
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            // Samples accounted (in use + pooled) buffer memory while the uploads run.
            let sampler = {
                let c = srv.client(Proto::H1).await;
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut peak = 0.0f64;
                    let mut scrapes = 0u32;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) && scrapes < 2000 {
                        let text = metrics_text(&c).await;
                        let in_use = sample(&text, "xferd_buffer_pool_bytes_in_use").unwrap();
                        let idle = sample(&text, "xferd_buffer_pool_bytes_idle").unwrap();
                        peak = peak.max(in_use + idle);
                        scrapes += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    peak
                })
            };
            let mut uploads = Vec::new();
            for i in 0..4u64 {
                let c = srv.client(proto).await;
                let rel = format!("{l}/slow{i}.bin");
                uploads.push(tokio::spawn(async move {
                    let len = LEN.to_string();
                    let body = slow_body(i, LEN, MIN as usize, Duration::from_millis(40));
                    let r = request_on(
                        &c,
                        "PUT",
                        &signed_v(&rel, LEN),
                        &[("content-length", &len)],
                        Some(body),
                    )
                    .await;
                    (
                        rel,
                        i,
                        r.status.as_u16(),
                        r.header("retry-after").map(str::to_string),
                    )
                }));
            }
            let mut stored = Vec::new();
            for u in uploads {
                let (rel, seed, status, retry_after) = u.await.unwrap();
                match status {
                    201 => stored.push((rel, seed)),
                    503 => assert!(retry_after.is_some(), "{l} {rel}: 503 without Retry-After"),
                    other => panic!("{l} {rel}: status {other}"),
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let peak = sampler.await.unwrap();
            assert!(
                peak <= LIMIT as f64,
                "{l}: buffer memory reached {peak} bytes, over the limit of {LIMIT}"
            );
            assert!(
                peak >= (LIMIT / 2) as f64,
                "{l}: the sampler saw the uploads' buffers"
            );
            assert!(
                stored.len() >= 2,
                "{l}: only {} uploads stored",
                stored.len()
            );
            let mut c = srv.client(proto).await;
            for (rel, seed) in stored {
                let g = get(&mut c, &format!("/{rel}"), &[]).await;
                assert_eq!(g.status, 200, "{l} {rel}");
                let want: Vec<u8> = (0..LEN / MIN)
                    .flat_map(|k| pattern(seed, k * MIN, MIN as usize))
                    .collect();
                assert!(g.body == want, "{l} {rel}: data differs");
            }
        }
    })
    .await
    .expect("bounded");
    srv.stop().await;
}

//! The adaptive engine and metrics end to end: `/metrics` over h1, h2 and h3 after real
//! traffic, chunk advice on every acknowledgement, the `[performance]`, `[streaming]` and
//! `[metrics]` switches, and client profiles surviving a restart.

mod common;

use common::*;
use xferd::client::Proto;

/// The value of one sample line (`name{labels} value`) in a text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn metrics_text(srv: &TestServer) -> String {
    let mut c = srv.client(Proto::H1).await;
    let r = get(&mut c, "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    String::from_utf8(r.body.to_vec()).unwrap()
}

#[tokio::test]
async fn metrics_count_traffic_per_protocol() {
    let srv = TestServer::start().await;
    let data = pattern(1, 0, 300_000);
    let mut clients = Vec::new();
    for proto in Proto::ALL {
        let l = label(proto);
        let mut c = srv.client(proto).await;
        let rel = format!("{l}/m.bin");
        let r = put(&mut c, &signed_v(&rel, 300_000), &data, &[]).await;
        assert_eq!(r.status, 201, "{l}");
        let r = get(&mut c, &format!("/{rel}"), &[]).await;
        assert_eq!(r.body.len(), 300_000, "{l}");
        let r = get(&mut c, &format!("/{rel}"), &[("range", "bytes=0-99")]).await;
        assert_eq!(r.status, 206, "{l}");
        let bad = format!("/{l}/bad.bin?v=0000");
        let r = put(&mut c, &bad, b"xyz", &[]).await;
        assert_eq!(r.status, 403, "{l}");
        clients.push(c);
    }
    let mut text = String::new();
    for _ in 0..50 {
        text = metrics_text(&srv).await;
        // Download totals are recorded when the body has been handed over.
        if Proto::ALL.iter().all(|p| {
            sample(
                &text,
                &format!("xferd_download_bytes_total{{protocol=\"{}\"}}", label(*p)),
            ) >= Some(300_100.0)
        }) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for p in Proto::ALL {
        let l = label(p);
        let s = |name: &str| sample(&text, &format!("{name}{{protocol=\"{l}\"}}"));
        assert_eq!(
            s("xferd_upload_bytes_total"),
            Some(300_000.0),
            "{l}\n{text}"
        );
        assert_eq!(s("xferd_uploads_total"), Some(1.0), "{l}");
        assert_eq!(s("xferd_download_bytes_total"), Some(300_100.0), "{l}");
        assert_eq!(s("xferd_range_requests_total"), Some(1.0), "{l}");
        assert_eq!(
            s("xferd_upload_throughput_bytes_per_second_count"),
            Some(1.0),
            "{l}"
        );
        assert!(
            s("xferd_buffer_size_optimal_bytes").unwrap() >= 32768.0,
            "{l}"
        );
        assert!(s("xferd_network_rtt_seconds").is_some(), "{l}: readings");
        assert!(
            s("xferd_network_bandwidth_bytes_per_second").unwrap() > 0.0,
            "{l}"
        );
        let rel = s("xferd_network_reliability_ratio").unwrap();
        assert!((0.0..=1.0).contains(&rel), "{l}");
        let code =
            format!("xferd_upload_errors_total{{code=\"signature_invalid\",protocol=\"{l}\"}}");
        assert_eq!(sample(&text, &code), Some(1.0), "{l}");
    }
    // The h2 and h3 clients are still connected; the metrics request itself is on h1.
    for l in ["h1", "h2", "h3"] {
        let open = sample(
            &text,
            &format!("xferd_connections_active{{protocol=\"{l}\"}}"),
        );
        assert!(open >= Some(1.0), "{l}: {open:?}");
    }
    assert_eq!(
        sample(&text, "xferd_streams_active{protocol=\"h1\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "xferd_buffer_pool_bytes_limit"),
        Some(64.0 * 1048576.0)
    );
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 0.0);
    drop(clients);
    srv.stop().await;
}

#[tokio::test]
async fn fixed_buffers_and_range_requests_off() {
    let srv = TestServer::start_with(|c| {
        c.performance.adaptive_buffers = false;
        c.performance.min_buffer_size = 32 << 10;
        c.performance.max_buffer_size = 32 << 10;
        c.streaming.range_requests = false;
    })
    .await;
    let mut c = srv.client(Proto::H2).await;
    let data = pattern(2, 0, 200_000);
    assert_eq!(
        put(&mut c, &signed_v("r.bin", 200_000), &data, &[])
            .await
            .status,
        201
    );
    let r = get(&mut c, "/r.bin", &[("range", "bytes=0-9")]).await;
    assert_eq!(r.status, 200, "Range ignored when range_requests = false");
    assert_eq!(r.header("accept-ranges"), Some("none"));
    assert_eq!(r.body, data);
    let text = metrics_text(&srv).await;
    assert_eq!(
        sample(&text, "xferd_buffer_size_optimal_bytes{protocol=\"h2\"}"),
        Some(32768.0)
    );
    assert_eq!(
        sample(&text, "xferd_range_requests_total{protocol=\"h2\"}"),
        Some(0.0)
    );
    srv.stop().await;
}

#[tokio::test]
async fn chunk_advice_on_creation_and_every_acknowledgement() {
    let (min, max) = (256u64 << 10, 2u64 << 20);
    let srv = TestServer::start_with(|c| {
        c.performance.min_chunk_size = min;
        c.performance.max_chunk_size = max;
    })
    .await;
    let within = |v: u64| (min..=max).contains(&v) && v.is_power_of_two();
    for proto in Proto::ALL {
        let l = label(proto);
        let mut c = srv.client(proto).await;
        // HFS: chunk_size in the creation answer, the hint on each chunk's answer.
        let rel = format!("{l}/advice/h.bin");
        let url = format!(
            "/chunked-upload?{}",
            v3("POST", &rel).split_once('?').unwrap().1
        );
        let size = 20_000_000u64.to_string();
        let r = request(
            &mut c,
            "POST",
            &url,
            &[("x-filename", &rel), ("x-total-size", &size)],
            None,
        )
        .await;
        assert_eq!(r.status, 201, "{l}");
        let chunk = r.json()["chunk_size"].as_u64().unwrap();
        assert!(within(chunk), "{l}: {chunk}");
        let id = r.json()["session_id"].as_str().unwrap().to_string();
        let data = pattern(3, 0, chunk as usize);
        let len = chunk.to_string();
        let r = request(
            &mut c,
            "PUT",
            "/chunked-upload",
            &[
                ("x-upload-session-id", &id),
                ("x-chunk-number", "0"),
                ("content-length", &len),
            ],
            Some(body_once(data)),
        )
        .await;
        assert_eq!(r.status, 200, "{l}: {:?}", r.body);
        let hint: u64 = r.header("xferd-chunk-size").unwrap().parse().unwrap();
        assert!(within(hint), "{l}: {hint}");

        // tus: the hint on creation and on each PATCH.
        let rel = format!("{l}/advice/t.bin");
        let r = request(
            &mut c,
            "POST",
            &v3("POST", &rel),
            &[("tus-resumable", "1.0.0"), ("upload-length", "400000")],
            None,
        )
        .await;
        assert_eq!(r.status, 201, "{l}");
        assert!(within(
            r.header("xferd-chunk-size").unwrap().parse().unwrap()
        ));
        let loc = r.header("location").unwrap().to_string();
        let r = request(
            &mut c,
            "PATCH",
            &loc,
            &[
                ("tus-resumable", "1.0.0"),
                ("upload-offset", "0"),
                ("content-type", "application/offset+octet-stream"),
                ("content-length", "400000"),
            ],
            Some(body_once(pattern(4, 0, 400_000))),
        )
        .await;
        assert_eq!(r.status, 204, "{l}");
        assert!(within(
            r.header("xferd-chunk-size").unwrap().parse().unwrap()
        ));

        // IETF: max-append-size in Upload-Limit on the acknowledgement.
        let rel = format!("{l}/advice/i.bin");
        let r = request(
            &mut c,
            "PUT",
            &v3("PUT", &rel),
            &[
                ("upload-draft-interop-version", "7"),
                ("upload-complete", "?0"),
                ("content-length", "1000"),
            ],
            Some(body_once(pattern(5, 0, 1000))),
        )
        .await;
        assert!(r.status.is_success(), "{l}: {} {:?}", r.status, r.body);
        let limit = r.header("upload-limit").unwrap();
        let append: u64 = limit
            .split(',')
            .find_map(|p| p.trim().strip_prefix("max-append-size="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(within(append), "{l}: {limit}");
    }
    let text = metrics_text(&srv).await;
    for l in ["h1", "h2", "h3"] {
        let chunks = format!("xferd_upload_chunk_size_bytes_count{{protocol=\"{l}\"}}");
        assert!(sample(&text, &chunks) >= Some(2.0), "{l}\n{text}");
        let advised = format!("xferd_chunk_size_advised_bytes{{protocol=\"{l}\"}}");
        assert!(within(sample(&text, &advised).unwrap() as u64), "{l}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn fixed_chunking_uses_the_configured_size() {
    let srv = TestServer::start_with(|c| {
        c.resumable.chunk_size = 1 << 20;
        c.performance.chunk_adaptation_algorithm = xferd::config::ChunkAlgorithm::Fixed;
    })
    .await;
    let mut c = srv.client(Proto::H3).await;
    let rel = "fixed/t.bin";
    let r = request(
        &mut c,
        "POST",
        &v3("POST", rel),
        &[("tus-resumable", "1.0.0"), ("upload-length", "100")],
        None,
    )
    .await;
    assert_eq!(r.header("xferd-chunk-size"), Some("1048576"));
    srv.stop().await;
}

#[tokio::test]
async fn separate_metrics_listener_and_metrics_off() {
    let srv = TestServer::start_with(|c| {
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = srv.server.as_ref().unwrap().metrics_addr.unwrap();
    let text = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("xferd_buffer_pool_bytes_in_use"));
    let mut c = srv.client(Proto::H1).await;
    assert_eq!(get(&mut c, "/metrics", &[]).await.status, 404);
    srv.stop().await;

    let srv = TestServer::start_with(|c| c.metrics.enabled = false).await;
    let mut c = srv.client(Proto::H2).await;
    assert_eq!(get(&mut c, "/metrics", &[]).await.status, 404);
    srv.stop().await;
}

#[tokio::test]
async fn client_profiles_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let data = dir.path().join("data");
    let start = |state: std::path::PathBuf, data: std::path::PathBuf| async move {
        TestServer::start_with(move |c| {
            c.server.state_path = state;
            c.server.storage_path = data;
        })
        .await
    };
    let srv = start(state.clone(), data.clone()).await;
    let mut c = srv.client(Proto::H1).await;
    let body = pattern(6, 0, 1 << 20);
    assert_eq!(
        put(&mut c, &signed_v("p.bin", 1 << 20), &body, &[])
            .await
            .status,
        201
    );
    let text = metrics_text(&srv).await;
    assert_eq!(sample(&text, "xferd_client_profiles"), Some(1.0));
    drop(c);
    srv.stop().await;

    let srv = start(state, data).await;
    let text = metrics_text(&srv).await;
    assert_eq!(sample(&text, "xferd_client_profiles"), Some(1.0), "{text}");
    srv.stop().await;
}

/// A PUT whose body stays open until `release` fires; meanwhile, does a GET on the same
/// connection complete?
async fn get_completes_beside_open_upload(srv: &TestServer, proto: Proto) -> bool {
    use bytes::Bytes;
    use std::sync::Arc;
    let c = Arc::new(srv.client(proto).await);
    let data = pattern(7, 0, 1000);
    let mut h = srv.client(proto).await;
    let seen = format!("m/seen-{}.bin", label(proto));
    assert_eq!(
        put(&mut h, &signed_v(&seen, 1000), &data, &[]).await.status,
        201
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let body: xferd::core::body::BodyStream =
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok(b), rx))
        }));
    let rel = format!("m/open-{}.bin", label(proto));
    let url = signed_v(&rel, 2000);
    let c2 = c.clone();
    let upload = tokio::spawn(async move {
        request_on(&c2, "PUT", &url, &[("content-length", "2000")], Some(body)).await
    });
    tx.send(pattern(8, 0, 1000)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let got = tokio::time::timeout(
        std::time::Duration::from_millis(700),
        request_on(&c, "GET", &format!("/{seen}"), &[], None),
    )
    .await
    .is_ok();
    tx.send(pattern(8, 1000, 1000)).await.unwrap();
    drop(tx);
    assert_eq!(upload.await.unwrap().status, 201);
    got
}

#[tokio::test]
async fn connection_multiplexing_switch() {
    let srv = TestServer::start().await;
    for p in [Proto::H2, Proto::H3] {
        assert!(
            get_completes_beside_open_upload(&srv, p).await,
            "{}",
            label(p)
        );
    }
    srv.stop().await;
    let srv = TestServer::start_with(|c| c.streaming.connection_multiplexing = false).await;
    for p in [Proto::H2, Proto::H3] {
        assert!(
            !get_completes_beside_open_upload(&srv, p).await,
            "{}",
            label(p)
        );
    }
    srv.stop().await;
}

#[tokio::test]
async fn bandwidth_estimation_off_takes_no_readings() {
    let srv = TestServer::start_with(|c| c.streaming.bandwidth_estimation = false).await;
    for proto in Proto::ALL {
        let mut c = srv.client(proto).await;
        let rel = format!("{}/n.bin", label(proto));
        let data = pattern(9, 0, 500_000);
        assert_eq!(
            put(&mut c, &signed_v(&rel, 500_000), &data, &[])
                .await
                .status,
            201
        );
    }
    let text = metrics_text(&srv).await;
    assert!(!text.contains("xferd_network_rtt_seconds{"), "{text}");
    assert_eq!(
        sample(&text, "xferd_uploads_total{protocol=\"h3\"}"),
        Some(1.0)
    );
    srv.stop().await;
}

//! Resilience end to end over HTTP/1.1, HTTP/2 and HTTP/3 against an in-process server:
//! client path conflicts are 409 and never trip the storage circuit breaker.

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

//! xferd's own client against a refusal that arrives while the request body is still going
//! out (issue 10, item 19): a 50 MB PUT onto a path that already holds a file. The server
//! answers 409 at once and stops reading; the client must report that 409, at once and
//! without retrying, over HTTP/3, HTTP/2 and HTTP/1.1.

mod common;

use common::*;
use std::time::{Duration, Instant};
use xferd::client::chunked::{self, Options, Target};
use xferd::client::Proto;

const LEN: u64 = 50 << 20;

fn options(srv: &TestServer, proto: Proto) -> Options {
    client_options(srv, Some(proto), 1)
}

#[tokio::test]
async fn a_conflict_during_a_large_put_is_reported_at_once() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    {
        // 50 MB made in 1 MB pieces (never all in memory).
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        for i in 0..(LEN >> 20) {
            f.write_all(&pattern(19, i << 20, 1 << 20)).unwrap();
        }
        f.flush().unwrap();
    }
    for proto in [Proto::H3, Proto::H2, Proto::H1] {
        let l = label(proto);
        let rel = format!("{l}/taken.bin");
        let mut c = srv.client(proto).await;
        let first = put(&mut c, &signed_v(&rel, 5), b"first", &[]).await;
        assert_eq!(first.status, 201, "{l}: {:?}", first.json());
        let target = Target {
            addr: srv.addr(),
            host: "localhost".into(),
            path_q: signed_v(&rel, LEN),
        };
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            Duration::from_secs(60),
            chunked::upload(&src, target, options(&srv, proto)),
        )
        .await
        .unwrap_or_else(|_| panic!("{l}: the upload did not end within 60 s"));
        let took = started.elapsed();
        let err = match outcome {
            Ok(r) => panic!(
                "{l}: the upload succeeded onto an existing file: {:?}",
                r.server
            ),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains("409") && err.contains("already exists"),
            "{l}: the client did not report the server's 409: {err}"
        );
        assert!(!err.contains("attempts"), "{l}: retried a 409: {err}");
        assert!(took < Duration::from_secs(10), "{l}: took {took:?}: {err}");
        assert_eq!(
            std::fs::read(srv.storage().join(&rel)).unwrap(),
            b"first",
            "{l}: the existing file changed"
        );
    }
    srv.stop().await;
}

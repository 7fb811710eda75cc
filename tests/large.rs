//! A 200 MB upload and download over each of HTTP/1.1, HTTP/2 and HTTP/3, streamed on both
//! sides, checking SHA-256 and that the process's peak memory stays bounded. Its own test
//! binary, so the peak-RSS reading is not shared with other tests.

mod common;

use common::*;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use xferd::client::Proto;

const SIZE: u64 = 200 * 1000 * 1000;

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_megabytes_each_way_with_bounded_memory() {
    let srv = TestServer::start().await;
    let before = vm_hwm_kib();
    for (i, proto) in Proto::ALL.into_iter().enumerate() {
        let l = label(proto);
        let seed = 100 + i as u64;
        let mut expected = Sha256::new();
        let mut body = generated_body(SIZE, seed, 64 * 1024);
        // Hash what we send by regenerating the same stream.
        while let Some(chunk) = body.next().await {
            expected.update(chunk.unwrap());
        }
        let expected = hex::encode(expected.finalize());

        let mut c = srv.client(proto).await;
        let rel = format!("{l}/big.bin");
        let len = SIZE.to_string();
        let r = request(
            &mut c,
            "PUT",
            &signed_v(&rel, SIZE),
            &[("content-length", &len)],
            Some(generated_body(SIZE, seed, 64 * 1024)),
        )
        .await;
        assert_eq!(r.status, 201, "{l}: {:?}", r.body);
        assert_eq!(
            r.json()["sha256"],
            expected.as_str(),
            "{l} server-side hash"
        );

        let req = http::Request::builder()
            .method("GET")
            .uri(format!("/{rel}"))
            .body(())
            .unwrap();
        let resp = c.send(req, None).await.unwrap();
        assert_eq!(resp.status, 200);
        let mut got = Sha256::new();
        let mut n = 0u64;
        let mut stream = resp.body;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            n += chunk.len() as u64;
            got.update(&chunk);
        }
        assert_eq!(n, SIZE, "{l} length");
        assert_eq!(hex::encode(got.finalize()), expected, "{l} download hash");
    }
    let grown_mib = (vm_hwm_kib().saturating_sub(before)) / 1024;
    // Client and server share this process; 600 MB moved through it. Buffering a whole file
    // would add >= 190 MiB.
    assert!(grown_mib < 100, "peak RSS grew by {grown_mib} MiB");
    srv.stop().await;
}

//! Many slow clients at once: buffer memory follows each transfer's rate (buffers rule 4),
//! so slow uploads do not lock out the ones that come after them.

mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::time::Duration;
use xferd::client::Proto;
use xferd::core::body::BodyStream;

/// `len` bytes of pattern `seed`, `piece` bytes every `every`.
fn paced_body(len: u64, seed: u64, piece: usize, every: Duration) -> BodyStream {
    Box::pin(futures_util::stream::unfold(0u64, move |sent| async move {
        if sent >= len {
            return None;
        }
        if sent > 0 {
            tokio::time::sleep(every).await;
        }
        let n = (len - sent).min(piece as u64) as usize;
        Some((Ok(pattern(seed, sent, n)), sent + n as u64))
    }))
}

/// What [`paced_body`] sends.
fn paced_bytes(len: u64, seed: u64, piece: usize) -> Vec<u8> {
    (0..len)
        .step_by(piece)
        .flat_map(|off| pattern(seed, off, (len - off).min(piece as u64) as usize))
        .collect()
}

/// 40 uploads of 1 MiB at 128 KiB/s each, all at once, with 1 MiB buffers and 8 MiB of
/// buffer memory for all: before rule 4 the first took 2 MiB each (then halving shares), the
/// rest waited 5 s - less than a slow client needs to fill, and so give back, a large buffer
/// - and got 503 `buffers_exhausted`. Now every one is stored whole, over h1 and h3, and a
/// fast upload that comes among them still gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_do_not_exhaust_buffer_memory_for_later_clients() {
    const N: usize = 40;
    const LEN: u64 = 1 << 20;
    const PIECE: usize = 64 << 10;
    let srv = TestServer::start_with(|c| c.performance.buffer_memory_limit = 8 << 20).await;
    for proto in [Proto::H1, Proto::H3] {
        let l = label(proto);
        let mut tasks = Vec::new();
        for i in 0..N {
            let mut c = srv.client(proto).await;
            let path = signed_v(&format!("slow/{l}-{i}.bin"), LEN);
            tasks.push(tokio::spawn(async move {
                let body = paced_body(LEN, i as u64, PIECE, Duration::from_millis(500));
                let r = request(
                    &mut c,
                    "PUT",
                    &path,
                    &[("content-length", &LEN.to_string())],
                    Some(body),
                )
                .await;
                (
                    r.status.as_u16(),
                    r.header("xferd-error").map(str::to_string),
                )
            }));
        }
        // While they run: a fast 8 MiB upload from another client.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut c = srv.client(proto).await;
        let fast = pattern(7, 0, 8 << 20);
        let r = put(
            &mut c,
            &signed_v(&format!("fast-{l}.bin"), fast.len() as u64),
            &fast,
            &[],
        )
        .await;
        assert_eq!(
            r.status, 201,
            "{l}: fast upload among slow ones: {:?}",
            r.body
        );
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(
                tokio::time::timeout(Duration::from_secs(60), t)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        let refused: Vec<_> = outcomes.iter().filter(|o| o.0 != 201).collect();
        assert!(
            refused.is_empty(),
            "{l}: {} of {N} refused: {:?}",
            refused.len(),
            &refused[..refused.len().min(5)]
        );
        for i in 0..N {
            let stored = std::fs::read(srv.storage().join(format!("slow/{l}-{i}.bin"))).unwrap();
            assert_eq!(
                hex::encode(Sha256::digest(&stored)),
                hex::encode(Sha256::digest(paced_bytes(LEN, i as u64, PIECE))),
                "{l} upload {i}"
            );
        }
    }
    srv.stop().await;
}

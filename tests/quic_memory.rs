//! QUIC memory under a fast uploader (issue 15): the real server binary takes HTTP/3
//! uploads from the real client binary (`xferd upload --http 3`) at full speed on loopback,
//! and its peak RSS (`VmHWM`) grows by less than a bound.
//!
//! What this guards: h3 0.0.8 read one chunk from the QUIC stream per poll into its own
//! buffer and gave back at most the rest of the current frame, so under a fast upload its
//! buffer grew by a chunk per DATA frame, past flow control, each chunk keeping a large
//! quinn reassembly allocation alive (see `src/transport/h3_guard.rs`). How much it grew
//! depended on how often the reader found data waiting: with the code before the fix (a
//! release build standing in as the server) one 1 GiB upload grew the server by 110 MiB in
//! one run and 20 MiB in another. With h3 fed frame-cut pieces the growth is the receive
//! windows and transfer buffers: 12-14 MiB measured with the debug server, bound 44 MiB.

mod common;

use common::*;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use xferd::core::auth::Scheme;

const MIB: u64 = 1 << 20;
/// Bytes per upload: long enough for h3's old per-frame growth to show (it grew with the
/// number of DATA frames; at 256 MiB it stayed within the bound).
const SIZE: u64 = 1024 * MIB;
/// Concurrent uploads, one connection each.
const UPLOADS: usize = 1;
/// Most the server's peak RSS may grow over its warmed-up peak (KiB).
const GROWTH_LIMIT_KIB: u64 = 44 * 1024;
/// Longest one run of the uploads may take (a debug server on a loaded machine).
const UPLOAD_DEADLINE: Duration = Duration::from_secs(300);

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    for _ in 0..100 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP");
}

/// Peak resident set of `pid` in KiB (`VmHWM`).
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// A file of `len` bytes: one pseudo-random MiB over and over (memory is what is measured,
/// not content).
fn write_file(path: &std::path::Path, len: u64) {
    let block = pattern(7, 0, MIB as usize);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut done = 0;
    while done < len {
        let n = (len - done).min(MIB) as usize;
        f.write_all(&block[..n]).unwrap();
        done += n as u64;
    }
    f.flush().unwrap();
}

/// Runs `xferd upload --http 3` of `file` to `rel` on each of `rels` at once; waits (bounded)
/// for all and asserts they succeeded.
fn upload_all(port: u16, file: &std::path::Path, rels: &[String], state: &std::path::Path) {
    let expires = now_unix() + 3600;
    let mut children: Vec<Proc> = rels
        .iter()
        .enumerate()
        .map(|(i, rel)| {
            let url = format!(
                "https://127.0.0.1:{port}{}",
                signed("", Scheme::V3, "PUT", rel, 0, "", expires)
            );
            Proc(
                Command::new(env!("CARGO_BIN_EXE_xferd"))
                    .arg("upload")
                    .arg(file)
                    .arg(url)
                    .args(["--http", "3", "--insecure", "--quiet", "--retries", "1"])
                    .arg("--state")
                    .arg(state.join(format!("upload-{i}.json")))
                    .env("XFERD_LOG", "off")
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let start = Instant::now();
    for (i, c) in children.iter_mut().enumerate() {
        let status = loop {
            if let Some(s) = c.0.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < UPLOAD_DEADLINE,
                "upload {i} not done after {UPLOAD_DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        if let Some(mut e) = c.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        assert!(status.success(), "upload {i} failed: {status}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_h3_uploads_keep_server_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let cfg = d.join("xferd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nstorage_path = \"{d}/data\"\nstate_path = \"{d}/state\"\nmax_upload_size = \"1GB\"\n[security]\nsecret = \"{SECRET}\"\n",
            d = d.display()
        ),
    )
    .unwrap();
    let server = Proc(
        Command::new(env!("CARGO_BIN_EXE_xferd"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("XFERD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = server.0.id();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(roots) = xferd::tls::read_certs(&d.join("state/cert.pem")) {
            if let Ok(mut c) =
                xferd::client::Client::connect(xferd::client::Proto::H1, addr, "localhost", &roots)
                    .await
            {
                if get(&mut c, "/health", &[]).await.status == 200 {
                    ready = true;
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "server did not become ready");

    let state = d.join("client");
    std::fs::create_dir_all(&state).unwrap();
    // Warm-up: the same paths (TLS, QUIC, storage, buffers) with a small upload each, so
    // that the baseline is a working server's, not an idle one's.
    let small = d.join("small.bin");
    write_file(&small, 8 * MIB);
    let warm: Vec<String> = (0..UPLOADS).map(|i| format!("m/warm-{i}.bin")).collect();
    tokio::task::block_in_place(|| upload_all(port, &small, &warm, &state));
    let base = vm_hwm_kib(pid);

    let big = d.join("big.bin");
    write_file(&big, SIZE);
    let rels: Vec<String> = (0..UPLOADS).map(|i| format!("m/big-{i}.bin")).collect();
    let started = Instant::now();
    tokio::task::block_in_place(|| upload_all(port, &big, &rels, &state));
    let secs = started.elapsed().as_secs_f64();
    let peak = vm_hwm_kib(pid);
    for rel in &rels {
        let stored = std::fs::metadata(d.join("data").join(rel)).unwrap().len();
        assert_eq!(stored, SIZE, "{rel} stored whole");
    }
    let growth = peak.saturating_sub(base);
    println!(
        "{UPLOADS} x {} MiB over h3 in {secs:.1} s ({:.0} MB/s): server VmHWM {} -> {} KiB (+{} KiB)",
        SIZE / MIB,
        (UPLOADS as u64 * SIZE) as f64 / 1e6 / secs,
        base,
        peak,
        growth
    );
    assert!(
        growth < GROWTH_LIMIT_KIB,
        "server peak RSS grew by {growth} KiB (limit {GROWTH_LIMIT_KIB} KiB) during {UPLOADS} fast h3 uploads of {} MiB",
        SIZE / MIB
    );
    drop(server);
}

//! Several instances (issue 11, sections 3 and 4): two real `xferd serve` processes, A and B,
//! sharing one storage backend, one Redis (a private redis-server per test, see
//! `common/redis.rs`), the secret and the certificate. A tus upload half-sent to A resumes
//! on B after A is SIGKILLed; a client reconnecting to B makes A's stale request commit;
//! HFS chunks of one upload go to A and B in parallel; the same key PUT on both gives one
//! 201 and one 409; a file uploaded through A downloads from B with ranges; B starting does
//! not delete A's uploads in progress; with Redis down resumable requests get 503 +
//! Retry-After while signed PUT and GET keep working, and service resumes when it is back;
//! a cluster refuses to start with a generated secret or certificate.
//!
//! The backend is a parameter ([`BACKENDS`]); today the fs backend over one shared root
//! (two instances on a shared disk). Every wait is bounded; every test has a time limit.

mod common;

use bytes::Bytes;
use common::redis::RedisServer;
use common::*;
use futures_util::StreamExt;
use http::Request;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use xferd::client::{Client, Proto};
use xferd::core::auth::Scheme;

const TUS: (&str, &str) = ("tus-resumable", "1.0.0");
const OCTETS: (&str, &str) = ("content-type", "application/offset+octet-stream");

/// The storage the instances share.
#[derive(Debug, Clone, Copy)]
enum Backend {
    /// One storage root on a shared file system.
    Fs,
}

/// The backends every test runs on.
const BACKENDS: &[Backend] = &[Backend::Fs];

impl Backend {
    /// The `[server]` lines placing the shared storage.
    fn server_toml(self, shared: &Path) -> String {
        match self {
            Backend::Fs => format!("storage_path = \"{}\"\n", shared.join("data").display()),
        }
    }

    /// Waits (bounded) until the data of session `id` holds `n` bytes, where the backend
    /// lets a test see it; otherwise waits a fixed while.
    async fn wait_written(self, shared: &Path, id: &str, n: u64) {
        match self {
            Backend::Fs => {
                let part = shared.join(format!("data/.xferd-sessions/{id}.part"));
                let deadline = Instant::now() + Duration::from_secs(10);
                while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < n {
                    assert!(Instant::now() < deadline, "{n} bytes never reached {part:?}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Names of temporary files of plain PUTs in progress under `dir` (where visible).
    fn temp_files(self, shared: &Path, dir: &str) -> Vec<String> {
        match self {
            Backend::Fs => std::fs::read_dir(shared.join("data").join(dir))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.starts_with(".xferd-tmp-"))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// What the instances share: a directory, a Redis, the certificate.
struct Cluster {
    backend: Backend,
    dir: tempfile::TempDir,
    redis: RedisServer,
    cert: PathBuf,
    key: PathBuf,
    roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    lease_secs: u64,
    commit_every: u64,
}

/// One `xferd serve` process; killed (SIGKILL) when dropped.
struct Instance {
    child: Option<Child>,
    addr: std::net::SocketAddr,
    log: PathBuf,
}

impl Instance {
    /// SIGKILL, as a crash: nothing is flushed, no lock released.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = libc::pid_t::try_from(c.id()).expect("pid");
            // SAFETY: signalling our own child by its PID.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Cluster {
    /// `None` when redis-server is not installed (the test is skipped, see common/redis.rs).
    fn new(backend: Backend, lease_secs: u64, commit_every: u64) -> Option<Cluster> {
        let redis = RedisServer::start()?;
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let pair = xferd::tls::load_or_generate(None, None, &pki).expect("certificate");
        let (cert, key) = (pki.join("cert.pem"), pki.join("key.pem"));
        Some(Cluster {
            backend,
            dir,
            redis,
            cert,
            key,
            roots: pair.chain,
            lease_secs,
            commit_every,
        })
    }

    fn shared(&self) -> &Path {
        self.dir.path()
    }

    /// An instance's configuration: its own state directory and port, the rest shared.
    fn config(&self, name: &str, port: u16, cluster: &str, identity: bool) -> PathBuf {
        let own = self.shared().join(name);
        std::fs::create_dir_all(&own).unwrap();
        let mut t = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nstate_path = \"{}\"\nshutdown_grace = 2\n{}",
            own.join("state").display(),
            self.backend.server_toml(self.shared()),
        );
        if identity {
            t += &format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[security]\nsecret = \"{SECRET}\"\n",
                self.cert.display(),
                self.key.display()
            );
        }
        t += &format!(
            "[resumable]\ncommit_every = {}\nchunk_size = 65536\n[performance]\n\
             intelligent_chunking = false\nmin_chunk_size = 65536\n{cluster}",
            self.commit_every
        );
        let path = own.join("xferd.toml");
        std::fs::write(&path, t).unwrap();
        path
    }

    fn cluster_toml(&self) -> String {
        format!(
            "[cluster]\nredis_url = \"{}\"\nlock_lease = {}\nredis_timeout = 1\n",
            self.redis.url(),
            self.lease_secs
        )
    }

    /// Starts instance `name` and waits (bounded: 20 s) until it answers `/health`.
    async fn spawn(&self, name: &str) -> Instance {
        let port = free_port();
        let cfg = self.config(name, port, &self.cluster_toml(), true);
        let log = self.shared().join(name).join("log");
        let child = Command::new(env!("CARGO_BIN_EXE_xferd"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn xferd");
        let mut inst = Instance {
            child: Some(child),
            addr: ([127, 0, 0, 1], port).into(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(Ok(Some(st))) = inst.child.as_mut().map(|c| c.try_wait()) {
                panic!("{name} exited ({st}): {}", read(&inst.log));
            }
            if let Ok(mut c) = Client::connect(Proto::H1, inst.addr, "localhost", &self.roots).await
            {
                if get(&mut c, "/health", &[]).await.status == 200 {
                    return inst;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{name} did not become ready: {}", read(&inst.log));
    }

    async fn client(&self, i: &Instance) -> Client {
        Client::connect(Proto::H1, i.addr, "localhost", &self.roots)
            .await
            .expect("client connects")
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn v3(method: &str, rel: &str) -> String {
    signed("", Scheme::V3, method, rel, 0, "", now_unix() + 600)
}

/// Every test runs within this.
async fn limited(f: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(90), f)
        .await
        .expect("test finished within its time limit");
}

async fn tus_create(c: &mut Client, rel: &str, len: usize) -> String {
    let len = len.to_string();
    let r = request(
        c,
        "POST",
        &v3("POST", rel),
        &[TUS, ("upload-length", &len)],
        None,
    )
    .await;
    assert_eq!(r.status, 201, "tus create: {:?}", r.body);
    r.header("location").unwrap().to_string()
}

async fn tus_offset(c: &mut Client, loc: &str) -> u64 {
    let h = request(c, "HEAD", loc, &[TUS], None).await;
    assert_eq!(h.status, 200, "HEAD {loc}");
    h.header("upload-offset").unwrap().parse().unwrap()
}

async fn tus_patch(c: &mut Client, loc: &str, offset: u64, data: Bytes) -> Reply {
    let (off, len) = (offset.to_string(), data.len().to_string());
    let h = [TUS, OCTETS, ("upload-offset", &off), ("content-length", &len)];
    request(c, "PATCH", loc, &h, Some(body_once(data))).await
}

/// A PATCH whose body sends `sent` and then hangs (a phone that lost its network), declaring
/// `declared` bytes; resolves to the status, or an error once the connection dies.
fn hanging_patch(
    c: Client,
    loc: &str,
    sent: Bytes,
    declared: u64,
) -> tokio::task::JoinHandle<Result<u16, String>> {
    let loc = loc.to_string();
    tokio::spawn(async move {
        let req = Request::builder()
            .method("PATCH")
            .uri(&loc)
            .header(TUS.0, TUS.1)
            .header(OCTETS.0, OCTETS.1)
            .header("upload-offset", "0")
            .header("content-length", declared.to_string())
            .body(())
            .unwrap();
        let body: xferd::core::body::BodyStream = Box::pin(
            futures_util::stream::iter(vec![Ok(sent)]).chain(futures_util::stream::pending()),
        );
        let r = c.send(req, Some(body)).await.map_err(|e| e.to_string())?;
        Ok(r.status.as_u16())
    })
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn session_id(loc: &str) -> &str {
    loc.rsplit('/').next().unwrap()
}

#[tokio::test]
async fn a_tus_upload_half_sent_to_a_resumes_on_b_after_a_is_killed() {
    limited(async {
        for &backend in BACKENDS {
            let Some(cl) = Cluster::new(backend, 2, 64 << 10) else {
                return;
            };
            let (mut a, b) = (cl.spawn("a").await, cl.spawn("b").await);
            let data = pattern(1, 0, 1 << 20);
            let mut ca = cl.client(&a).await;
            let loc = tus_create(&mut ca, "cluster/killed.bin", data.len()).await;
            let half = 512 << 10;
            let stale = hanging_patch(ca, &loc, data.slice(..half), data.len() as u64);
            backend.wait_written(cl.shared(), session_id(&loc), half as u64).await;
            // A dies mid-request: its lock stays in Redis until its lease runs out.
            a.kill();
            let _ = stale.await;
            let mut cb = cl.client(&b).await;
            let started = Instant::now();
            let offset = tus_offset(&mut cb, &loc).await;
            assert!(
                started.elapsed() < Duration::from_secs(cl.lease_secs * 3 + 2),
                "{backend:?}: B waited {:?} for a dead holder's lock",
                started.elapsed()
            );
            // Progress is committed every 64 KiB: what A committed before it died.
            assert!(
                offset > 0 && offset <= half as u64 && offset % (64 << 10) == 0,
                "{backend:?}: offset {offset}"
            );
            let r = tus_patch(&mut cb, &loc, offset, data.slice(offset as usize..)).await;
            assert_eq!(r.status, 204, "{backend:?}: resume on B: {:?}", r.body);
            let got = get(&mut cb, "/cluster/killed.bin", &[]).await;
            assert_eq!(got.status, 200, "{backend:?}");
            assert_eq!(sha(&got.body), sha(&data), "{backend:?}: SHA-256 of the file");
        }
    })
    .await;
}

#[tokio::test]
async fn a_client_reconnecting_to_b_makes_the_stale_request_on_a_commit() {
    limited(async {
        for &backend in BACKENDS {
            // A long lease: B must not get the lock by its expiry, only by A releasing it.
            let Some(cl) = Cluster::new(backend, 30, 64 << 20) else {
                return;
            };
            let (a, b) = (cl.spawn("a").await, cl.spawn("b").await);
            let data = pattern(2, 0, 600_000);
            let mut ca = cl.client(&a).await;
            let loc = tus_create(&mut ca, "cluster/reconnect.bin", data.len()).await;
            let sent = 333_333;
            let stale = hanging_patch(ca, &loc, data.slice(..sent), data.len() as u64);
            // A holds the bytes in its buffer (nothing reaches the data file before a
            // commit is due): give them time to arrive.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let mut cb = cl.client(&b).await;
            let started = Instant::now();
            // Nothing was committed yet (commit_every is 64 MiB): B's offset query asks A's
            // request to stop, A commits every byte it had, then B answers.
            let offset = tus_offset(&mut cb, &loc).await;
            assert_eq!(offset, sent as u64, "{backend:?}: A committed what it had");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{backend:?}: took {:?} (waited for the lease?)",
                started.elapsed()
            );
            let status = tokio::time::timeout(Duration::from_secs(10), stale)
                .await
                .expect("the stale request ends")
                .unwrap();
            // Told with a 409 (preempted), unless its connection closed before the answer.
            assert!(
                matches!(status, Ok(409) | Err(_)),
                "{backend:?}: the stale request got {status:?}"
            );
            let r = tus_patch(&mut cb, &loc, offset, data.slice(sent..)).await;
            assert_eq!(r.status, 204, "{backend:?}: {:?}", r.body);
            let got = get(&mut cb, "/cluster/reconnect.bin", &[]).await;
            assert_eq!(sha(&got.body), sha(&data), "{backend:?}");
            drop(a);
        }
    })
    .await;
}

#[tokio::test]
async fn hfs_chunks_of_one_upload_go_to_a_and_b_in_parallel() {
    limited(async {
        for &backend in BACKENDS {
            let Some(cl) = Cluster::new(backend, 5, 64 << 10) else {
                return;
            };
            let (a, b) = (cl.spawn("a").await, cl.spawn("b").await);
            let rel = "cluster/hfs chunks.bin";
            let data = pattern(3, 0, 10 * 65536 + 1234);
            let url = format!(
                "/chunked-upload?{}",
                v3("POST", rel).split_once('?').unwrap().1
            );
            let total = data.len().to_string();
            let mut ca = cl.client(&a).await;
            let r = request(
                &mut ca,
                "POST",
                &url,
                &[("x-filename", rel), ("x-total-size", &total)],
                None,
            )
            .await;
            assert_eq!(r.status, 201, "{backend:?}: {:?}", r.body);
            let id = r.json()["session_id"].as_str().unwrap().to_string();
            let chunks = r.json()["total_chunks"].as_u64().unwrap();
            assert_eq!(chunks, 11);
            // One connection per chunk, odd chunks to A, even ones to B, all at once.
            let cl = &cl;
            let sends = (0..chunks).map(|n| {
                let target = if n % 2 == 1 { &a } else { &b };
                let (data, id) = (data.clone(), id.clone());
                async move {
                    let mut c = cl.client(target).await;
                    let start = (n * 65536) as usize;
                    let end = (start + 65536).min(data.len());
                    let (len, num) = ((end - start).to_string(), n.to_string());
                    let h = [
                        ("x-upload-session-id", id.as_str()),
                        ("x-chunk-number", num.as_str()),
                        ("content-length", len.as_str()),
                    ];
                    let body = Some(body_once(data.slice(start..end)));
                    (n, request(&mut c, "PUT", "/chunked-upload", &h, body).await)
                }
            });
            for (n, r) in futures_util::future::join_all(sends).await {
                assert_eq!(r.status, 200, "{backend:?} chunk {n}: {:?}", r.body);
            }
            let mut cb = cl.client(&b).await;
            let s = get(&mut cb, &format!("/upload-status?session_id={id}"), &[]).await;
            assert_eq!(s.json()["completed"].as_bool(), Some(true), "{:?}", s.body);
            assert_eq!(s.json()["uploaded_bytes"].as_u64(), Some(data.len() as u64));
            let got = get(&mut ca, &format!("/{}", encode_path(rel)), &[]).await;
            assert_eq!(sha(&got.body), sha(&data), "{backend:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn the_same_key_put_on_a_and_b_gives_one_201_and_one_409() {
    limited(async {
        for &backend in BACKENDS {
            let Some(cl) = Cluster::new(backend, 5, 64 << 10) else {
                return;
            };
            let (a, b) = (cl.spawn("a").await, cl.spawn("b").await);
            for round in 0..5u64 {
                let rel = format!("cluster/race-{round}.bin");
                let (da, db) = (pattern(10 + round, 0, 300_000), pattern(20 + round, 0, 300_000));
                let url = signed_v(&rel, da.len() as u64);
                let (mut ca, mut cb) = (cl.client(&a).await, cl.client(&b).await);
                let (ra, rb) = tokio::join!(
                    put(&mut ca, &url, &da, &[]),
                    put(&mut cb, &url, &db, &[])
                );
                let mut statuses = [ra.status.as_u16(), rb.status.as_u16()];
                statuses.sort();
                assert_eq!(statuses, [201, 409], "{backend:?} round {round}");
                let got = get(&mut ca, &format!("/{rel}"), &[]).await;
                let winner = if ra.status == 201 { &da } else { &db };
                assert_eq!(&got.body, winner, "{backend:?}: the 201's bytes are stored");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_file_uploaded_through_a_downloads_from_b_with_ranges() {
    limited(async {
        for &backend in BACKENDS {
            let Some(cl) = Cluster::new(backend, 5, 64 << 10) else {
                return;
            };
            let (a, b) = (cl.spawn("a").await, cl.spawn("b").await);
            let data = pattern(4, 0, 200_000);
            let mut ca = cl.client(&a).await;
            let r = put(&mut ca, &signed_v("cluster/ranges.bin", 200_000), &data, &[]).await;
            assert_eq!(r.status, 201, "{backend:?}");
            let mut cb = cl.client(&b).await;
            let r = get(&mut cb, "/cluster/ranges.bin", &[("range", "bytes=1000-1999")]).await;
            assert_eq!(r.status, 206, "{backend:?}");
            assert_eq!(r.header("content-range"), Some("bytes 1000-1999/200000"));
            assert_eq!(r.body, data.slice(1000..2000));
            let r = get(&mut cb, "/cluster/ranges.bin", &[("range", "bytes=-500")]).await;
            assert_eq!(r.status, 206, "{backend:?}");
            assert_eq!(r.body, data.slice(199_500..));
            let r = get(&mut cb, "/cluster/ranges.bin", &[]).await;
            assert_eq!(sha(&r.body), sha(&data), "{backend:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn b_starting_does_not_delete_what_a_has_in_progress() {
    limited(async {
        for &backend in BACKENDS {
            let Some(cl) = Cluster::new(backend, 5, 64 << 10) else {
                return;
            };
            let a = cl.spawn("a").await;
            let data = pattern(5, 0, 400_000);
            // A tus upload with committed progress, and a plain PUT still streaming.
            let mut ca = cl.client(&a).await;
            let loc = tus_create(&mut ca, "cluster/in-progress.bin", data.len()).await;
            let r = tus_patch(&mut ca, &loc, 0, data.slice(..131_072)).await;
            assert_eq!(r.status, 204, "{backend:?}");
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
            let body: xferd::core::body::BodyStream =
                Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|b| (Ok(b), rx))
                }));
            let plain = pattern(6, 0, 200_000);
            let put_url = signed_v("cluster/plain-in-progress.bin", plain.len() as u64);
            let pc = cl.client(&a).await;
            let putting = tokio::spawn(async move {
                let req = Request::builder()
                    .method("PUT")
                    .uri(put_url)
                    .header("content-length", "200000")
                    .body(())
                    .unwrap();
                pc.send(req, Some(body)).await.map(|r| r.status.as_u16())
            });
            tx.send(plain.slice(..100_000)).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while backend.temp_files(cl.shared(), "cluster").is_empty() {
                assert!(Instant::now() < deadline, "the PUT's temporary file never appeared");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let temps = backend.temp_files(cl.shared(), "cluster");
            let b = cl.spawn("b").await;
            assert_eq!(
                backend.temp_files(cl.shared(), "cluster"),
                temps,
                "{backend:?}: B's start-up sweep removed A's upload in progress"
            );
            tx.send(plain.slice(100_000..)).await.unwrap();
            let status = tokio::time::timeout(Duration::from_secs(10), putting)
                .await
                .expect("the PUT finishes")
                .unwrap()
                .expect("PUT");
            assert_eq!(status, 201, "{backend:?}: A's PUT completes");
            let mut cb = cl.client(&b).await;
            assert_eq!(tus_offset(&mut cb, &loc).await, 131_072, "{backend:?}");
            let r = tus_patch(&mut cb, &loc, 131_072, data.slice(131_072..)).await;
            assert_eq!(r.status, 204, "{backend:?}: {:?}", r.body);
            let got = get(&mut cb, "/cluster/in-progress.bin", &[]).await;
            assert_eq!(sha(&got.body), sha(&data), "{backend:?}");
            let got = get(&mut cb, "/cluster/plain-in-progress.bin", &[]).await;
            assert_eq!(got.body, plain, "{backend:?}");
        }
    })
    .await;
}

/// Asserts the answer of a resumable request while Redis is down.
fn assert_store_unavailable(r: &Reply, what: &str) {
    assert_eq!(r.status, 503, "{what}: {:?}", r.body);
    assert_eq!(r.header("xferd-error"), Some("session_store_unavailable"), "{what}");
    let wait: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!(wait >= 1, "{what}");
}

#[tokio::test]
async fn with_redis_down_resumable_uploads_get_503_and_plain_put_and_get_keep_working() {
    limited(async {
        for &backend in BACKENDS {
            let Some(mut cl) = Cluster::new(backend, 5, 64 << 10) else {
                return;
            };
            let a = cl.spawn("a").await;
            let mut c = cl.client(&a).await;
            let loc = tus_create(&mut c, "cluster/before.bin", 1000).await;
            let stored = pattern(7, 0, 5000);
            let r = put(&mut c, &signed_v("cluster/stored.bin", 5000), &stored, &[]).await;
            assert_eq!(r.status, 201);

            cl.redis.stop();
            let len = [TUS, ("upload-length", "1000")];
            let r = request(&mut c, "POST", &v3("POST", "cluster/x.bin"), &len, None).await;
            assert_store_unavailable(&r, "tus creation");
            let r = request(&mut c, "HEAD", &loc, &[TUS], None).await;
            assert_store_unavailable(&r, "tus offset");
            let r = tus_patch(&mut c, &loc, 0, Bytes::from_static(b"abc")).await;
            assert_store_unavailable(&r, "tus append");
            let url = format!(
                "/chunked-upload?{}",
                v3("POST", "cluster/h.bin").split_once('?').unwrap().1
            );
            let h = [("x-filename", "cluster/h.bin"), ("x-total-size", "10")];
            let r = request(&mut c, "POST", &url, &h, None).await;
            assert_store_unavailable(&r, "hfs creation");
            // Signed PUT and GET do not need the session store.
            let plain = pattern(8, 0, 7000);
            let r = put(&mut c, &signed_v("cluster/during.bin", 7000), &plain, &[]).await;
            assert_eq!(r.status, 201, "{backend:?}: PUT with Redis down");
            assert_eq!(get(&mut c, "/cluster/during.bin", &[]).await.body, plain);
            assert_eq!(get(&mut c, "/cluster/stored.bin", &[]).await.body, stored);

            // Back (empty: this Redis keeps nothing): service resumes by itself.
            cl.redis.restart();
            let deadline = Instant::now() + Duration::from_secs(10);
            let loc = loop {
                let r = request(&mut c, "POST", &v3("POST", "cluster/after.bin"), &len, None).await;
                if r.status == 201 {
                    break r.header("location").unwrap().to_string();
                }
                assert_store_unavailable(&r, "while Redis comes back");
                assert!(Instant::now() < deadline, "service did not resume");
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let r = tus_patch(&mut c, &loc, 0, pattern(9, 0, 1000)).await;
            assert_eq!(r.status, 204, "{backend:?}: {:?}", r.body);
            assert_eq!(
                get(&mut c, "/cluster/after.bin", &[]).await.body,
                pattern(9, 0, 1000)
            );
        }
    })
    .await;
}

/// Runs `xferd serve` on `cfg`, expecting it to refuse (bounded: 20 s); returns stderr.
fn refused(cfg: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xferd"))
        .args(["serve", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            assert!(!st.success(), "it started: {err}");
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a cluster with a generated identity kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_cluster_refuses_to_start_with_a_generated_secret_or_certificate() {
    // The refusal comes before any connection: no Redis needed (nothing listens there).
    let dir = tempfile::tempdir().unwrap();
    let cluster = "[cluster]\nredis_url = \"redis://127.0.0.1:1/0\"\n";
    let state = dir.path().join("state");
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        let server = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nstorage_path = \"{}\"\nstate_path = \"{}\"\n",
            dir.path().join("data").display(),
            state.display()
        );
        std::fs::write(&p, format!("{server}{body}{cluster}")).unwrap();
        p
    };
    let err = refused(&write("no-secret.toml", ""));
    assert!(err.contains("security.secret"), "{err}");
    let err = refused(&write("no-cert.toml", &format!("[security]\nsecret = \"{SECRET}\"\n")));
    assert!(err.contains("tls.cert"), "{err}");
    // Nothing was generated on the way.
    assert!(!state.join("secret").exists() && !state.join("cert.pem").exists());
}

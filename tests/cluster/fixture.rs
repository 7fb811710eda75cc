//! The two-instance fixture of `tests/cluster.rs`: the shared backend ([`Backend`], the
//! parameter every test runs over), a [`Cluster`] (shared directory, private Redis,
//! certificate), its [`Instance`]s (`xferd serve` processes, SIGKILLed when dropped), and
//! small tus helpers.
// Shared by tests/cluster.rs and tests/cluster_s3.rs: each uses part of it.
#![allow(dead_code)]

use super::common::redis::RedisServer;
use super::common::*;
use bytes::Bytes;
use futures_util::StreamExt;
use http::Request;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use xferd::client::{Client, Proto};

pub const OCTETS: (&str, &str) = ("content-type", "application/offset+octet-stream");

/// The storage the instances share.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    /// One storage root on a shared file system.
    Fs,
    /// One bucket of the SeaweedFS at [`S3_ENDPOINT`] (`tests/cluster_s3.rs`), under a key
    /// prefix of the cluster's own (its directory's name).
    S3,
}

/// The S3 endpoint of [`Backend::S3`] clusters (set by the test that starts SeaweedFS).
pub static S3_ENDPOINT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The key prefix of a [`Backend::S3`] cluster sharing `shared`.
pub fn s3_prefix(shared: &Path) -> String {
    let name = shared.file_name().unwrap_or_default().to_string_lossy();
    format!("{}/", name.trim_start_matches('.'))
}

/// The backends every test runs on.
pub const BACKENDS: &[Backend] = &[Backend::Fs];

impl Backend {
    /// The `[server]` lines placing the shared storage.
    pub fn server_toml(self, shared: &Path) -> String {
        match self {
            Backend::Fs => format!("storage_path = \"{}\"\n", shared.join("data").display()),
            Backend::S3 => format!(
                "[storage]\nbackend = \"s3\"\n[storage.s3]\nendpoint = \"{}\"\nallow_http = true\n\
                 bucket = \"{}\"\nprefix = \"{}\"\npart_size = {}\nmax_parts_in_flight = 2\n\
                 access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
                S3_ENDPOINT.get().expect("SeaweedFS started"),
                super::common::s3::BUCKET,
                s3_prefix(shared),
                5u64 << 20,
                super::common::s3::ACCESS_KEY,
                super::common::s3::SECRET_KEY,
            ),
        }
    }

    /// Waits (bounded) until the data of session `id` holds `n` bytes, where the backend
    /// lets a test see it; otherwise waits a fixed while.
    pub async fn wait_written(self, shared: &Path, id: &str, n: u64) {
        match self {
            Backend::Fs => {
                let part = shared.join(format!("data/.xferd-sessions/{id}.part"));
                let deadline = Instant::now() + Duration::from_secs(10);
                while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < n {
                    assert!(
                        Instant::now() < deadline,
                        "{n} bytes never reached {part:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Backend::S3 => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }

    /// Names of temporary files of plain PUTs in progress under `dir` (where visible).
    pub fn temp_files(self, shared: &Path, dir: &str) -> Vec<String> {
        match self {
            Backend::Fs => std::fs::read_dir(shared.join("data").join(dir))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.starts_with(".xferd-tmp-"))
                        .collect()
                })
                .unwrap_or_default(),
            // Staged S3 writes are multipart uploads: nothing to see as a file.
            Backend::S3 => Vec::new(),
        }
    }
}

/// What the instances share: a directory, a Redis, the certificate.
pub struct Cluster {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub redis: RedisServer,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub lease_secs: u64,
    pub commit_every: u64,
}

/// One `xferd serve` process; killed (SIGKILL) when dropped.
pub struct Instance {
    pub child: Option<Child>,
    pub addr: std::net::SocketAddr,
    pub log: PathBuf,
}

impl Instance {
    /// SIGKILL, as a crash: nothing is flushed, no lock released.
    pub fn kill(&mut self) {
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

pub fn free_port() -> u16 {
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
    pub fn new(backend: Backend, lease_secs: u64, commit_every: u64) -> Option<Cluster> {
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

    pub fn shared(&self) -> &Path {
        self.dir.path()
    }

    /// An instance's configuration: its own state directory and port, the rest shared.
    pub fn config(&self, name: &str, port: u16, cluster: &str, identity: bool) -> PathBuf {
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

    pub fn cluster_toml(&self) -> String {
        format!(
            "[cluster]\nredis_url = \"{}\"\nlock_lease = {}\nredis_timeout = 1\n",
            self.redis.url(),
            self.lease_secs
        )
    }

    /// Starts instance `name` and waits (bounded: 20 s) until it answers `/health`.
    pub async fn spawn(&self, name: &str) -> Instance {
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

    pub async fn client(&self, i: &Instance) -> Client {
        Client::connect(Proto::H1, i.addr, "localhost", &self.roots)
            .await
            .expect("client connects")
    }
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Every test runs within this.
pub async fn limited(f: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(90), f)
        .await
        .expect("test finished within its time limit");
}

pub async fn tus_offset(c: &mut Client, loc: &str) -> u64 {
    let h = request(c, "HEAD", loc, &[TUS], None).await;
    assert_eq!(h.status, 200, "HEAD {loc}");
    h.header("upload-offset").unwrap().parse().unwrap()
}

/// A PATCH whose body sends `sent` and then hangs (a phone that lost its network), declaring
/// `declared` bytes; resolves to the status, or an error once the connection dies.
pub fn hanging_patch(
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

pub fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

pub fn session_id(loc: &str) -> &str {
    loc.rsplit('/').next().unwrap()
}

/// Asserts the answer of a resumable request while Redis is down.
pub fn assert_store_unavailable(r: &Reply, what: &str) {
    assert_eq!(r.status, 503, "{what}: {:?}", r.body);
    assert_eq!(
        r.header("xferd-error"),
        Some("session_store_unavailable"),
        "{what}"
    );
    assert!(r.retry_after_secs() >= 1, "{what}");
}

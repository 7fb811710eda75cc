//! A private SeaweedFS (`weed mini`) as the S3 server of a test: loopback ports picked
//! free, a fresh temporary directory, one identity, one bucket, buckets never auto-created.
//! Installed by `interop/services/install-seaweedfs.sh`.
//!
//! When `weed` is missing, [`start`] panics if `CI` or `XFERD_REQUIRE_SERVICES` is set and
//! otherwise prints `SKIPPED: seaweedfs not installed` and returns `None`.
//!
//! `weed` runs under a small `sh` watchdog that kills it by PID (and removes its directory)
//! when its stdin closes: on [`Drop`], or when the test process exits for any reason (so a
//! process-wide instance in a `static` is cleaned up too).
//!
//! Only std and tempfile: the library's own unit tests include this file as well.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "xferdtestkey";
pub const SECRET_KEY: &str = "xferd-test-secret-key-0123456789";
pub const BUCKET: &str = "xferd-test";
/// `sh -c` script: runs weed (`"$@"`) in the background; a reader of our stdin (kept as
/// fd 3: a background list's stdin would be /dev/null) kills it by PID at end of file; when
/// weed ends (killed or crashed) the reader goes too and the directory is removed.
const WATCHDOG: &str = r#"exec 3<&0
"$@" & p=$!
echo $p > "$XFERD_WEED_DIR/weed.pid"
{ read _ignored <&3; kill $p 2>/dev/null; } &
r=$!
wait $p
st=$?
kill $r 2>/dev/null
[ -n "$XFERD_WEED_KEEP" ] || rm -rf "$XFERD_WEED_DIR"
exit $st"#;
/// Start-up must answer within this.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct SeaweedFs {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Starts weed again on the same ports and directory ([`start_restartable`]).
    respawn: Option<Box<dyn Fn() -> Child + Send + Sync>>,
}

/// Whether a missing service fails the test instead of skipping it.
pub fn required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("XFERD_REQUIRE_SERVICES").is_some()
}

/// The `weed` binary: `$XFERD_WEED` (a path that is not a file counts as not installed:
/// `XFERD_WEED=none` checks the skip rule), else `weed` on `PATH`.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("XFERD_WEED") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("weed"))
        .find(|p| p.is_file())
}

/// A free loopback port whose gRPC twin (port + 10000, SeaweedFS's convention) is free too.
fn free_port() -> u16 {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = l.local_addr().expect("addr").port();
        if p > 1024 && p < 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair found");
}

fn ports() -> [u16; 5] {
    let mut out: [u16; 5] = [0; 5];
    let mut i = 0;
    while i < 5 {
        let p = free_port();
        if !out.contains(&p) && !out.iter().any(|o| *o == p + 10_000 || p == o + 10_000) {
            out[i] = p;
            i += 1;
        }
    }
    out
}

/// Whether the S3 port answers an HTTP request (any status: the gateway is up).
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && buf.starts_with(b"HTTP/1."))
}

/// Starts a private SeaweedFS with the bucket [`BUCKET`] and the identity
/// [`ACCESS_KEY`]/[`SECRET_KEY`]; `None` (after the SKIPPED line) when not installed.
/// Returns once the S3 port answers; the bucket may need a moment more (callers poll a
/// signed HeadBucket, bounded).
pub fn start() -> Option<SeaweedFs> {
    start_with(false, None, Vec::new())
}

/// [`start`], for a test that stops weed and starts it again on the same ports and data
/// ([`SeaweedFs::stop`], [`SeaweedFs::restart`]); the directory goes on drop.
pub fn start_restartable() -> Option<SeaweedFs> {
    start_with(true, None, Vec::new())
}

/// [`start_restartable`] with weed's data directory at `data` (e.g. on a small
/// filesystem; `None`: in its own directory) and `extra` flags for `weed mini`.
pub fn start_custom(data: Option<PathBuf>, extra: &[&str]) -> Option<SeaweedFs> {
    start_with(true, data, extra.iter().map(|s| s.to_string()).collect())
}

/// The identity file with these `actions` (e.g. `["Read", "List"]`: no write).
fn identities(actions: &[&str]) -> String {
    let actions: Vec<String> = actions.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"{{"identities":[{{"name":"xferd","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":[{}]}}]}}"#,
        actions.join(",")
    )
}

fn start_with(keep: bool, data: Option<PathBuf>, extra: Vec<String>) -> Option<SeaweedFs> {
    let Some(weed) = binary() else {
        if required() {
            panic!("seaweedfs is required (CI / XFERD_REQUIRE_SERVICES) but `weed` is not installed: run interop/services/install-seaweedfs.sh");
        }
        // Straight to the process's stderr: libtest captures `println!`/`eprintln!` of
        // passing tests, and this line must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: seaweedfs not installed (interop/services/install-seaweedfs.sh)"
        );
        return None;
    };
    let dir = tempfile::Builder::new()
        .prefix("xferd-weed-")
        .tempdir()
        .expect("tempdir")
        .keep();
    // One start at a time in this process (free ports are picked, then bound by weed),
    // and a new set of ports when weed found one taken meanwhile (by another process).
    static START: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = START.lock().unwrap_or_else(|e| e.into_inner());
    let mut attempt = 0;
    loop {
        attempt += 1;
        match launch(keep, &weed, &dir, data.clone(), &extra) {
            Ok(me) => return Some(me),
            // Another weed just started may still be binding ports of its own: wait a bit.
            Err(log) if attempt < 5 && log.contains("Port allocation failed") => {
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(log) => panic!("weed exited early: see {log}"),
        }
    }
}

/// One start of weed on fresh ports; `Err(log tail)` when it exited before answering.
fn launch(
    keep: bool,
    weed: &std::path::Path,
    dir: &std::path::Path,
    data: Option<PathBuf>,
    extra: &[String],
) -> Result<SeaweedFs, String> {
    let (weed, dir, extra) = (weed.to_path_buf(), dir.to_path_buf(), extra.to_vec());
    let config = identities(&["Admin", "Read", "Write", "List", "Tagging"]);
    std::fs::create_dir_all(&dir).expect("weed dir");
    std::fs::write(dir.join("s3.json"), config).expect("s3.json");
    let data_dir = data.unwrap_or_else(|| dir.join("data"));
    // Fresh: weed reloads its flags (the old ports) from `mini.options` in there.
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let [s3, filer, master, volume, admin] = ports();
    let (log_path, data_root) = (dir.join("weed.log"), dir.clone());
    let spawn = move || {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log");
        let mut c = Command::new("sh");
        c.arg("-c")
            // The watchdog: weed in the background; when our stdin closes, kill it by PID.
            .arg(WATCHDOG)
            .arg("sh")
            .arg(&weed)
            .arg("mini")
            .arg(format!("-dir={}", data_dir.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-admin.port={admin}"))
            .arg(format!(
                "-s3.config={}",
                data_root.join("s3.json").display()
            ))
            .arg(format!("-bucket={BUCKET}"))
            .args([
                "-s3.autoCreateBucket=false",
                "-webdav=false",
                "-admin.ui=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
            ])
            .args(&extra)
            .env("XFERD_WEED_DIR", &data_root)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if keep {
            c.env("XFERD_WEED_KEEP", "1");
        }
        c.spawn().expect("spawning weed")
    };
    let mut child = spawn();
    let stdin = child.stdin.take();
    let deadline = Instant::now() + START_TIMEOUT;
    let mut me = SeaweedFs {
        endpoint: format!("http://127.0.0.1:{s3}"),
        port: s3,
        dir,
        child,
        stdin,
        respawn: None,
    };
    while !answers(s3) {
        if let Ok(Some(status)) = me.child.try_wait() {
            let log = me.log_tail();
            let _ = std::fs::remove_file(me.dir.join("weed.log"));
            // The watchdog took the directory (unless kept): the next attempt makes it again.
            me.respawn = None;
            drop(me);
            return Err(format!("({status}) {log}"));
        }
        if Instant::now() > deadline {
            panic!(
                "weed did not answer on port {s3} within {START_TIMEOUT:?}: {}",
                me.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if keep {
        me.respawn = Some(Box::new(spawn));
    }
    Ok(me)
}

impl SeaweedFs {
    /// Waits until `bucket_ready` (a HeadBucket through the caller's S3 client, or a read:
    /// `s3_env::wait_serving`) answers true: the bucket appears shortly after the port
    /// answers. Polls every 100 ms for at most 60 s, on a thread of its own (the caller may
    /// be inside a runtime); panics with weed's log when it never does.
    pub fn wait_bucket<F, Fut>(&self, bucket_ready: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool>,
    {
        let ready = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                for _ in 0..600 {
                    if bucket_ready().await {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                false
            })
        })
        .join()
        .unwrap();
        assert!(ready, "SeaweedFS bucket not ready: {}", self.log_tail());
    }

    /// The last lines of weed's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl SeaweedFs {
    /// Rewrites the identity's allowed `actions` (see [`identities`]); weed reads them at
    /// its next start ([`SeaweedFs::restart`]).
    pub fn set_actions(&self, actions: &[&str]) {
        std::fs::write(self.dir.join("s3.json"), identities(actions)).expect("s3.json");
    }

    /// Stops weed as an outage does: SIGKILL to weed itself (by the PID the watchdog wrote),
    /// then the watchdog reaps it and exits. Not SIGTERM: weed's own shutdown took from
    /// under a second to over 30 s here (its volume server waits for its streams), and
    /// stopping only the watchdog's shell left weed on its ports for the restart to find
    /// taken (the fresh-clone CI run of stop 19).
    pub fn stop(&mut self) {
        drop(self.stdin.take());
        if let Some(pid) = std::fs::read_to_string(self.dir.join("weed.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) on a PID this test started; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        self.reap();
    }

    /// Starts weed again on the same ports and data (after [`SeaweedFs::stop`]); returns
    /// once the S3 port answers (bounded; reads may take longer: see `s3_env::wait_serving`).
    /// A port still held by the old process (or a socket in its last moments) is waited for
    /// and the start retried, up to [`START_TIMEOUT`] in all.
    pub fn restart(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let respawn = self
                .respawn
                .as_ref()
                .expect("started with start_restartable");
            self.child = respawn();
            self.stdin = self.child.stdin.take();
            loop {
                if answers(self.port) {
                    return;
                }
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "weed did not restart: {}",
                    self.log_tail()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            // It exited: a clash with the old process's ports is the one cause worth a retry.
            let log = self.log_tail();
            assert!(
                log.contains("Port allocation failed") && Instant::now() < deadline,
                "weed did not restart: {log}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

impl SeaweedFs {
    /// Waits (10 s at most) for the watchdog to exit once weed is gone; kills it if it
    /// does not.
    fn reap(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        if self.respawn.is_some() {
            self.stop();
            let _ = std::fs::remove_dir_all(&self.dir);
            return;
        }
        // Closing stdin makes the watchdog kill weed by its PID; then the watchdog ends.
        drop(self.stdin.take());
        self.reap();
    }
}

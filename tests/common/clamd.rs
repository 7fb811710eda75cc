//! A private clamd for tests: a fresh temporary directory with its own `clamd.conf` (Unix
//! socket in that directory, foreground) and its own signature database (no downloads:
//! a hash signature of [`hash_sig_file`] and a body signature of the EICAR test string),
//! started and waited for (PING -> PONG, bounded), killed by PID on drop.
//!
//! When `clamd` is not installed, [`Clamd::start`] fails the test if `CI` or
//! `XFERD_REQUIRE_SERVICES` is set, and otherwise prints "SKIPPED: clamd not installed" and
//! returns `None`. Install it with `interop/services/install-clamd.sh`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// clamd's `StreamMaxLength` in these tests; xferd's `scan.max_size` must not exceed it.
pub const STREAM_MAX: u64 = 8 << 20;
/// Longest wait for clamd to answer PING.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Name of the hash signature (clamd reports it with `.UNOFFICIAL`).
pub const HASH_SIG: &str = "Xferd.Test.HashSig";
pub const EICAR_SIG: &str = "Xferd.Test.Eicar";

/// The EICAR test string (assembled here so this source file itself is not flagged).
pub fn eicar() -> Vec<u8> {
    let parts = [
        "X5O!P%@AP[4\\PZX54(P^)7CC)7}$",
        "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!",
        "$H+H*",
    ];
    parts.concat().into_bytes()
}

/// A harmless file whose MD5 the test database lists.
pub fn hash_sig_file() -> Vec<u8> {
    let mut v = b"xferd hash-signature test file\n".repeat(100);
    v.extend_from_slice(b"end\n");
    v
}

pub struct Clamd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
}

fn clamd_binary() -> Option<PathBuf> {
    ["/usr/sbin/clamd", "/usr/bin/clamd", "/usr/local/sbin/clamd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Whether missing services must fail the test.
pub fn required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("XFERD_REQUIRE_SERVICES").is_some()
}

fn md5_hex(data: &[u8]) -> String {
    // `md5sum` is in coreutils; no md5 crate is needed for one test line.
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("md5sum runs");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..32].to_string()
}

/// Sends one zero-terminated clamd command and reads the answer (bounded).
pub fn command(socket: &std::path::Path, cmd: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("z{cmd}\0").as_bytes())?;
    let mut out = Vec::new();
    s.take(4096).read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out)
        .trim_end_matches('\0')
        .trim()
        .to_string())
}

impl Clamd {
    /// Starts a private clamd (see the module doc); `None` = skipped.
    pub fn start() -> Option<Clamd> {
        let Some(bin) = clamd_binary() else {
            if required() {
                panic!("clamd not installed (CI / XFERD_REQUIRE_SERVICES set): run interop/services/install-clamd.sh");
            }
            eprintln!("SKIPPED: clamd not installed (interop/services/install-clamd.sh)");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        let sig = hash_sig_file();
        std::fs::write(
            db.join("test.hdb"),
            format!("{}:{}:{HASH_SIG}\n", md5_hex(&sig), sig.len()),
        )
        .unwrap();
        std::fs::write(
            db.join("eicar.ndb"),
            format!("{EICAR_SIG}:0:*:{}\n", hex::encode(eicar())),
        )
        .unwrap();
        let socket = dir.path().join("clamd.sock");
        let mut conf = format!(
            "DatabaseDirectory {}\nLocalSocket {}\nFixStaleSocket yes\nForeground yes\nPidFile {}\nStreamMaxLength {}\nLogFile {}\nTemporaryDirectory {}\n",
            db.display(),
            socket.display(),
            dir.path().join("clamd.pid").display(),
            STREAM_MAX,
            dir.path().join("clamd.log").display(),
            dir.path().display(),
        );
        // As root, clamd would switch to its packaged user, which cannot read this directory.
        if is_root() {
            conf.push_str("User root\n");
        }
        let conf_path = dir.path().join("clamd.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clamd starts");
        let mut c = Clamd {
            child: Some(child),
            dir,
            socket,
        };
        let started = Instant::now();
        loop {
            if command(&c.socket, "PING").is_ok_and(|r| r == "PONG") {
                return Some(c);
            }
            if let Some(Ok(Some(status))) = c.child.as_mut().map(|ch| ch.try_wait()) {
                let log =
                    std::fs::read_to_string(c.dir.path().join("clamd.log")).unwrap_or_default();
                panic!("clamd exited early ({status}):\n{log}");
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "clamd did not answer PING within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills clamd now (by its PID) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut ch) = self.child.take() {
            let _ = ch.kill();
            let _ = ch.wait();
        }
    }
}

fn is_root() -> bool {
    // /proc/self/status "Uid:" line, real uid first.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
    }
}

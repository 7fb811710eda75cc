//! A private `redis-server` for one test: a free loopback port, a fresh temporary directory,
//! no persistence, killed by PID when dropped, start-up bounded (5 s). When `redis-server`
//! is not installed, [`RedisServer::start`] returns `None` after printing a loud SKIPPED
//! line, unless `CI` or `XFERD_REQUIRE_SERVICES` is set, where it fails the test
//! (install it with `interop/services/install-redis.sh`).
//!
//! Used by the integration tests (`tests/cluster.rs`) and, through `#[path]`, by the
//! storage contract tests in the library: depends on std and tempfile only.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// Whether a missing service must fail the test instead of skipping it.
fn required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("XFERD_REQUIRE_SERVICES").is_some()
}

fn installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl RedisServer {
    /// Starts one, or returns `None` (skipped) when redis-server is missing outside CI.
    pub fn start() -> Option<RedisServer> {
        if !installed() {
            assert!(
                !required(),
                "redis-server is not installed (CI or XFERD_REQUIRE_SERVICES is set): \
                 run interop/services/install-redis.sh"
            );
            // Straight to stderr, past the test harness's capture: a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: redis not installed (run interop/services/install-redis.sh)"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir for redis");
        let mut r = RedisServer {
            child: None,
            port: free_port(),
            dir,
        };
        r.launch();
        Some(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        panic!(
            "redis-server on port {} did not answer PING within 5 s",
            self.port
        );
    }

    /// Whether it answers `PING` now (bounded: 1 s).
    pub fn ping(&self) -> bool {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Kills it by PID (SIGKILL) and waits for it: everything it held is lost.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: it keeps nothing).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

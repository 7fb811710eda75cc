//! Operations: the systemd unit passes `systemd-analyze verify` and is sandboxed; the
//! `certs/` script makes a CA and a server certificate with the fixed key that xferd serves
//! over HTTP/1.1 and HTTP/3; `[log] format = "json"` makes every stderr line a JSON object,
//! without the secret; SIGHUP reloads the secret and `[rate_limit]` while an upload runs.
//!
//! The external tools (`systemd-analyze`, `openssl`) are used when present; with `CI=true`
//! a missing tool fails the test instead of skipping it.

mod common;

use bytes::Bytes;
use common::*;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use xferd::client::{Client, Proto};
use xferd::core::auth::{message_for, Keys, Scheme};
use xferd::core::body::{BodyError, BodyStream};

const BOUND: Duration = Duration::from_secs(60);

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Whether `tool` can run; a missing tool is a failure under CI.
fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is required in CI (.ci/run installs it)"
        );
        eprintln!("SKIPPED: {tool} is not installed");
    }
    found
}

/// Runs a command with a time bound; (success, stdout, stderr).
fn run(cmd: &mut Command) -> (bool, String, String) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("bounded")
        .expect("output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `systemd-analyze verify` of a unit text, with `ExecStart` pointed at the built binary;
/// the diagnostics about the file itself (none = clean).
fn verify_unit(text: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("xferd.service");
    let text = text.replace("/usr/local/bin/xferd", env!("CARGO_BIN_EXE_xferd"));
    std::fs::write(&unit, text).unwrap();
    let (ok, stdout, stderr) = run(Command::new("systemd-analyze").arg("verify").arg(&unit));
    let about_unit: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| l.contains("xferd.service"))
        .collect();
    if ok && about_unit.is_empty() {
        Ok(())
    } else {
        Err(format!("{stdout}{stderr}"))
    }
}

#[test]
fn systemd_unit_is_sandboxed_and_verifies() {
    let text = std::fs::read_to_string(repo("config/xferd.service")).unwrap();
    let set: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for want in [
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "ReadWritePaths=/var/lib/xferd",
        "StateDirectory=xferd",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
    ] {
        assert!(set.contains(&want), "{want} missing");
    }
    // No capability unless the operator binds below 1024 (the lines are there, commented).
    assert!(!set.iter().any(|l| l.contains("CAP_NET_BIND_SERVICE")));
    assert!(text.contains("#AmbientCapabilities=CAP_NET_BIND_SERVICE"));
    // The stop timeout covers the default shutdown grace (30s).
    assert!(set.contains(&"TimeoutStopSec=45s"));
    if !have("systemd-analyze") {
        return;
    }
    verify_unit(&text).unwrap_or_else(|e| panic!("systemd-analyze verify:\n{e}"));
    // The check can fail: a misspelt directive is reported.
    let broken = text.replace("ProtectSystem=strict", "ProtectSystm=strict");
    assert!(verify_unit(&broken).is_err(), "a typo must be reported");
}

#[tokio::test]
async fn local_ca_script_makes_a_pinned_chain_that_xferd_serves() {
    if !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = repo("certs/make-local-ca.sh");
    let mut outs = Vec::new();
    for n in 0..2 {
        let out = dir.path().join(format!("run{n}"));
        let (ok, stdout, stderr) = run(Command::new("sh").arg(&script).arg(&out));
        assert!(ok, "{stdout}{stderr}");
        assert!(stdout.contains("server SPKI sha256"), "{stdout}");
        outs.push((out, stdout));
    }
    let (out, _) = &outs[0];
    // The key is the fixed, committed one; so is the pin printed on every run.
    let fixed = std::fs::read(repo("certs/test-server.key")).unwrap();
    assert_eq!(std::fs::read(out.join("server.key")).unwrap(), fixed);
    let pin = |s: &str| s.lines().last().map(String::from);
    assert_eq!(pin(&outs[0].1), pin(&outs[1].1));
    let (ok, o, e) = run(Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(out.join("ca.pem"))
        .arg(out.join("server.pem")));
    assert!(ok, "chains to the CA: {o}{e}");
    // The CA key is fixed too: the CA of any run verifies any run's certificate.
    let (ok, _, _) = run(Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(outs[1].0.join("ca.pem"))
        .arg(out.join("server.pem")));
    assert!(ok, "the CA key is fixed: a CA from any run verifies");
    let (cert, key) = (out.join("server.pem"), out.join("server.key"));
    let srv = TestServer::start_with(|c| {
        c.tls.cert = Some(cert);
        c.tls.key = Some(key);
    })
    .await;
    let roots = xferd::tls::read_certs(&out.join("ca.pem")).unwrap();
    tokio::time::timeout(BOUND, async {
        for proto in [Proto::H1, Proto::H3] {
            for name in ["localhost", "127.0.0.1"] {
                let mut c = Client::connect(proto, srv.addr(), name, &roots)
                    .await
                    .unwrap_or_else(|e| panic!("{proto:?} {name}: {e:#}"));
                let r = get(&mut c, "/health", &[]).await;
                assert_eq!(r.status, 200, "{proto:?} {name}");
            }
            // A name the certificate does not have is refused (at the handshake).
            let wrong = Client::connect(proto, srv.addr(), "example.org", &roots).await;
            assert!(wrong.is_err(), "{proto:?}: example.org must not verify");
        }
    })
    .await
    .expect("bounded");
    srv.stop().await;
}

/// The `xferd serve` binary, with its stdout and stderr lines collected.
struct Daemon {
    child: std::process::Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    addr: std::net::SocketAddr,
    roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    err_lines: Vec<String>,
}

fn lines_of(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Daemon {
    fn start(config: &Path) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_xferd"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("XFERD_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let mut addr = None;
        let mut cert = None;
        for _ in 0..10 {
            let Ok(l) = stdout.recv_timeout(Duration::from_secs(30)) else {
                break;
            };
            if let Some(rest) = l.strip_prefix("xferd listening on https://") {
                addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            }
            if let Some(rest) = l.strip_prefix("certificate: ") {
                cert = rest.split_whitespace().next().map(PathBuf::from);
            }
            if l.starts_with("try:") {
                break;
            }
        }
        let (Some(addr), Some(cert)) = (addr, cert) else {
            let _ = child.kill();
            let errs: Vec<String> = stderr.try_iter().collect();
            panic!("xferd did not start: {errs:?}");
        };
        Daemon {
            child,
            stdout,
            stderr,
            addr,
            roots: xferd::tls::read_certs(&cert).unwrap(),
            err_lines: Vec::new(),
        }
    }

    async fn client(&self, proto: Proto) -> Client {
        Client::connect(proto, self.addr, "localhost", &self.roots)
            .await
            .expect("connects")
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits (bounded) for a stderr line containing `text`.
    fn wait_stderr(&mut self, text: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(l) => {
                    self.err_lines.push(l.clone());
                    if l.contains(text) {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no stderr line with {text:?}: {:?}", self.err_lines);
    }

    /// SIGTERM, bounded wait; every stderr and stdout line.
    fn stop(mut self) -> (Vec<String>, Vec<String>) {
        self.signal(libc::SIGTERM);
        let (tx, rx) = mpsc::channel();
        let mut child = self.child;
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx.recv_timeout(Duration::from_secs(30)).expect("exits");
        assert!(status.is_ok_and(|s| s.success()), "clean exit");
        self.err_lines.extend(self.stderr.try_iter());
        let out: Vec<String> = self.stdout.try_iter().collect();
        (self.err_lines, out)
    }
}

fn sign_v(secret: &str, rel: &str, size: u64) -> String {
    let mac = Keys::new(secret, &[], false).sign(&message_for(Scheme::V, "PUT", rel, size, "", 0));
    format!("/{}?v={mac}", encode_path(rel))
}

fn write_config(path: &Path, dir: &Path, extra: &str) {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nstorage_path = \"{}\"\nstate_path = \"{}\"\n\
         shutdown_grace = \"5s\"\n{extra}",
        dir.join("data").display(),
        dir.join("state").display(),
    );
    std::fs::write(path, text).unwrap();
}

const OLD: &str = "old-secret-3f9a1c77d0b2";
const NEW: &str = "new-secret-8e21b5c40a6f";

#[tokio::test]
async fn json_logs_are_one_object_per_line_without_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xferd.toml");
    write_config(
        &config,
        dir.path(),
        &format!("[security]\nsecret = \"{OLD}\"\n[log]\nformat = \"json\"\n"),
    );
    let mut d = Daemon::start(&config);
    tokio::time::timeout(BOUND, async {
        let mut c = d.client(Proto::H1).await;
        // Refusals are logged (info); one with a MAC made with the secret itself.
        let r = put(&mut c, "/a.txt?v=00", b"x", &[]).await;
        assert_eq!(r.status, 403);
        let r = put(&mut c, &sign_v(OLD, "b.txt", 1), b"xy", &[]).await;
        assert_eq!(r.status, 403, "signed for another size");
        let r = put(&mut c, &sign_v(OLD, "c.txt", 1), b"x", &[]).await;
        assert_eq!(r.status, 201);
    })
    .await
    .expect("bounded");
    d.signal(libc::SIGHUP);
    d.wait_stderr("SIGHUP");
    let (err, out) = d.stop();
    let mut levels = std::collections::BTreeSet::new();
    for line in err.iter().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let level = v["level"]
            .as_str()
            .unwrap_or_else(|| panic!("level: {line}"));
        levels.insert(level.to_string());
        assert!(v["message"].is_string(), "{line}");
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        assert!(!line.contains('\x1b'), "no colour codes: {line}");
    }
    assert!(
        err.iter().any(|l| l.contains("signature_invalid")),
        "the refusal is logged: {err:?}"
    );
    assert!(err.iter().any(|l| l.contains("reloaded")), "{err:?}");
    assert!(levels.contains("INFO"), "{levels:?}");
    for line in err.iter().chain(&out) {
        assert!(!line.contains(OLD), "the secret leaked: {line}");
    }
}

/// A body that sends `first`, then waits for the test to release the rest.
fn held_body(first: Bytes, rest: tokio::sync::oneshot::Receiver<Bytes>) -> BodyStream {
    let s = futures_util::stream::unfold((Some(first), Some(rest)), |(first, rest)| async move {
        if let Some(b) = first {
            return Some((Ok::<_, BodyError>(b), (None, rest)));
        }
        let b = rest?.await.ok()?;
        Some((Ok(b), (None, None)))
    });
    Box::pin(s)
}

#[tokio::test]
async fn sighup_reloads_secret_and_rate_limits_without_dropping_an_upload() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xferd.toml");
    write_config(
        &config,
        dir.path(),
        &format!("[security]\nsecret = \"{OLD}\"\n"),
    );
    let mut d = Daemon::start(&config);
    let storage = dir.path().join("data");
    let addr = d.addr;
    tokio::time::timeout(BOUND, async {
        for (i, proto) in [Proto::H1, Proto::H3].into_iter().enumerate() {
            let l = label(proto);
            let (now, before) = if i == 0 { (NEW, OLD) } else { (OLD, NEW) };
            // An upload in flight, signed with the secret in force: half its body sent.
            let entries = || -> std::collections::BTreeSet<std::ffi::OsString> {
                std::fs::read_dir(&storage)
                    .map(|r| r.flatten().map(|e| e.file_name()).collect())
                    .unwrap_or_default()
            };
            let known = entries();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let body = held_body(Bytes::from(vec![b'a'; 5000]), rx);
            let url = sign_v(before, &format!("{l}-inflight.bin"), 10_000);
            let c = d.client(proto).await;
            let inflight = tokio::spawn(async move {
                request_on(&c, "PUT", &url, &[("content-length", "10000")], Some(body)).await
            });
            // Admitted: its temporary file exists.
            eventually(&format!("{l}: the upload has started"), || {
                entries().difference(&known).next().is_some()
            })
            .await;
            // New secret, and a limit of two uploads (any outcome) a minute per client.
            write_config(
                &config,
                dir.path(),
                &format!(
                    "[security]\nsecret = \"{now}\"\n[rate_limit]\nenabled = true\n\
                     uploads_per_minute = 1\nupload_burst = 2\n"
                ),
            );
            d.signal(libc::SIGHUP);
            d.wait_stderr("SIGHUP: reloaded");
            let mut c = Client::connect(proto, addr, "localhost", &d.roots)
                .await
                .unwrap();
            let r = put(
                &mut c,
                &sign_v(before, &format!("{l}-old.txt"), 1),
                b"x",
                &[],
            )
            .await;
            assert_eq!(r.status, 403, "{l}: the replaced secret is refused");
            let r = put(&mut c, &sign_v(now, &format!("{l}-new.txt"), 1), b"x", &[]).await;
            assert_eq!(r.status, 201, "{l}: the new secret works: {:?}", r.json());
            let r = put(&mut c, &sign_v(now, &format!("{l}-new2.txt"), 1), b"x", &[]).await;
            assert_eq!(r.status, 429, "{l}: the reloaded limit applies");
            // The upload admitted before the reload completes.
            tx.send(Bytes::from(vec![b'b'; 5000])).unwrap();
            let r = inflight.await.unwrap();
            assert_eq!(r.status, 201, "{l}: in-flight upload: {:?}", r.json());
            let stored = std::fs::read(storage.join(format!("{l}-inflight.bin"))).unwrap();
            assert_eq!(stored.len(), 10_000);
            assert!(stored[..5000].iter().all(|b| *b == b'a'));
            assert!(stored[5000..].iter().all(|b| *b == b'b'));
            // Limits off again for the next round (buckets are per client: all 127.0.0.1).
            write_config(
                &config,
                dir.path(),
                &format!("[security]\nsecret = \"{now}\"\n"),
            );
            d.signal(libc::SIGHUP);
            d.wait_stderr("SIGHUP: reloaded");
        }
        // A config that does not load changes nothing.
        std::fs::write(&config, "[server]\nnot_a_key = 1\n").unwrap();
        d.signal(libc::SIGHUP);
        d.wait_stderr("config not reloaded");
        let mut c = d.client(Proto::H1).await;
        let r = put(&mut c, &sign_v(OLD, "still.txt", 1), b"x", &[]).await;
        assert_eq!(r.status, 201, "the running secret stays: {:?}", r.json());
    })
    .await
    .expect("bounded");
    let (err, _) = d.stop();
    assert!(
        !err.iter().any(|l| l.contains(OLD) || l.contains(NEW)),
        "{err:?}"
    );
}

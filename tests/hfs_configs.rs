//! HMAC File Server's own configuration files (tests/data/hfs-configs/, 19 files from its
//! repository) start xferd as they are, with the paths and ports they name redirected for
//! this machine; the keys that matter get their HFS meaning; `check-config --explain`
//! classifies every key; a path that cannot be created is an error naming the key.

mod common;

use common::get;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use xferd::client::{Client, Proto};
use xferd::config::{Config, Overrides};

fn data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/hfs-configs")
        .join(format!("{file}.toml"))
}

/// What each file means, read from the files by hand (HFS 3.4's rules: `filettlenabled`, not
/// `file_ttl_enabled`; dedup needs `[server] deduplication_enabled` and `[deduplication]
/// enabled`; `clamavenabled`/`redisenabled`, not `enabled`; `metricsenabled` with
/// `metricsport`; HFS's defaults 8080, `./uploads`, no metrics where a file sets nothing).
struct Expect {
    file: &'static str,
    listen: &'static str,
    storage: &'static str,
    secret: Option<&'static str>,
    max_upload: u64,
    /// Number of allowed extensions (0 = all) and the first one.
    extensions: (usize, &'static str),
    /// File TTL in days.
    ttl_days: Option<u64>,
    dedup: bool,
    /// metrics.enabled, and the port of a separate metrics listener.
    metrics: (bool, Option<u16>),
    clamav: bool,
    redis: bool,
    /// Keys per class: (a) xferd, (b) HFS mapped, (c) HFS accepted.
    counts: (usize, usize, usize),
}

const GB: u64 = 1 << 30;
const MB: u64 = 1 << 20;
const CHANGE: &str = "CHANGE-THIS-SECRET-KEY-MINIMUM-32-CHARACTERS";
const WIKI: &str = "f6g4ldPvQM7O2UTFeBEUUj33VrXypDAcsDt0yqKrLiOr5oQW";
const OPT: &str = "/opt/hmac-file-server/data/uploads";
const ANY: &str = "0.0.0.0:8080";

#[rustfmt::skip]
const EXPECT: &[Expect] = &[
    Expect { file: "ejabberd-network-resilient", listen: ANY, storage: "./uploads", secret: None, max_upload: 10 * GB, extensions: (0, ""), ttl_days: None, dedup: false, metrics: (true, None), clamav: false, redis: false, counts: (1, 3, 81) },
    Expect { file: "examples-enhanced-security", listen: ANY, storage: "./uploads", secret: Some("your-very-secret-hmac-key-change-in-production"), max_upload: 10 * GB, extensions: (6, "txt"), ttl_days: None, dedup: false, metrics: (false, None), clamav: false, redis: false, counts: (2, 3, 23) },
    Expect { file: "examples-mobile-resilient", listen: ANY, storage: "./uploads", secret: Some("mobile-network-resilience-secret-key"), max_upload: 500 * MB, extensions: (31, "jpg"), ttl_days: None, dedup: false, metrics: (true, None), clamav: false, redis: false, counts: (4, 5, 45) },
    Expect { file: "examples-network-switching", listen: ANY, storage: "./uploads", secret: Some("network-switching-resilience-secret-key"), max_upload: 500 * MB, extensions: (26, "txt"), ttl_days: None, dedup: false, metrics: (true, None), clamav: false, redis: false, counts: (4, 5, 80) },
    Expect { file: "examples-production-enhanced", listen: ANY, storage: OPT, secret: Some(WIKI), max_upload: GB, extensions: (37, "txt"), ttl_days: Some(7), dedup: true, metrics: (false, None), clamav: false, redis: true, counts: (11, 13, 107) },
    Expect { file: "examples-production-validated", listen: ANY, storage: OPT, secret: Some(WIKI), max_upload: GB, extensions: (37, "txt"), ttl_days: None, dedup: true, metrics: (false, None), clamav: false, redis: true, counts: (4, 12, 83) },
    Expect { file: "genconfig-advanced", listen: ANY, storage: "./uploads", secret: Some("your-secret-key-here"), max_upload: 10 * GB, extensions: (10, "txt"), ttl_days: Some(365), dedup: false, metrics: (true, Some(9090)), clamav: false, redis: false, counts: (8, 13, 71) },
    Expect { file: "genconfig-minimal", listen: ANY, storage: "./uploads", secret: Some("change-this-to-your-secret"), max_upload: 10 * GB, extensions: (0, ""), ttl_days: Some(365), dedup: false, metrics: (true, Some(9090)), clamav: false, redis: false, counts: (2, 7, 13) },
    Expect { file: "legacy-default", listen: ANY, storage: OPT, secret: Some(WIKI), max_upload: 10 * GB, extensions: (33, "zip"), ttl_days: None, dedup: true, metrics: (false, None), clamav: false, redis: false, counts: (4, 9, 68) },
    Expect { file: "legacy-xmpp", listen: ANY, storage: "/var/lib/hmac-file-server/uploads", secret: Some("your-super-secret-hmac-key-here-minimum-32-characters"), max_upload: 10 * GB, extensions: (7, "jpg"), ttl_days: None, dedup: false, metrics: (true, Some(9090)), clamav: false, redis: false, counts: (2, 7, 32) },
    Expect { file: "podman-example", listen: "0.0.0.0:8888", storage: "/data", secret: Some("CHANGE-THIS-PRODUCTION-SECRET-HMAC-KEY"), max_upload: 10 * GB, extensions: (35, "zip"), ttl_days: None, dedup: true, metrics: (false, None), clamav: false, redis: false, counts: (4, 12, 71) },
    Expect { file: "templates-adaptive", listen: ANY, storage: "/data/uploads", secret: Some("your-hmac-secret-key-here"), max_upload: 10 * GB, extensions: (11, "jpg"), ttl_days: None, dedup: true, metrics: (true, None), clamav: false, redis: false, counts: (14, 9, 154) },
    Expect { file: "templates-debian", listen: ANY, storage: OPT, secret: Some(CHANGE), max_upload: 10 * GB, extensions: (26, "txt"), ttl_days: None, dedup: false, metrics: (false, None), clamav: false, redis: false, counts: (3, 6, 41) },
    Expect { file: "templates-docker", listen: ANY, storage: OPT, secret: Some(CHANGE), max_upload: 10 * GB, extensions: (26, "txt"), ttl_days: None, dedup: false, metrics: (false, None), clamav: false, redis: false, counts: (3, 6, 41) },
    Expect { file: "templates-enhanced-features", listen: ANY, storage: OPT, secret: Some(CHANGE), max_upload: 10 * GB, extensions: (26, "txt"), ttl_days: None, dedup: false, metrics: (false, None), clamav: false, redis: false, counts: (7, 7, 46) },
    Expect { file: "templates-podman", listen: ANY, storage: OPT, secret: Some(CHANGE), max_upload: 10 * GB, extensions: (26, "txt"), ttl_days: None, dedup: false, metrics: (false, None), clamav: false, redis: false, counts: (3, 6, 41) },
    Expect { file: "templates-systemd", listen: ANY, storage: OPT, secret: Some(CHANGE), max_upload: 10 * GB, extensions: (26, "txt"), ttl_days: None, dedup: false, metrics: (false, None), clamav: false, redis: false, counts: (3, 6, 41) },
    Expect { file: "tests-minimal", listen: ANY, storage: "/tmp/test-uploads", secret: Some("test-secret-key"), max_upload: 10 * GB, extensions: (0, ""), ttl_days: None, dedup: false, metrics: (false, None), clamav: false, redis: false, counts: (2, 1, 1) },
    Expect { file: "wiki", listen: ANY, storage: "/srv/hmac-file-server/uploads", secret: Some(WIKI), max_upload: 10 * GB, extensions: (21, "zip"), ttl_days: None, dedup: true, metrics: (false, None), clamav: true, redis: true, counts: (4, 11, 86) },
];

fn check_mapped(e: &Expect, loaded: &xferd::config::Loaded) {
    let c = &loaded.config;
    let f = e.file;
    assert_eq!(c.server.listen, e.listen.parse().unwrap(), "{f}: listen");
    assert_eq!(
        c.server.storage_path,
        PathBuf::from(e.storage),
        "{f}: storage"
    );
    assert_eq!(c.security.secret.as_deref(), e.secret, "{f}: secret");
    assert_eq!(c.server.max_upload_size, e.max_upload, "{f}: max upload");
    let ext = &c.server.allowed_extensions;
    assert_eq!(ext.len(), e.extensions.0, "{f}: extensions {ext:?}");
    assert_eq!(
        ext.first().map(String::as_str).unwrap_or(""),
        e.extensions.1,
        "{f}"
    );
    let ttl = e.ttl_days.map(|d| Duration::from_secs(d * 86400));
    let expiry = c.expiry.enabled.then_some(c.expiry.max_age);
    assert_eq!(expiry, ttl, "{f}: file TTL (expiry.max_age)");
    assert_eq!(c.deduplication.enabled, e.dedup, "{f}: dedup");
    assert_eq!(c.metrics.enabled, e.metrics.0, "{f}: metrics");
    assert_eq!(
        c.metrics.listen.map(|a| a.port()),
        e.metrics.1,
        "{f}: metrics port"
    );
    assert_eq!(c.scan.enabled, e.clamav, "{f}: clamav");
    assert_eq!(c.hfs.redis_enabled, e.redis, "{f}: redis");
    assert_eq!(
        xferd::config::hfs::counts(&loaded.report),
        e.counts,
        "{f}: keys per class"
    );
    // The class (c) keys are named once, in one warning, each with its reason.
    let accepted: Vec<&String> = loaded
        .warnings
        .iter()
        .filter(|w| w.starts_with("HFS keys accepted but not applied"))
        .collect();
    assert_eq!(accepted.len(), 1, "{f}: {:?}", loaded.warnings);
    for r in loaded
        .report
        .iter()
        .filter(|r| r.class == xferd::config::KeyClass::Accepted)
    {
        assert!(
            accepted[0].contains(&format!("  {}: {}", r.key, r.meaning)),
            "{f}: {} missing from the warning",
            r.key
        );
    }
}

#[tokio::test]
async fn all_19_hfs_configs_start_with_paths_and_ports_redirected() {
    assert_eq!(EXPECT.len(), 19);
    let on_disk = std::fs::read_dir(data("x").parent().unwrap())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "toml"))
        })
        .count();
    assert_eq!(on_disk, 19, "every file in the test data is in the table");
    for e in EXPECT {
        let loaded = Config::load(&data(e.file)).unwrap_or_else(|err| panic!("{}: {err}", e.file));
        check_mapped(e, &loaded);
        let mut config = loaded.config;
        let dir = tempfile::tempdir().unwrap();
        let separate_metrics = config.metrics.listen.is_some();
        config.apply_overrides(&Overrides {
            storage_path: Some(dir.path().join("storage")),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            state_path: Some(dir.path().join("state")),
            // HFS's metricsport (9090) may be taken here.
            metrics_listen: separate_metrics.then(|| "127.0.0.1:0".parse().unwrap()),
        });
        // Nothing the file names outside the temporary directory is touched.
        for p in [
            &config.hfs.pid_file,
            &config.hfs.log_file,
            &config.hfs.dedup_dir,
        ]
        .into_iter()
        .flatten()
        {
            assert!(p.starts_with(dir.path()), "{}: {}", e.file, p.display());
        }
        config.prepare_paths().unwrap();
        let server = tokio::time::timeout(Duration::from_secs(30), xferd::server::start(config))
            .await
            .unwrap_or_else(|_| panic!("{}: start timed out", e.file))
            .unwrap_or_else(|err| panic!("{}: start: {err:#}", e.file));
        let roots = xferd::tls::read_certs(&server.cert_path).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), async {
            let mut c = Client::connect(Proto::H1, server.addr, "localhost", &roots)
                .await
                .unwrap();
            get(&mut c, "/health", &[]).await.status
        })
        .await
        .unwrap_or_else(|_| panic!("{}: /health timed out", e.file));
        assert_eq!(status, 200, "{}", e.file);
        assert_eq!(
            server.metrics_addr.is_some(),
            separate_metrics,
            "{}",
            e.file
        );
        if let Some(m) = server.metrics_addr {
            let connect = tokio::net::TcpStream::connect(m);
            tokio::time::timeout(Duration::from_secs(5), connect)
                .await
                .unwrap_or_else(|_| panic!("{}: metrics timed out", e.file))
                .unwrap_or_else(|err| panic!("{}: metrics listener: {err}", e.file));
        }
        tokio::time::timeout(Duration::from_secs(15), server.shutdown())
            .await
            .unwrap_or_else(|_| panic!("{}: shutdown timed out", e.file));
    }
}

fn xferd(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xferd"))
        .args(args)
        .env("XFERD_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn check_config_explain_prints_every_key_with_its_class_and_counts() {
    let file = data("genconfig-advanced");
    let out = xferd(&[
        "check-config".as_ref(),
        "--explain".as_ref(),
        file.as_os_str(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let row = |key: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no row for {key}:\n{stdout}"))
            .to_string()
    };
    assert!(row("server.listen_address").contains("server.listen = 0.0.0.0:8080"));
    assert!(row("server.metricsport").contains("metrics.listen = 0.0.0.0:9090"));
    assert!(row("clamav.clamavenabled").contains("scan.enabled"));
    assert!(row("iso.enabled").contains("unsafe in HFS"));
    assert!(row("server.storage_path").contains("xferd key"));
    // Secrets are never printed.
    assert!(row("security.secret").contains("<redacted>"));
    assert!(!stdout.contains("your-secret-key-here"), "{stdout}");
    assert!(!stdout.contains("your-jwt-secret"), "{stdout}");
    assert!(
        stdout.contains("keys: 92 (a: 8 xferd, b: 13 HFS mapped, c: 71 HFS accepted"),
        "{stdout}"
    );
}

#[test]
fn a_misspelt_key_in_an_hfs_config_is_an_error_naming_the_nearest_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(data("genconfig-advanced")).unwrap();
    let file = dir.path().join("typo.toml");
    std::fs::write(&file, text.replace("clamavenabled", "clamavenabeld")).unwrap();
    let out = xferd(&["check-config".as_ref(), file.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("clamav.clamavenabeld"), "{stderr}");
    assert!(
        stderr.contains("did you mean `clamav.clamavenabled`"),
        "{stderr}"
    );
}

#[test]
fn serve_runs_an_hfs_config_with_flags_redirecting_paths_and_ports() {
    let dir = tempfile::tempdir().unwrap();
    let file = data("genconfig-minimal");
    let (storage, state) = (dir.path().join("storage"), dir.path().join("state"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_xferd"))
        .arg("serve")
        .arg("--config")
        .arg(&file)
        .arg("--storage-path")
        .arg(&storage)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .arg("--state-path")
        .arg(&state)
        .env("XFERD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let listening = rx.recv_timeout(Duration::from_secs(30));
    // The signal handlers are installed after the last start-up line ("try: ..."); a SIGTERM
    // before that would kill the process instead of stopping it.
    for _ in 0..10 {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) if l.starts_with("try:") => break,
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (tx2, rx2) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx2.send(child.wait_with_output());
    });
    let out = rx2
        .recv_timeout(Duration::from_secs(20))
        .expect("exits after SIGTERM")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = listening.unwrap_or_else(|_| panic!("never listened:\n{stderr}"));
    assert!(
        line.starts_with("xferd listening on https://127.0.0.1:"),
        "{line}"
    );
    assert!(!line.contains(":8080"), "{line}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        storage.is_dir() && state.is_dir(),
        "the redirected directories are used"
    );
    assert!(
        stderr.contains("HFS keys accepted but not applied (13)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("server.pidfilepath: not implemented yet"),
        "{stderr}"
    );
    assert!(!stderr.contains("change-this-to-your-secret"), "{stderr}");
}

#[test]
fn a_directory_that_cannot_be_created_is_an_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let file = data("tests-minimal");
    let out = xferd(&[
        "serve".as_ref(),
        "--config".as_ref(),
        file.as_os_str(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--storage-path".as_ref(),
        blocker.join("uploads").as_os_str(),
        "--state-path".as_ref(),
        dir.path().join("state").as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("config key `server.storage_path`"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot create directory"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

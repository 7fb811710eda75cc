//! The admin API (`[admin]`) end to end on its own loopback listener (HTTP/1.1): bearer
//! token required (401 without it, with a wrong one of any length), pagination over more
//! files than a page, stat, delete (then 404 on the main port), usage sums per prefix,
//! sessions in progress with their offsets, no state change on GET, and the
//! `xferd admin ...` subcommands. Also the config rules: off without a token, loopback only,
//! HFS key aliases.

mod common;

use bytes::Bytes;
use common::*;
use http::Method;
use std::io::{Read, Write};
use std::time::Duration;
use xferd::admin::cli::{call, CliError};
use xferd::client::Proto;
use xferd::core::auth::Scheme;

const TOKEN: &str = "admin-test-token-0123456789";

async fn server() -> (TestServer, String) {
    let srv = TestServer::start_with(|c| {
        c.admin.listen = "127.0.0.1:0".parse().unwrap();
        c.admin.token = Some(TOKEN.into());
        c.admin.max_page = 20;
    })
    .await;
    let url = format!(
        "http://{}",
        srv.server.as_ref().unwrap().admin_addr.unwrap()
    );
    (srv, url)
}

/// Status and JSON of an admin call (through the CLI's client).
async fn admin(url: &str, token: &str, m: Method, path: &str) -> (u16, serde_json::Value) {
    match call(url, token, m, path).await {
        Ok(v) => (200, v),
        Err(CliError::Refused { status, body }) => {
            (status, serde_json::from_str(&body).unwrap_or_default())
        }
        Err(e) => panic!("{path}: {e}"),
    }
}

/// One raw HTTP/1.1 exchange (to see headers and requests without a token), bounded.
async fn raw(url: &str, request: &str) -> String {
    let (url, request) = (url.to_string(), request.to_string());
    // Blocking I/O, off the runtime that serves the request.
    tokio::task::spawn_blocking(move || raw_blocking(&url, &request))
        .await
        .unwrap()
}

fn raw_blocking(url: &str, request: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.take(1 << 20).read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

async fn store(srv: &TestServer, files: &[(&str, usize)]) {
    let mut c = srv.client(Proto::H1).await;
    for (rel, n) in files {
        let r = put(&mut c, &signed_v(rel, *n as u64), &pattern(1, 0, *n), &[]).await;
        assert_eq!(r.status, 201, "{rel}");
    }
}

#[tokio::test]
async fn the_token_is_required_and_checked() {
    let (srv, url) = server().await;
    let r = raw(
        &url,
        "GET /files HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    assert!(
        r.to_ascii_lowercase().contains("www-authenticate: bearer"),
        "{r}"
    );
    assert!(r.contains("\"admin_unauthorized\""), "{r}");
    // Wrong tokens: same length, shorter, longer, a prefix, another scheme.
    let same_len: String = TOKEN.chars().rev().collect();
    for bad in [
        &same_len[..],
        "admin-test-token",
        &format!("{TOKEN}x"),
        &TOKEN[..10],
    ] {
        let (status, v) = admin(&url, bad, Method::GET, "/files").await;
        assert_eq!(
            (status, v["error"].as_str()),
            (401, Some("admin_unauthorized"))
        );
    }
    let r = raw(
        &url,
        &format!("GET /usage HTTP/1.1\r\nHost: a\r\nAuthorization: Basic {TOKEN}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    for path in ["/files", "/files/x", "/usage", "/sessions"] {
        let (status, _) = admin(&url, "nope", Method::GET, path).await;
        assert_eq!(status, 401, "{path}");
    }
    let (status, _) = admin(&url, "nope", Method::DELETE, "/files/x").await;
    assert_eq!(status, 401);
    // The right token; health needs none.
    let (status, v) = admin(&url, TOKEN, Method::GET, "/files").await;
    assert_eq!(
        (status, v["files"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let r = raw(
        &url,
        "GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // Counted by route and result.
    let text = srv
        .server
        .as_ref()
        .unwrap()
        .core
        .telemetry()
        .render()
        .unwrap();
    assert!(
        text.contains("xferd_admin_requests_total{result=\"unauthorized\",route=\"files\"} 6"),
        "{}",
        text.lines()
            .filter(|l| l.contains("admin"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The main port does not serve the admin routes.
    let mut c = srv.client(Proto::H1).await;
    let r = request(
        &mut c,
        "GET",
        "/sessions",
        &[("authorization", &format!("Bearer {TOKEN}"))],
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    srv.stop().await;
}

#[tokio::test]
async fn files_page_stat_delete_and_usage() {
    let (srv, url) = server().await;
    let mut files: Vec<(String, usize)> = (0..45)
        .map(|i| (format!("p/f{i:02}.bin"), 100 + i))
        .collect();
    files.push(("q/other.bin".into(), 7));
    let refs: Vec<(&str, usize)> = files.iter().map(|(p, n)| (p.as_str(), *n)).collect();
    store(&srv, &refs).await;

    // Pages of 20 (the configured maximum; limit=100 is clamped), then 20, then 5.
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let q = format!("/files?prefix=p/&limit=100&after={after}");
        let (status, v) = admin(&url, TOKEN, Method::GET, &q).await;
        assert_eq!(status, 200, "{v}");
        let page = v["files"].as_array().unwrap();
        assert!(page.len() <= 20);
        pages += 1;
        seen.extend(page.iter().map(|f| f["path"].as_str().unwrap().to_string()));
        match v["next"].as_str() {
            Some(n) => after = n.to_string(),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = files[..45].iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(seen, want);
    let (_, v) = admin(&url, TOKEN, Method::GET, "/files?limit=7").await;
    assert_eq!(v["files"].as_array().unwrap().len(), 7);
    assert_eq!(v["next"], "p/f06.bin");

    // Stat (a GET changes nothing: twice the same).
    for _ in 0..2 {
        let (status, v) = admin(&url, TOKEN, Method::GET, "/files/p/f03.bin").await;
        assert_eq!((status, v["size"].as_u64()), (200, Some(103)), "{v}");
    }
    let (status, v) = admin(&url, TOKEN, Method::GET, "/files/p/none").await;
    assert_eq!((status, v["error"].as_str()), (404, Some("not_found")));
    let (status, v) = admin(&url, TOKEN, Method::GET, "/files/../etc/passwd").await;
    assert!(matches!(status, 400 | 404), "{status} {v}");

    // Usage sums sizes per prefix.
    let total_p: u64 = (0..45).map(|i| 100 + i).sum();
    let (_, v) = admin(&url, TOKEN, Method::GET, "/usage?prefix=p/").await;
    assert_eq!(
        (v["files"].as_u64(), v["bytes"].as_u64()),
        (Some(45), Some(total_p))
    );
    let (_, v) = admin(&url, TOKEN, Method::GET, "/usage").await;
    assert_eq!(
        (v["files"].as_u64(), v["bytes"].as_u64()),
        (Some(46), Some(total_p + 7))
    );

    // Delete: then gone on the main port too.
    let (status, v) = admin(&url, TOKEN, Method::DELETE, "/files/p/f03.bin").await;
    assert_eq!((status, v["deleted"].as_str()), (200, Some("p/f03.bin")));
    let mut c = srv.client(Proto::H1).await;
    assert_eq!(get(&mut c, "/p/f03.bin", &[]).await.status, 404);
    let (status, _) = admin(&url, TOKEN, Method::DELETE, "/files/p/f03.bin").await;
    assert_eq!(status, 404);
    let (_, v) = admin(&url, TOKEN, Method::GET, "/usage?prefix=p/").await;
    assert_eq!(v["bytes"].as_u64(), Some(total_p - 103));

    // A "directory" is no file: a client mistake, never a 5xx.
    let (status, v) = admin(&url, TOKEN, Method::DELETE, "/files/p").await;
    assert!(matches!(status, 404 | 409), "{status} {v}");
    let (status, _) = admin(&url, TOKEN, Method::GET, "/files/p").await;
    assert!(matches!(status, 404 | 409), "{status}");
    let (status, _) = admin(&url, TOKEN, Method::GET, "/files/p/f04.bin/x").await;
    assert!(matches!(status, 404 | 409), "{status}");
    // Methods that do not exist here.
    let (status, _) = admin(&url, TOKEN, Method::POST, "/files").await;
    assert_eq!(status, 405);
    let (status, _) = admin(&url, TOKEN, Method::DELETE, "/usage").await;
    assert_eq!(status, 405);
    let (status, _) = admin(&url, TOKEN, Method::GET, "/nothing").await;
    assert_eq!(status, 404);
    let (status, _) = admin(&url, TOKEN, Method::GET, "/files?limit=0").await;
    assert_eq!(status, 400);
    srv.stop().await;
}

#[tokio::test]
async fn sessions_show_offsets() {
    let (srv, url) = server().await;
    let mut c = srv.client(Proto::H1).await;
    let tus = ("tus-resumable", "1.0.0");
    let post = signed(
        "",
        Scheme::V3,
        "POST",
        "up/big.bin",
        0,
        "",
        now_unix() + 600,
    );
    let r = request(
        &mut c,
        "POST",
        &post,
        &[tus, ("upload-length", "1000")],
        None,
    )
    .await;
    assert_eq!(r.status, 201);
    let loc = r.header("location").unwrap().to_string();
    let id = loc.rsplit('/').next().unwrap().to_string();
    let r = request(
        &mut c,
        "PATCH",
        &loc,
        &[
            tus,
            ("content-type", "application/offset+octet-stream"),
            ("upload-offset", "0"),
            ("content-length", "300"),
        ],
        Some(body_once(Bytes::from(vec![5u8; 300]))),
    )
    .await;
    assert_eq!(r.status, 204);
    let (status, v) = admin(&url, TOKEN, Method::GET, "/sessions").await;
    assert_eq!(status, 200);
    let list = v["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    let s = &list[0];
    assert_eq!(s["id"], id.as_str());
    assert_eq!(s["protocol"], "tus");
    assert_eq!(s["target"], "up/big.bin");
    assert_eq!(
        (s["offset"].as_u64(), s["length"].as_u64()),
        (Some(300), Some(1000))
    );
    // Completed uploads are no longer in progress.
    let r = request(
        &mut c,
        "PATCH",
        &loc,
        &[
            tus,
            ("content-type", "application/offset+octet-stream"),
            ("upload-offset", "300"),
            ("content-length", "700"),
        ],
        Some(body_once(Bytes::from(vec![6u8; 700]))),
    )
    .await;
    assert_eq!(r.status, 204);
    let (_, v) = admin(&url, TOKEN, Method::GET, "/sessions").await;
    assert_eq!(v["sessions"].as_array().map(Vec::len), Some(0), "{v}");
    srv.stop().await;
}

#[tokio::test]
async fn the_admin_subcommands_call_the_api() {
    let (srv, url) = server().await;
    store(&srv, &[("c/a.txt", 10), ("c/b.txt", 20), ("c/d.txt", 30)]).await;
    let token_file = srv.dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let (url1, tf1) = (url.clone(), token_file.clone());
    let run = move |args: &[&str]| {
        let (url, token_file) = (&url1, &tf1);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_xferd"))
            .arg("admin")
            .args(["--url", url])
            .arg("--token-file")
            .arg(token_file)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The process blocks on the server, which runs on this test's runtime: run it apart.
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        let list = run(&["list", "--prefix", "c/", "--limit", "2", "--all"]);
        let usage = run(&["usage", "--prefix", "c/"]);
        let stat = run(&["stat", "c/b.txt"]);
        let delete = run(&["delete", "c/b.txt"]);
        let again = run(&["delete", "c/b.txt"]);
        let sessions = run(&["sessions"]);
        assert!(
            list.0 && usage.0 && stat.0 && delete.0 && sessions.0,
            "{list:?} {usage:?} {stat:?} {delete:?} {sessions:?}"
        );
        assert!(!again.0, "deleting twice fails");
        assert!(again.2.contains("404"), "{}", again.2);
        let out = [list.1, usage.1, stat.1, delete.1, sessions.1].join("");
        (true, out, again.2)
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // list --all: pages of 2 then 1.
    assert_eq!(lines[0]["files"].as_array().unwrap().len(), 2);
    assert_eq!(lines[1]["files"][0]["path"], "c/d.txt");
    assert_eq!(
        (lines[2]["files"].as_u64(), lines[2]["bytes"].as_u64()),
        (Some(3), Some(60))
    );
    assert_eq!(lines[3]["size"], 20);
    assert_eq!(lines[4]["deleted"], "c/b.txt");
    assert_eq!(lines[5]["sessions"].as_array().map(Vec::len), Some(0));
    // A wrong token fails.
    std::fs::write(&token_file, "wrong-token-wrong-token\n").unwrap();
    let tf = token_file.clone();
    let url2 = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_xferd"))
            .args(["admin", "--url", &url2, "--token-file"])
            .arg(&tf)
            .arg("sessions")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    srv.stop().await;
}

#[test]
fn config_rules_and_hfs_aliases() {
    use xferd::config::Config;
    // Off without a token.
    let c = Config::parse("", "t").unwrap().config;
    assert!(!c.admin.active());
    // A non-loopback address is refused (plain HTTP).
    let e = Config::parse(
        "[admin]\nlisten = \"0.0.0.0:8444\"\ntoken = \"0123456789abcdef0123\"\n",
        "t",
    )
    .unwrap_err();
    assert!(e.to_string().contains("admin.listen"), "{e}");
    let e = Config::parse("[admin]\ntoken = \"short\"\n", "t").unwrap_err();
    assert!(e.to_string().contains("admin.token"), "{e}");
    // HFS: [admin] enabled and [admin.auth] token.
    let l = Config::parse(
        "[admin]\nenabled = true\npath_prefix = \"/admin\"\n[admin.auth]\ntype = \"bearer\"\ntoken = \"0123456789abcdef0123\"\n",
        "t",
    )
    .unwrap();
    assert!(l.config.admin.active());
    assert_eq!(
        l.config.admin.token.as_deref(),
        Some("0123456789abcdef0123")
    );
    assert!(!format!("{:?}", l.config.admin).contains("0123456789abcdef"));
    let l = Config::parse(
        "[admin]\nenabled = false\n[admin.auth]\ntoken = \"0123456789abcdef0123\"\n",
        "t",
    )
    .unwrap();
    assert!(!l.config.admin.active());
    // HFS: [clamav] clamavenabled, clamavsocket, maxscansize.
    let l = Config::parse(
        "[clamav]\nclamavenabled = true\nclamavsocket = \"/run/c.sock\"\nmaxscansize = \"200MB\"\nnumscanworkers = 2\n",
        "t",
    )
    .unwrap();
    let s = &l.config.scan;
    assert!(s.enabled && !s.fail_open);
    assert_eq!(s.socket, std::path::PathBuf::from("/run/c.sock"));
    assert_eq!(s.max_size, 200 << 20);
}

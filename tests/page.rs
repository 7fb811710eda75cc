//! The upload page over HTTP/1.1, HTTP/2 and HTTP/3: its files and their strict CSP, and the
//! page capability (`xferd sign --page`) as the authorisation of a tus creation: uploads
//! land in a fresh directory under the token's prefix, within its size and before its
//! expiry, and nowhere else; later requests use the upload URL. Also the request metric by
//! route, client family and protocol. (The page in a real browser: `interop/browser/`.)

mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::time::Duration;
use xferd::client::Proto;
use xferd::core::auth::page::Capability;
use xferd::core::auth::Keys;

const OCTETS: (&str, &str) = ("content-type", "application/offset+octet-stream");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
    img-src 'self'; media-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn token(prefix: &str, expires: u64, max_size: u64) -> String {
    Capability {
        prefix: prefix.into(),
        expires,
        max_size,
    }
    .mint(&Keys::new(SECRET, &[], false))
}

fn meta(name: &str) -> String {
    use base64::Engine as _;
    format!(
        "filename {}",
        base64::engine::general_purpose::STANDARD.encode(name)
    )
}

/// A tus creation on the collection with `Authorization: Bearer <token>` and a full
/// `Upload-Metadata` value.
async fn create_with_meta(
    c: &mut xferd::client::Client,
    token: &str,
    length: &str,
    metadata: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let auth = format!("Bearer {token}");
    let mut h = vec![
        TUS,
        ("authorization", auth.as_str()),
        ("upload-length", length),
        ("upload-metadata", metadata),
    ];
    h.extend_from_slice(extra);
    request(c, "POST", "/files/", &h, None).await
}

/// A tus creation on the collection with `Authorization: Bearer <token>`.
async fn create(
    c: &mut xferd::client::Client,
    token: &str,
    length: &str,
    name: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let auth = format!("Bearer {token}");
    let m = meta(name);
    let mut h = vec![
        TUS,
        ("authorization", auth.as_str()),
        ("upload-length", length),
        ("upload-metadata", m.as_str()),
    ];
    h.extend_from_slice(extra);
    request(c, "POST", "/files/", &h, None).await
}

#[tokio::test]
async fn page_files_are_served_under_a_strict_csp() {
    let srv = TestServer::start().await;
    for proto in Proto::ALL {
        let l = label(proto);
        let mut c = srv.client(proto).await;
        for path in ["/upload-page/", "/upload-page", "/upload-page/index.html"] {
            let r = get(&mut c, path, &[]).await;
            assert_eq!(r.status, 200, "{l} {path}");
            assert_eq!(r.version, version_of(proto), "{l}");
            assert_eq!(r.header("content-security-policy"), Some(CSP), "{l}");
            assert_eq!(
                r.header("content-type"),
                Some("text/html; charset=utf-8"),
                "{l}"
            );
            assert_eq!(r.header("x-frame-options"), Some("DENY"));
            assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
            let html = String::from_utf8(r.body.to_vec()).unwrap();
            assert!(
                html.contains(r#"<meta name="xferd-tus" content="/files/">"#),
                "{l}: the tus path is filled in"
            );
            // Nothing inline: every script has a src, no style element or attribute, no
            // other origin.
            assert_eq!(
                html.matches("<script").count(),
                html.matches("<script src=\"/upload-page/").count()
            );
            assert!(!html.contains("<style") && !html.contains(" style="), "{l}");
            assert!(
                !html.contains("http://") && !html.contains("https://"),
                "{l}"
            );
        }
        for (path, ctype, needle) in [
            (
                "/upload-page/app.js",
                "text/javascript; charset=utf-8",
                "Tus-Resumable",
            ),
            (
                "/upload-page/style.css",
                "text/css; charset=utf-8",
                "progress",
            ),
        ] {
            let r = get(&mut c, path, &[]).await;
            assert_eq!(r.status, 200, "{l} {path}");
            assert_eq!(r.header("content-type"), Some(ctype), "{l} {path}");
            assert_eq!(r.header("content-security-policy"), Some(CSP), "{l}");
            assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
            assert!(String::from_utf8_lossy(&r.body).contains(needle), "{l}");
            let h = request(&mut c, "HEAD", path, &[], None).await;
            assert_eq!(h.status, 200, "{l} HEAD {path}");
            assert!(h.body.is_empty());
            assert_eq!(h.header("content-length"), r.header("content-length"));
        }
        if proto != Proto::H3 {
            let r = get(&mut c, "/upload-page/", &[]).await;
            let port = srv.addr().port();
            assert_eq!(
                r.header("alt-svc"),
                Some(format!("h3=\":{port}\"; ma=86400").as_str()),
                "{l}: the browser learns HTTP/3 from the page itself"
            );
        }
        let r = get(&mut c, "/upload-page/../secret", &[]).await;
        assert_ne!(r.status, 200, "{l}");
        let r = get(&mut c, "/upload-page/other.js", &[]).await;
        assert_eq!(r.status, 404, "{l}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn a_page_token_creates_under_its_prefix_and_resumes_by_upload_url() {
    let srv = TestServer::start().await;
    let tok = token("inbox/alice", now_unix() + 600, 1 << 20);
    for proto in Proto::ALL {
        let l = label(proto);
        let mut c = srv.client(proto).await;
        let data = pattern(7, 0, 300_000);
        let name = format!("../../etc/{l} photo.txt");
        let r = create(&mut c, &tok, "300000", &name, &[]).await;
        assert_eq!(r.status, 201, "{l}: {:?}", r.body);
        let loc = r.header("location").unwrap().to_string();
        let link = r.header("content-location").unwrap().to_string();
        let rest = link.strip_prefix("/inbox/alice/").expect(&link);
        let (dir, file) = rest.split_once('/').unwrap();
        assert!(
            dir.len() == 16 && dir.bytes().all(|b| b.is_ascii_hexdigit()),
            "{l}: {link}"
        );
        assert_eq!(file, format!("{l}%20photo.txt"), "{l}: one safe segment");

        // Later requests need no token: the upload URL authorises them.
        let r = request(
            &mut c,
            "PATCH",
            &loc,
            &[TUS, OCTETS, ("upload-offset", "0")],
            Some(body_once(data.slice(..120_000))),
        )
        .await;
        assert_eq!(r.status, 204, "{l}");
        let h = request(&mut c, "HEAD", &loc, &[TUS], None).await;
        assert_eq!(h.header("upload-offset"), Some("120000"), "{l}");
        assert_eq!(h.header("repr-digest"), None, "{l}: not complete yet");
        let r = request(
            &mut c,
            "PATCH",
            &loc,
            &[TUS, OCTETS, ("upload-offset", "120000")],
            Some(body_once(data.slice(120_000..))),
        )
        .await;
        assert_eq!(r.status, 204, "{l}");
        let sha = Sha256::digest(&data);
        let want = {
            use base64::Engine as _;
            format!(
                "sha-256=:{}:",
                base64::engine::general_purpose::STANDARD.encode(sha)
            )
        };
        assert_eq!(r.header("repr-digest"), Some(want.as_str()), "{l}");
        let h = request(&mut c, "HEAD", &loc, &[TUS], None).await;
        assert_eq!(h.header("repr-digest"), Some(want.as_str()), "{l}");
        let stored = srv
            .storage()
            .join("inbox/alice")
            .join(dir)
            .join(format!("{l} photo.txt"));
        assert_eq!(std::fs::read(&stored).unwrap(), data.to_vec(), "{l}");
        let g = get(&mut c, &link, &[]).await;
        assert_eq!((g.status.as_u16(), g.body.len()), (200, 300_000), "{l}");
    }
    // Six uploads' worth of names, no file outside the prefix.
    for f in srv.stored_files() {
        assert!(
            f.starts_with("inbox/alice/") || f.starts_with(".xferd"),
            "{f}"
        );
    }
    srv.stop().await;
}

#[tokio::test]
async fn parallel_partials_under_a_page_token_concatenate_into_one_file() {
    let srv = TestServer::start().await;
    let tok = token("inbox", now_unix() + 600, 1 << 20);
    let auth = format!("Bearer {tok}");
    for proto in Proto::ALL {
        let l = label(proto);
        let mut c = srv.client(proto).await;
        let data = pattern(3, 0, 250_000);
        // The partials and the final name one directory (16 hex digits) of their own.
        let dir = format!("{:016x}", 0x5eed_0000_u64 + u64::from(l.as_bytes()[1]));
        let m = format!("{},dir {}", meta("movie.webm"), {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&dir)
        });
        let mut parts = Vec::new();
        for (start, end) in [(0, 100_000), (100_000, 250_000)] {
            let len = (end - start).to_string();
            let partial = [("upload-concat", "partial")];
            let r = create_with_meta(&mut c, &tok, &len, &m, &partial).await;
            assert_eq!(r.status, 201, "{l}: {:?}", r.body);
            let loc = r.header("location").unwrap().to_string();
            let r = request(
                &mut c,
                "PATCH",
                &loc,
                &[TUS, OCTETS, ("upload-offset", "0")],
                Some(body_once(data.slice(start..end))),
            )
            .await;
            assert_eq!(r.status, 204, "{l}");
            parts.push(loc);
        }
        let fin = format!("final;{}", parts.join(" "));
        let h = [
            TUS,
            ("authorization", auth.as_str()),
            ("upload-metadata", m.as_str()),
            ("upload-concat", fin.as_str()),
        ];
        let r = request(&mut c, "POST", "/files/", &h, None).await;
        assert_eq!(r.status, 201, "{l}: {:?}", r.body);
        let link = r.header("content-location").unwrap().to_string();
        assert_eq!(link, format!("/inbox/{dir}/movie.webm"));
        let loc = r.header("location").unwrap().to_string();
        let mut done = request(&mut c, "HEAD", &loc, &[TUS], None).await;
        for _ in 0..100 {
            if done.header("upload-offset") == Some("250000") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            done = request(&mut c, "HEAD", &loc, &[TUS], None).await;
        }
        assert_eq!(done.header("upload-offset"), Some("250000"), "{l}");
        assert!(done.header("repr-digest").is_some(), "{l}");
        let g = get(&mut c, &link, &[]).await;
        assert_eq!(g.status, 200, "{l}");
        assert_eq!(Sha256::digest(&g.body), Sha256::digest(&data), "{l}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn a_page_token_allows_nothing_beyond_its_prefix_size_and_expiry() {
    let srv = TestServer::start_with(|c| {
        c.security.allowed_clock_skew = Duration::ZERO;
        c.server.allowed_extensions = vec!["txt".into(), "webm".into()];
    })
    .await;
    let now = now_unix();
    let good = token("inbox", now + 600, 1000);
    for proto in Proto::ALL {
        let l = label(proto);
        let mut c = srv.client(proto).await;
        let code = |r: &Reply| (r.status.as_u16(), r.header("xferd-error").map(String::from));
        let refused = |status: u16, code: &str| (status, Some(code.to_string()));

        let r = create(&mut c, &good, "1000", "a.txt", &[]).await;
        assert_eq!(r.status, 201, "{l}: the limit itself is allowed");
        let r = create(&mut c, &good, "1001", "a.txt", &[]).await;
        assert_eq!(code(&r), refused(413, "too_large"), "{l}");
        let expired = token("inbox", now - 1, 1000);
        let r = create(&mut c, &expired, "10", "a.txt", &[]).await;
        assert_eq!(code(&r), refused(403, "signature_expired"), "{l}");
        let forged = good.replacen(".1000.", ".99999999.", 1);
        let r = create(&mut c, &forged, "10", "a.txt", &[]).await;
        assert_eq!(code(&r), refused(403, "signature_invalid"), "{l}");
        let r = create(&mut c, "xp1.garbage", "10", "a.txt", &[]).await;
        assert_eq!(code(&r), refused(403, "signature_invalid"), "{l}");
        let too_long = token("inbox", now + 30 * 24 * 3600, 1000);
        let r = create(&mut c, &too_long, "10", "a.txt", &[]).await;
        assert_eq!(code(&r), refused(403, "signature_lifetime_exceeded"), "{l}");
        let r = create(&mut c, &good, "10", "run.exe", &[]).await;
        assert_eq!(code(&r), refused(415, "extension_not_allowed"), "{l}");

        // No deferred length: the size must be known and bounded.
        let auth = format!("Bearer {good}");
        let m = meta("a.txt");
        let deferred = [
            TUS,
            ("authorization", auth.as_str()),
            ("upload-defer-length", "1"),
            ("upload-metadata", m.as_str()),
        ];
        let r = request(&mut c, "POST", "/files/", &deferred, None).await;
        assert_eq!(code(&r), refused(400, "bad_request"), "{l}");
        // Partials each within the size, but together above it: the final is refused.
        let partial = [("upload-concat", "partial")];
        let mut parts = Vec::new();
        for _ in 0..2 {
            let r = create(&mut c, &good, "600", "a.txt", &partial).await;
            assert_eq!(r.status, 201, "{l}");
            parts.push(r.header("location").unwrap().to_string());
        }
        let r = create(&mut c, &good, "1001", "a.txt", &partial).await;
        assert_eq!(
            code(&r),
            refused(413, "too_large"),
            "{l}: a partial above the size"
        );
        let fin = format!("final;{}", parts.join(" "));
        let h = [
            TUS,
            ("authorization", auth.as_str()),
            ("upload-metadata", m.as_str()),
            ("upload-concat", fin.as_str()),
        ];
        let r = request(&mut c, "POST", "/files/", &h, None).await;
        assert_eq!(
            code(&r),
            refused(413, "too_large"),
            "{l}: 1200 bytes > 1000"
        );

        // The token authorises nothing but a creation on the tus collection.
        let bearer = [("authorization", auth.as_str())];
        let r = put(&mut c, "/inbox/x.txt", b"hello", &bearer).await;
        assert_eq!(code(&r), refused(403, "signature_missing"), "{l}: PUT");
        let mut h = vec![TUS, ("upload-length", "5")];
        h.extend_from_slice(&bearer);
        let r = request(&mut c, "POST", "/inbox/y.txt", &h, None).await;
        assert_eq!(
            code(&r),
            refused(403, "signature_missing"),
            "{l}: POST elsewhere"
        );
        let r = request(
            &mut c,
            "POST",
            "/files/",
            &[TUS, ("upload-length", "5")],
            None,
        )
        .await;
        assert_eq!(r.status, 400, "{l}: the collection without a token");
    }
    let files: Vec<String> = srv
        .stored_files()
        .into_iter()
        .filter(|f| !f.starts_with(".xferd"))
        .collect();
    assert!(files.is_empty(), "nothing stored: {files:?}");
    srv.stop().await;
}

#[tokio::test]
async fn requests_are_counted_by_route_client_family_and_protocol() {
    let srv = TestServer::start().await;
    let browser = (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/148.0",
    );
    for proto in Proto::ALL {
        let mut c = srv.client(proto).await;
        for _ in 0..2 {
            get(&mut c, "/upload-page/", &[browser]).await;
        }
        get(&mut c, "/missing.txt", &[("user-agent", "curl/7.88.1")]).await;
        get(
            &mut c,
            "/missing.txt",
            &[("user-agent", "Conversations/2.17")],
        )
        .await;
    }
    let mut c = srv.client(Proto::H1).await;
    let text = String::from_utf8(get(&mut c, "/metrics", &[]).await.body.to_vec()).unwrap();
    for p in ["h1", "h2", "h3"] {
        for (route, agent, n) in [
            ("page", "browser", 2),
            ("download", "curl", 1),
            ("download", "xmpp_client", 1),
            ("page", "curl", 0),
            ("tus", "xferd_client", 0),
        ] {
            let want =
                format!("xferd_requests_total{{agent=\"{agent}\",protocol=\"{p}\",route=\"{route}\"}} {n}\n");
            assert!(text.contains(&want), "missing {want}");
        }
    }
    srv.stop().await;
}

#[test]
fn xferd_sign_page_prints_a_link_with_the_token_in_the_fragment() {
    let sign = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_xferd"))
            .args(["sign", "--secret", SECRET])
            .args(args)
            .output()
            .expect("xferd runs")
    };
    let before = now_unix();
    let out = sign(&[
        "--page",
        "--prefix",
        "inbox/bob",
        "--expires",
        "10m",
        "--max-size",
        "5MB",
        "--base-url",
        "https://files.example:8443",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap();
    let (page, token) = url.trim().split_once('#').unwrap();
    assert_eq!(page, "https://files.example:8443/upload-page/");
    let cap = Keys::new(SECRET, &[], false)
        .verify_capability(token, now_unix(), 0)
        .expect("the token verifies with the secret");
    assert_eq!(cap.prefix, "inbox/bob");
    assert_eq!(cap.max_size, 5 << 20);
    assert!((before + 600..=now_unix() + 600).contains(&cap.expires));
    for bad in [
        &["--page"][..],
        &["--page", "--prefix", "../up"],
        &["--page", "--prefix", "x", "--path", "a.txt"],
        &["--page", "--prefix", "x", "--expires", "400d"],
        &["--page", "--prefix", "x", "--max-size", "lots"],
    ] {
        let out = sign(bad);
        assert!(!out.status.success(), "{bad:?} should be refused");
    }
}

//! End-to-end cases run over HTTP/1.1, HTTP/2 and HTTP/3 against a server started in-process
//! on 127.0.0.1 port 0, with real TLS (the client trusts the server's generated certificate).

mod common;

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use xferd::client::Proto;
use xferd::core::auth::Scheme;
use xferd::core::body::BodyError;

/// (stored path, signed URL, extra request headers)
type UploadCase = (String, String, Vec<(&'static str, &'static str)>);

#[tokio::test]
async fn every_signature_scheme_uploads_and_downloads() {
    let srv = TestServer::start().await;
    for proto in Proto::ALL {
        let mut c = srv.client(proto).await;
        let l = label(proto);
        let data = pattern(1, 0, 5000);
        let exp = now_unix() + 300;
        let cases: Vec<UploadCase> = vec![
            (
                format!("{l}/v/a.bin"),
                signed_v(&format!("{l}/v/a.bin"), 5000),
                vec![],
            ),
            (
                format!("{l}/v2/photo.jpg"),
                signed(
                    "",
                    Scheme::V2,
                    "PUT",
                    &format!("{l}/v2/photo.jpg"),
                    5000,
                    "image/jpeg",
                    0,
                ),
                vec![("content-type", "image/jpeg")],
            ),
            // OMEMO: declared octet-stream, name *.jpg, signed over the declared type.
            (
                format!("{l}/v2/omemo.jpg"),
                signed(
                    "",
                    Scheme::V2,
                    "PUT",
                    &format!("{l}/v2/omemo.jpg"),
                    5000,
                    "application/octet-stream",
                    0,
                ),
                vec![("content-type", "application/octet-stream")],
            ),
            // Signed over the type guessed from the extension, sent without Content-Type.
            (
                format!("{l}/v2/guess.png"),
                signed(
                    "",
                    Scheme::V2,
                    "PUT",
                    &format!("{l}/v2/guess.png"),
                    5000,
                    "image/png",
                    0,
                ),
                vec![],
            ),
            (
                format!("{l}/token/t.txt"),
                signed(
                    "",
                    Scheme::Token,
                    "PUT",
                    &format!("{l}/token/t.txt"),
                    5000,
                    "text/plain",
                    0,
                ),
                vec![("content-type", "text/plain")],
            ),
            (
                format!("{l}/v3/x.bin"),
                signed("", Scheme::V3, "PUT", &format!("{l}/v3/x.bin"), 0, "", exp),
                vec![],
            ),
        ];
        for (rel, url, headers) in cases {
            let r = put(&mut c, &url, &data, &headers).await;
            assert_eq!(r.status, 201, "{l} PUT {url}: {:?}", r.body);
            assert_eq!(r.version, version_of(proto));
            assert_eq!(r.json()["size"], 5000);
            let g = get(&mut c, &format!("/{}", encode_path(&rel)), &[]).await;
            assert_eq!(g.status, 200, "{l} GET {rel}");
            assert_eq!(g.body, data, "{l} {rel} content");
        }
    }
    srv.stop().await;
}

#[tokio::test]
async fn refusals_have_the_right_status_and_leave_nothing() {
    let srv = TestServer::start_with(|c| {
        c.server.max_upload_size = 10_000;
        c.server.allowed_extensions = vec!["bin".into(), "txt".into()];
    })
    .await;
    for proto in Proto::ALL {
        let mut c = srv.client(proto).await;
        let l = label(proto);
        let d = pattern(2, 0, 100);
        let rel = format!("{l}/r/file.bin");
        let good = signed_v(&rel, 100);
        let expired = signed("", Scheme::V3, "PUT", &rel, 0, "", now_unix() - 3600);
        let wrong_method = signed("", Scheme::V3, "GET", &rel, 0, "", now_unix() + 60);
        let bad_mac = good.replace("?v=", "?v=00");
        let tampered = format!("{}0", &good[..good.len() - 1]);
        let cases: Vec<(&str, String, u16, &str)> = vec![
            ("no signature", format!("/{rel}"), 403, "signature_missing"),
            ("malformed mac", bad_mac, 403, "signature_invalid"),
            ("wrong mac", tampered, 403, "signature_invalid"),
            ("expired v3", expired, 403, "signature_expired"),
            (
                "v3 for GET used to PUT",
                wrong_method,
                403,
                "signature_invalid",
            ),
            (
                "wrong size signed",
                signed_v(&rel, 99),
                403,
                "signature_invalid",
            ),
            (
                "too large",
                signed_v(&format!("{l}/r/big.bin"), 100),
                201,
                "",
            ),
        ];
        for (what, url, want, code) in cases {
            if want == 201 {
                continue;
            }
            let r = put(&mut c, &url, &d, &[]).await;
            assert_eq!(r.status, want, "{l} {what}");
            assert_eq!(r.json()["error"], code, "{l} {what}");
            assert_eq!(r.header("xferd-error"), Some(code), "{l} {what}");
        }
        // 413 above max_upload_size (signature valid).
        let big = pattern(3, 0, 10_001);
        let r = put(
            &mut c,
            &signed_v(&format!("{l}/r/big.bin"), 10_001),
            &big,
            &[],
        )
        .await;
        assert_eq!(r.status, 413, "{l} too large");
        // 415 extension not allowed.
        let r = put(&mut c, &signed_v(&format!("{l}/r/evil.exe"), 100), &d, &[]).await;
        assert_eq!(r.status, 415, "{l} extension");
        assert_eq!(r.json()["error"], "extension_not_allowed");
        // 411 without Content-Length (h1 sends chunked; h2/h3 send no length).
        let r = request(&mut c, "PUT", &good, &[], Some(body_once(d.clone()))).await;
        assert_eq!(r.status, 411, "{l} no length");
        // 201 then 409, and the first file is untouched.
        let r = put(&mut c, &good, &d, &[]).await;
        assert_eq!(r.status, 201, "{l} first");
        let other = pattern(9, 0, 100);
        let r = put(&mut c, &good, &other, &[]).await;
        assert_eq!(r.status, 409, "{l} second");
        assert_eq!(r.json()["error"], "file_exists");
        assert_eq!(get(&mut c, &format!("/{rel}"), &[]).await.body, d);
        // Unknown method and missing file.
        assert_eq!(
            request(&mut c, "DELETE", &format!("/{rel}"), &[], None)
                .await
                .status,
            405
        );
        assert_eq!(
            get(&mut c, &format!("/{l}/nope.bin"), &[]).await.status,
            404
        );
    }
    // Only the three successful uploads exist; no temporary files.
    assert_eq!(
        srv.stored_files(),
        vec!["h1/r/file.bin", "h2/r/file.bin", "h3/r/file.bin"]
    );
    srv.stop().await;
}

#[tokio::test]
async fn auth_failure_status_can_be_401_and_prefix_is_stripped() {
    let srv = TestServer::start_with(|c| {
        c.security.auth_failure_status = 401;
        c.server.path_prefix = "/upload/".into();
    })
    .await;
    for proto in Proto::ALL {
        let mut c = srv.client(proto).await;
        let l = label(proto);
        let rel = format!("{l}/p.txt");
        let url = signed("upload", Scheme::V, "PUT", &rel, 3, "", 0);
        let r = put(&mut c, &url, b"abc", &[]).await;
        assert_eq!(r.status, 201, "{l}");
        assert_eq!(
            get(&mut c, &format!("/upload/{rel}"), &[]).await.body,
            &b"abc"[..]
        );
        let r = put(&mut c, &format!("/upload/{l}/q.txt?v=00"), b"abc", &[]).await;
        assert_eq!(r.status, 401, "{l}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn traversal_and_bad_paths_are_refused_before_the_disk() {
    let srv = TestServer::start().await;
    let outside = srv.dir.path().join("escaped");
    for proto in Proto::ALL {
        let mut c = srv.client(proto).await;
        let l = label(proto);
        // Each raw path, signed over what a naive server would decode it to.
        let cases: &[(&str, &str)] = &[
            ("/../escaped", "../escaped"),
            ("/a/%2e%2e/%2e%2e/escaped", "a/../../escaped"),
            ("/a/..%2f..%2fescaped", "a/../../escaped"),
            ("/a%5c..%5c..%5cescaped", "a\\..\\..\\escaped"),
            ("/a/b%00.txt", "a/b\0.txt"),
            ("/a//b.txt", "a//b.txt"),
            ("/./a.txt", "./a.txt"),
            ("/a/.xferd-tmp-1", "a/.xferd-tmp-1"),
        ];
        for (raw, decoded) in cases {
            let mac = xferd::core::auth::Keys::new(SECRET, &[], false)
                .sign(format!("{decoded} 3").as_bytes());
            let r = put(&mut c, &format!("{raw}?v={mac}"), b"abc", &[]).await;
            assert_eq!(r.status, 400, "{l} {raw}");
            assert_eq!(r.json()["error"], "bad_path", "{l} {raw}");
            let g = get(&mut c, raw, &[]).await;
            assert_eq!(g.status, 400, "{l} GET {raw}");
        }
    }
    assert!(!outside.exists());
    assert!(srv.stored_files().is_empty(), "{:?}", srv.stored_files());
    srv.stop().await;
}

#[tokio::test]
async fn odd_but_legal_names_round_trip() {
    let srv = TestServer::start().await;
    for proto in Proto::ALL {
        let mut c = srv.client(proto).await;
        let l = label(proto);
        for name in [
            "My Photo é.jpg",
            "Grüße aus Köln.txt",
            "100% sure.txt",
            "a+b.txt",
            "x#y&z.txt",
            "it's.txt",
            "日本語.png",
        ] {
            let rel = format!("{l}/d6a1c3e0/{name}");
            let r = put(&mut c, &signed_v(&rel, 5), b"hello", &[]).await;
            assert_eq!(r.status, 201, "{l} {name}");
            assert_eq!(r.json()["path"], rel.as_str());
            let g = get(&mut c, &format!("/{}", encode_path(&rel)), &[]).await;
            assert_eq!(
                (g.status.as_u16(), &g.body[..]),
                (200, &b"hello"[..]),
                "{l} {name}"
            );
        }
    }
    srv.stop().await;
}

#[tokio::test]
async fn cut_off_and_short_uploads_leave_nothing() {
    let srv = TestServer::start().await;
    for proto in Proto::ALL {
        let l = label(proto);
        // The client's body fails half-way: the request is aborted on the wire.
        let rel = format!("{l}/cut.bin");
        let c = srv.client(proto).await;
        let half: Vec<Result<Bytes, BodyError>> = vec![
            Ok(pattern(4, 0, 300_000)),
            Err(BodyError("client gave up".into())),
        ];
        let body = Box::pin(futures_util::stream::iter(half)).boxed();
        let req = http::Request::builder()
            .method("PUT")
            .uri(signed_v(&rel, 1_000_000))
            .header("content-length", "1000000")
            .body(())
            .unwrap();
        let _ = c.send(req, Some(body)).await; // an error is expected
        drop(c);
        eventually(&format!("{l}: no file after cut-off upload"), || {
            srv.stored_files().is_empty()
        })
        .await;
        let mut c = srv.client(proto).await;
        assert_eq!(get(&mut c, &format!("/{rel}"), &[]).await.status, 404);
    }
    srv.stop().await;
}

#[tokio::test]
async fn short_body_for_declared_length_is_not_stored() {
    // HTTP/2 and HTTP/3 let a client end a stream before its declared Content-Length.
    let srv = TestServer::start().await;
    for proto in [Proto::H2, Proto::H3] {
        let l = label(proto);
        let rel = format!("{l}/short.bin");
        let c = srv.client(proto).await;
        let req = http::Request::builder()
            .method("PUT")
            .uri(signed_v(&rel, 1000))
            .header("content-length", "1000")
            .body(())
            .unwrap();
        if let Ok(r) = c.send(req, Some(body_once(pattern(5, 0, 500)))).await {
            assert!(r.status.is_client_error(), "{l}: {}", r.status);
        }
        eventually(&format!("{l}: nothing stored"), || {
            srv.stored_files().is_empty()
        })
        .await;
    }
    srv.stop().await;
}

#[tokio::test]
async fn ranges_and_conditional_downloads() {
    let srv = TestServer::start().await;
    let data = pattern(6, 0, 10_000);
    {
        let mut c = srv.client(Proto::H1).await;
        assert_eq!(
            put(&mut c, &signed_v("r/data.bin", 10_000), &data, &[])
                .await
                .status,
            201
        );
        assert_eq!(
            put(&mut c, &signed_v("r/page.html", 4), b"<b>x", &[])
                .await
                .status,
            201
        );
    }
    for proto in Proto::ALL {
        let l = label(proto);
        let mut c = srv.client(proto).await;
        let full = get(&mut c, "/r/data.bin", &[]).await;
        assert_eq!(full.status, 200);
        assert_eq!(full.header("accept-ranges"), Some("bytes"));
        assert_eq!(full.header("x-content-type-options"), Some("nosniff"));
        assert!(full.header("content-security-policy").is_some());
        assert!(full.header("cache-control").unwrap().contains("immutable"));
        assert_eq!(
            full.header("alt-svc").is_some(),
            proto != Proto::H3,
            "{l} alt-svc"
        );
        let etag = full.header("etag").unwrap().to_string();
        let lm = full.header("last-modified").unwrap().to_string();

        let r = get(&mut c, "/r/data.bin", &[("range", "bytes=100-199")]).await;
        assert_eq!(r.status, 206, "{l}");
        assert_eq!(r.header("content-range"), Some("bytes 100-199/10000"));
        assert_eq!(r.body, data.slice(100..200));
        let r = get(&mut c, "/r/data.bin", &[("range", "bytes=-10")]).await;
        assert_eq!(r.body, data.slice(9990..));
        let r = get(&mut c, "/r/data.bin", &[("range", "bytes=9000-")]).await;
        assert_eq!(r.body, data.slice(9000..));

        // Two ranges -> multipart/byteranges with exactly those bytes.
        let r = get(&mut c, "/r/data.bin", &[("range", "bytes=0-9,5000-5009")]).await;
        assert_eq!(r.status, 206);
        let ct = r.header("content-type").unwrap().to_string();
        let boundary = ct
            .strip_prefix("multipart/byteranges; boundary=")
            .expect("multipart");
        let text = r.body.clone();
        assert_eq!(
            r.header("content-length")
                .unwrap()
                .parse::<usize>()
                .unwrap(),
            text.len()
        );
        let parts = split_multipart(&text, boundary);
        assert_eq!(parts.len(), 2, "{l}");
        assert_eq!(
            parts[0],
            (String::from("bytes 0-9/10000"), data.slice(0..10))
        );
        assert_eq!(
            parts[1],
            (
                String::from("bytes 5000-5009/10000"),
                data.slice(5000..5010)
            )
        );

        // Overlapping ranges are merged into one.
        let r = get(
            &mut c,
            "/r/data.bin",
            &[("range", "bytes=0-99,50-149,0-149")],
        )
        .await;
        assert_eq!(r.header("content-range"), Some("bytes 0-149/10000"));
        // Many ranges: the whole file once.
        let many: Vec<String> = (0..40)
            .map(|i| format!("{}-{}", i * 200, i * 200))
            .collect();
        let r = get(
            &mut c,
            "/r/data.bin",
            &[("range", &format!("bytes={}", many.join(",")))],
        )
        .await;
        assert_eq!((r.status.as_u16(), r.body.len()), (200, 10_000));

        let r = get(&mut c, "/r/data.bin", &[("range", "bytes=20000-")]).await;
        assert_eq!(r.status, 416);
        assert_eq!(r.header("content-range"), Some("bytes */10000"));

        // If-Range: matching validator -> 206, stale -> 200 full.
        let r = get(
            &mut c,
            "/r/data.bin",
            &[("range", "bytes=0-0"), ("if-range", &etag)],
        )
        .await;
        assert_eq!(r.status, 206);
        let r = get(
            &mut c,
            "/r/data.bin",
            &[("range", "bytes=0-0"), ("if-range", "\"old\"")],
        )
        .await;
        assert_eq!((r.status.as_u16(), r.body.len()), (200, 10_000));

        let r = get(&mut c, "/r/data.bin", &[("if-none-match", &etag)]).await;
        assert_eq!(r.status, 304, "{l}");
        assert!(r.body.is_empty());
        let r = get(&mut c, "/r/data.bin", &[("if-modified-since", &lm)]).await;
        assert_eq!(r.status, 304);
        let r = get(&mut c, "/r/data.bin", &[("if-match", "\"other\"")]).await;
        assert_eq!(r.status, 412);

        let h = request(&mut c, "HEAD", "/r/data.bin", &[], None).await;
        assert_eq!(h.status, 200);
        assert_eq!(h.header("content-length"), Some("10000"), "{l} HEAD length");
        assert!(h.body.is_empty());

        let html = get(&mut c, "/r/page.html", &[]).await;
        assert_eq!(html.header("content-disposition"), Some("attachment"));
        assert_eq!(html.header("content-type"), Some("text/html"));
    }
    srv.stop().await;
}

fn split_multipart(body: &[u8], boundary: &str) -> Vec<(String, Bytes)> {
    let delim = format!("\r\n--{boundary}");
    let text = body.to_vec();
    let mut out = Vec::new();
    let mut pos = 0;
    let find = |from: usize, pat: &[u8]| {
        text[from..]
            .windows(pat.len())
            .position(|w| w == pat)
            .map(|p| p + from)
    };
    while let Some(start) = find(pos, delim.as_bytes()) {
        let after = start + delim.len();
        if text[after..].starts_with(b"--") {
            break;
        }
        let head_end = find(after, b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&text[after..head_end]).to_string();
        let range = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .unwrap()
            .to_string();
        let data_start = head_end + 4;
        let next = find(data_start, delim.as_bytes()).unwrap();
        out.push((range, Bytes::copy_from_slice(&text[data_start..next])));
        pos = next;
    }
    out
}

#[tokio::test]
async fn health_preflight_and_signed_downloads() {
    let srv = TestServer::start_with(|c| c.downloads.require_signature = true).await;
    for proto in Proto::ALL {
        let l = label(proto);
        let mut c = srv.client(proto).await;
        let h = get(&mut c, "/health", &[]).await;
        assert_eq!(h.status, 200, "{l}");
        let o = request(
            &mut c,
            "OPTIONS",
            "/any/file.jpg",
            &[
                ("origin", "https://chat.example"),
                ("access-control-request-method", "PUT"),
            ],
            None,
        )
        .await;
        assert_eq!(o.status, 204, "{l}");
        assert_eq!(o.header("access-control-allow-origin"), Some("*"));
        assert!(o
            .header("access-control-allow-methods")
            .unwrap()
            .contains("PUT"));
        assert!(o
            .header("access-control-allow-headers")
            .unwrap()
            .contains("Content-Type"));

        let rel = format!("{l}/s.txt");
        assert_eq!(
            put(&mut c, &signed_v(&rel, 2), b"hi", &[]).await.status,
            201
        );
        assert_eq!(get(&mut c, &format!("/{rel}"), &[]).await.status, 403);
        let g = signed("", Scheme::V3, "GET", &rel, 0, "", now_unix() + 60);
        let r = get(&mut c, &g, &[]).await;
        assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"hi"[..]), "{l}");
        let p = signed("", Scheme::V3, "PUT", &rel, 0, "", now_unix() + 60);
        assert_eq!(
            get(&mut c, &p, &[]).await.status,
            403,
            "{l} PUT signature used for GET"
        );
    }
    srv.stop().await;
}

#[tokio::test]
async fn previous_secrets_still_verify() {
    let srv = TestServer::start_with(|c| {
        c.security.secret = Some("brand-new".into());
        c.security.previous_secrets = vec![SECRET.into()];
    })
    .await;
    let mut c = srv.client(Proto::H2).await;
    assert_eq!(
        put(&mut c, &signed_v("rot/a.txt", 1), b"x", &[])
            .await
            .status,
        201
    );
    srv.stop().await;
}

#[tokio::test]
async fn clients_connecting_by_ip_address_without_sni_are_served() {
    // rustls sends no SNI for an IP address; QUIC clients that connect by IP do the same.
    let srv = TestServer::start().await;
    for proto in Proto::ALL {
        let mut c = xferd::client::Client::connect(proto, srv.addr(), "127.0.0.1", &srv.roots)
            .await
            .unwrap_or_else(|e| panic!("{}: {e:#}", label(proto)));
        assert_eq!(
            get(&mut c, "/health", &[]).await.status,
            200,
            "{}",
            label(proto)
        );
    }
    srv.stop().await;
}

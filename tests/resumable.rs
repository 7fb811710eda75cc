//! Resumable uploads end to end over HTTP/1.1, HTTP/2 and HTTP/3: tus 1.0 (creation, with
//! upload, checksums, termination, concatenation), the IETF draft (creation, offset
//! retrieval, append, mismatch), HFS's chunked API and form upload, and refusals.

mod common;

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use sha1::Digest as _;
use xferd::client::Proto;
use xferd::core::auth::Scheme;

/// A tus creation `POST` (no body) to a signed URL.
async fn tus_create(c: &mut xferd::client::Client, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut h = vec![TUS];
    h.extend_from_slice(headers);
    request(c, "POST", url, &h, None).await
}

#[tokio::test]
async fn tus_create_patch_head_checksum_terminate() {
    let srv = TestServer::start().await;
    for proto in Proto::ALL {
        let l = label(proto);
        let mut c = srv.client(proto).await;
        let o = request(&mut c, "OPTIONS", "/files/", &[], None).await;
        assert_eq!(o.status, 204, "{l}");
        assert_eq!(o.header("tus-version"), Some("1.0.0"));
        assert!(o.header("tus-extension").unwrap().contains("concatenation"));
        assert!(o.header("tus-checksum-algorithm").unwrap().contains("sha1"));

        let d = pattern(10, 0, 300_000);
        let rel = format!("{l}/tus/file.bin");
        let meta = format!(
            "filename {}",
            base64::engine::general_purpose::STANDARD.encode("file.bin")
        );
        let r = tus_create(
            &mut c,
            &v3("POST", &rel),
            &[("upload-length", "300000"), ("upload-metadata", &meta)],
        )
        .await;
        assert_eq!(r.status, 201, "{l} create: {:?}", r.body);
        let loc = r.header("location").unwrap().to_string();
        assert!(loc.starts_with("/files/") && loc.len() == 39, "{loc}");
        assert_eq!(r.header("tus-resumable"), Some("1.0.0"));

        let ct = ("content-type", "application/offset+octet-stream");
        let r = request(
            &mut c,
            "PATCH",
            &loc,
            &[
                TUS,
                ct,
                ("upload-offset", "0"),
                ("content-length", "100000"),
            ],
            Some(body_once(d.slice(..100_000))),
        )
        .await;
        assert_eq!(r.status, 204, "{l} patch 1");
        assert_eq!(r.header("upload-offset"), Some("100000"));
        let h = request(&mut c, "HEAD", &loc, &[TUS], None).await;
        assert_eq!(
            (h.status.as_u16(), h.header("upload-offset")),
            (200, Some("100000")),
            "{l}"
        );
        assert_eq!(h.header("upload-length"), Some("300000"));
        assert_eq!(h.header("upload-metadata"), Some(meta.as_str()));
        assert_eq!(h.header("cache-control"), Some("no-store"));

        // Wrong offset -> 409; wrong content type -> 415; wrong version -> 412.
        let r = request(
            &mut c,
            "PATCH",
            &loc,
            &[TUS, ct, ("upload-offset", "5"), ("content-length", "1")],
            Some(body_once(Bytes::from_static(b"x"))),
        )
        .await;
        assert_eq!(r.status, 409, "{l}");
        let r = request(
            &mut c,
            "PATCH",
            &loc,
            &[
                TUS,
                ("content-type", "text/plain"),
                ("upload-offset", "100000"),
                ("content-length", "1"),
            ],
            Some(body_once(Bytes::from_static(b"x"))),
        )
        .await;
        assert_eq!(r.status, 415, "{l}");
        let r = request(&mut c, "HEAD", &loc, &[("tus-resumable", "0.2.2")], None).await;
        assert_eq!(
            (r.status.as_u16(), r.header("tus-version")),
            (412, Some("1.0.0")),
            "{l}"
        );

        // Checksums: a bad one is 460 and the chunk is discarded; an unknown algorithm is 400.
        let chunk = d.slice(100_000..200_000);
        let good = format!(
            "sha1 {}",
            base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(&chunk))
        );
        let bad = format!(
            "sha1 {}",
            base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(b"other"))
        );
        let with_sum = |sum: &str| -> Vec<(String, String)> {
            [
                ("upload-offset", "100000"),
                ("content-length", "100000"),
                ("upload-checksum", sum),
            ]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
        };
        let bad_h = with_sum(&bad);
        let mut hv: Vec<(&str, &str)> = vec![TUS, ct];
        hv.extend(bad_h.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        let r = request(&mut c, "PATCH", &loc, &hv, Some(body_once(chunk.clone()))).await;
        assert_eq!(r.status.as_u16(), 460, "{l}");
        let r = request(
            &mut c,
            "PATCH",
            &loc,
            &[
                TUS,
                ct,
                ("upload-offset", "100000"),
                ("content-length", "1"),
                ("upload-checksum", "crc32 AAAA"),
            ],
            Some(body_once(Bytes::from_static(b"x"))),
        )
        .await;
        assert_eq!(r.status, 400, "{l}");
        let good_h = with_sum(&good);
        let mut hv: Vec<(&str, &str)> = vec![TUS, ct];
        hv.extend(good_h.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        let r = request(&mut c, "PATCH", &loc, &hv, Some(body_once(chunk))).await;
        assert_eq!(
            (r.status.as_u16(), r.header("upload-offset")),
            (204, Some("200000")),
            "{l}"
        );
        assert_eq!(
            get(&mut c, &format!("/{rel}"), &[]).await.status,
            404,
            "{l}: not visible before completion"
        );
        let r = request(
            &mut c,
            "PATCH",
            &loc,
            &[
                TUS,
                ct,
                ("upload-offset", "200000"),
                ("content-length", "100000"),
            ],
            Some(body_once(d.slice(200_000..))),
        )
        .await;
        assert_eq!(r.status, 204);
        let g = get(&mut c, &format!("/{rel}"), &[]).await;
        assert_eq!((g.status.as_u16(), g.body.len()), (200, 300_000), "{l}");
        assert_eq!(g.body, d);

        // Termination.
        let r = tus_create(
            &mut c,
            &v3("POST", &format!("{l}/tus/gone.bin")),
            &[("upload-length", "10")],
        )
        .await;
        let loc = r.header("location").unwrap().to_string();
        assert_eq!(
            request(&mut c, "DELETE", &loc, &[TUS], None).await.status,
            204
        );
        assert_eq!(
            request(&mut c, "HEAD", &loc, &[TUS], None).await.status,
            404
        );
    }
    srv.stop().await;
}

#[tokio::test]
async fn tus_with_xmpp_urls_creation_with_upload_deferred_length_and_concatenation() {
    let srv = TestServer::start().await;
    for proto in Proto::ALL {
        let l = label(proto);
        let mut c = srv.client(proto).await;
        let ct = ("content-type", "application/offset+octet-stream");
        // An XMPP (scheme v) URL: Upload-Length must equal the signed size.
        let rel = format!("{l}/x/photo.jpg");
        let r = tus_create(&mut c, &signed_v(&rel, 5000), &[("upload-length", "4999")]).await;
        assert_eq!(r.status, 403, "{l} size not signed");
        // creation-with-upload: the whole file in the creation request.
        let d = pattern(11, 0, 5000);
        let r = request(
            &mut c,
            "POST",
            &signed_v(&rel, 5000),
            &[
                TUS,
                ("upload-length", "5000"),
                ct,
                ("content-length", "5000"),
            ],
            Some(body_once(d.clone())),
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), r.header("upload-offset")),
            (201, Some("5000")),
            "{l}"
        );
        assert_eq!(get(&mut c, &format!("/{rel}"), &[]).await.body, d);
        // A second upload to the same target is refused up front.
        let r = tus_create(&mut c, &signed_v(&rel, 5000), &[("upload-length", "5000")]).await;
        assert_eq!(r.status, 409, "{l}");

        // creation-defer-length.
        let rel = format!("{l}/x/deferred.bin");
        let r = tus_create(&mut c, &v3("POST", &rel), &[("upload-defer-length", "1")]).await;
        assert_eq!(r.status, 201);
        let loc = r.header("location").unwrap().to_string();
        let r = request(
            &mut c,
            "PATCH",
            &loc,
            &[TUS, ct, ("upload-offset", "0"), ("content-length", "3")],
            Some(body_once(Bytes::from_static(b"abc"))),
        )
        .await;
        assert_eq!(r.status, 204);
        assert_eq!(
            request(&mut c, "HEAD", &loc, &[TUS], None)
                .await
                .header("upload-defer-length"),
            Some("1")
        );
        let r = request(
            &mut c,
            "PATCH",
            &loc,
            &[
                TUS,
                ct,
                ("upload-offset", "3"),
                ("upload-length", "6"),
                ("content-length", "3"),
            ],
            Some(body_once(Bytes::from_static(b"def"))),
        )
        .await;
        assert_eq!(r.status, 204);
        assert_eq!(
            &get(&mut c, &format!("/{rel}"), &[]).await.body[..],
            b"abcdef"
        );

        // Concatenation: two partials uploaded, then the final.
        let rel = format!("{l}/x/joined.bin");
        let d = pattern(12, 0, 20_000);
        let mut locs = Vec::new();
        for (i, part) in [d.slice(..12_000), d.slice(12_000..)]
            .into_iter()
            .enumerate()
        {
            let len = part.len().to_string();
            let r = tus_create(
                &mut c,
                &v3("POST", &rel),
                &[("upload-concat", "partial"), ("upload-length", &len)],
            )
            .await;
            assert_eq!(r.status, 201, "{l} partial {i}");
            let loc = r.header("location").unwrap().to_string();
            let r = request(
                &mut c,
                "PATCH",
                &loc,
                &[TUS, ct, ("upload-offset", "0"), ("content-length", &len)],
                Some(body_once(part)),
            )
            .await;
            assert_eq!(r.status, 204);
            locs.push(loc);
        }
        assert_eq!(
            get(&mut c, &format!("/{rel}"), &[]).await.status,
            404,
            "partials never land alone"
        );
        let fin = format!("final;{} https://localhost{}", locs[0], locs[1]);
        let r = tus_create(&mut c, &v3("POST", &rel), &[("upload-concat", &fin)]).await;
        assert_eq!(r.status, 201, "{l} final: {:?}", r.body);
        assert_eq!(get(&mut c, &format!("/{rel}"), &[]).await.body, d, "{l}");
        // Partials need a v3 URL (a v MAC binds one size).
        let r = tus_create(
            &mut c,
            &signed_v(&format!("{l}/x/p.bin"), 10),
            &[("upload-concat", "partial"), ("upload-length", "10")],
        )
        .await;
        assert_eq!(r.status, 400, "{l}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn ietf_draft_creation_offset_retrieval_and_append() {
    let srv = TestServer::start().await;
    for proto in Proto::ALL {
        for version in ["6", "8", "10"] {
            let l = label(proto);
            let mut c = srv.client(proto).await;
            let rel = format!("{l}/ietf/v{version}.bin");
            let d = pattern(13, 0, 200_000);
            let iv = ("upload-draft-interop-version", version);
            let r = request(
                &mut c,
                "PUT",
                &signed_v(&rel, 200_000),
                &[
                    iv,
                    ("upload-complete", "?0"),
                    ("upload-length", "200000"),
                    ("content-length", "80000"),
                ],
                Some(body_once(d.slice(..80_000))),
            )
            .await;
            assert_eq!(r.status, 201, "{l} v{version}: {:?}", r.body);
            assert_eq!(r.header("upload-complete"), Some("?0"));
            if proto == Proto::H3 {
                // HTTP/3 sends 104 Upload Resumption Supported before reading the body.
                let (st, h) = r.interim.first().expect("a 104 over HTTP/3");
                assert_eq!(st.as_u16(), 104);
                assert_eq!(
                    h.get("location").map(|v| v.to_str().unwrap()),
                    r.header("location")
                );
                assert_eq!(h.get("upload-draft-interop-version").unwrap(), version);
            }
            assert_eq!(r.header("upload-offset"), Some("80000"));
            let loc = r.header("location").unwrap().to_string();
            assert!(loc.starts_with("/resumable/"));
            let h = request(&mut c, "HEAD", &loc, &[iv], None).await;
            assert_eq!(
                (
                    h.status.as_u16(),
                    h.header("upload-offset"),
                    h.header("upload-complete")
                ),
                (204, Some("80000"), Some("?0")),
                "{l} v{version}"
            );
            assert_eq!(h.header("upload-length"), Some("200000"));
            assert!(h.header("upload-limit").unwrap().contains("max-size="));
            let pu = ("content-type", "application/partial-upload");
            let r = request(
                &mut c,
                "PATCH",
                &loc,
                &[
                    iv,
                    pu,
                    ("upload-offset", "1000"),
                    ("upload-complete", "?1"),
                    ("content-length", "1"),
                ],
                Some(body_once(Bytes::from_static(b"x"))),
            )
            .await;
            assert_eq!(r.status, 409, "{l} v{version}");
            assert_eq!(r.header("content-type"), Some("application/problem+json"));
            assert_eq!(r.json()["expected-offset"], 80000);
            assert_eq!(r.json()["provided-offset"], 1000);
            assert!(r.json()["type"]
                .as_str()
                .unwrap()
                .ends_with("#mismatching-upload-offset"));
            let r = request(
                &mut c,
                "PATCH",
                &loc,
                &[
                    iv,
                    pu,
                    ("upload-offset", "80000"),
                    ("upload-complete", "?0"),
                    ("content-length", "20000"),
                ],
                Some(body_once(d.slice(80_000..100_000))),
            )
            .await;
            assert!(r.status.is_success(), "{l} v{version}: {}", r.status);
            assert_eq!(r.header("upload-complete"), Some("?0"));
            let r = request(
                &mut c,
                "PATCH",
                &loc,
                &[
                    iv,
                    pu,
                    ("upload-offset", "100000"),
                    ("upload-complete", "?1"),
                    ("content-length", "100000"),
                ],
                Some(body_once(d.slice(100_000..))),
            )
            .await;
            assert_eq!(
                (r.status.as_u16(), r.header("upload-complete")),
                (201, Some("?1")),
                "{l} v{version}"
            );
            assert_eq!(
                get(&mut c, &format!("/{rel}"), &[]).await.body,
                d,
                "{l} v{version}"
            );
            let h = request(&mut c, "HEAD", &loc, &[iv], None).await;
            assert_eq!(h.header("upload-complete"), Some("?1"));
        }
    }
    srv.stop().await;
}

#[tokio::test]
async fn ios_style_put_with_upload_complete_and_cancellation() {
    let srv = TestServer::start().await;
    for proto in Proto::ALL {
        let l = label(proto);
        let mut c = srv.client(proto).await;
        // URLSession adds Upload-Complete: ?1 to an ordinary signed PUT.
        let rel = format!("{l}/ios/IMG_0001.HEIC");
        let d = pattern(14, 0, 50_000);
        let r = request(
            &mut c,
            "PUT",
            &signed_v(&rel, 50_000),
            &[
                ("upload-complete", "?1"),
                ("upload-draft-interop-version", "6"),
                ("content-length", "50000"),
            ],
            Some(body_once(d.clone())),
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), r.header("upload-complete")),
            (201, Some("?1")),
            "{l}: {:?}",
            r.body
        );
        assert_eq!(
            get(&mut c, &format!("/{}", encode_path(&rel)), &[])
                .await
                .body,
            d
        );
        // Repr-Digest mismatch: refused, nothing stored.
        let rel = format!("{l}/ios/bad-digest.bin");
        let r = request(
            &mut c,
            "PUT",
            &signed_v(&rel, 3),
            &[
                ("upload-complete", "?1"),
                ("content-length", "3"),
                (
                    "repr-digest",
                    "sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:",
                ),
            ],
            Some(body_once(Bytes::from_static(b"abc"))),
        )
        .await;
        assert_eq!(r.status, 400, "{l}");
        assert_eq!(get(&mut c, &format!("/{rel}"), &[]).await.status, 404);
        // Cancellation.
        let rel = format!("{l}/ios/cancel.bin");
        let r = request(
            &mut c,
            "POST",
            &v3("POST", &rel),
            &[("upload-complete", "?0"), ("content-length", "0")],
            Some(body_once(Bytes::new())),
        )
        .await;
        assert_eq!(r.status, 201, "{l}: {:?}", r.body);
        let loc = r.header("location").unwrap().to_string();
        assert_eq!(request(&mut c, "DELETE", &loc, &[], None).await.status, 204);
        assert_eq!(request(&mut c, "HEAD", &loc, &[], None).await.status, 404);
        let o = request(&mut c, "OPTIONS", "/resumable/", &[], None).await;
        assert!(o.header("upload-limit").unwrap().contains("min-size=0"));
    }
    srv.stop().await;
}

#[tokio::test]
async fn hfs_chunked_in_any_order_status_and_form_upload() {
    let srv = TestServer::start_with(|c| {
        c.resumable.chunk_size = 64 * 1024;
        c.performance.intelligent_chunking = false;
        c.performance.min_chunk_size = 64 * 1024;
    })
    .await;
    for proto in Proto::ALL {
        let l = label(proto);
        let mut c = srv.client(proto).await;
        let rel = format!("{l}/hfs/big file.bin");
        let d = pattern(15, 0, 300_000);
        let url = format!(
            "/chunked-upload?{}",
            v3("POST", &rel).split_once('?').unwrap().1
        );
        let r = request(
            &mut c,
            "POST",
            &url,
            &[("x-filename", &rel), ("x-total-size", "300000")],
            None,
        )
        .await;
        assert_eq!(r.status, 201, "{l}: {:?}", r.body);
        let j = r.json();
        let id = j["session_id"].as_str().unwrap().to_string();
        assert_eq!(
            (j["chunk_size"].as_u64(), j["total_chunks"].as_u64()),
            (Some(65536), Some(5))
        );
        for n in [4u64, 1, 3, 0, 1, 2] {
            let start = (n * 65536) as usize;
            let end = (start + 65536).min(d.len());
            let len = (end - start).to_string();
            let num = n.to_string();
            let r = request(
                &mut c,
                "PUT",
                "/chunked-upload",
                &[
                    ("x-upload-session-id", &id),
                    ("x-chunk-number", &num),
                    ("content-length", &len),
                ],
                Some(body_once(d.slice(start..end))),
            )
            .await;
            assert_eq!(r.status, 200, "{l} chunk {n}: {:?}", r.body);
            assert_eq!(r.json()["success"], true);
        }
        let s = get(&mut c, &format!("/upload-status?session_id={id}"), &[]).await;
        assert_eq!(
            (
                s.json()["completed"].as_bool(),
                s.json()["uploaded_bytes"].as_u64()
            ),
            (Some(true), Some(300_000)),
            "{l}"
        );
        assert_eq!(
            get(&mut c, &format!("/{}", encode_path(&rel)), &[])
                .await
                .body,
            d,
            "{l}"
        );
        let r = request(
            &mut c,
            "PUT",
            "/chunked-upload",
            &[
                ("x-upload-session-id", "00000000000000000000000000000000"),
                ("x-chunk-number", "0"),
            ],
            Some(body_once(Bytes::from_static(b"x"))),
        )
        .await;
        assert_eq!(r.status, 404);
        // Chunked creation needs a signature over the target.
        let r = request(
            &mut c,
            "POST",
            "/chunked-upload",
            &[("x-filename", "a.bin"), ("x-total-size", "5")],
            None,
        )
        .await;
        assert_eq!(r.status, 403);

        // POST /upload multipart, streamed; v3 POST signature over /upload.
        let boundary = "XferdBoundary7";
        let file = pattern(16, 0, 70_000);
        let mut form = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{l}-form.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").into_bytes();
        form.extend_from_slice(&file);
        form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let url = signed("", Scheme::V3, "POST", "upload", 0, "", now_unix() + 60);
        let ct = format!("multipart/form-data; boundary={boundary}");
        let r = put_like(&mut c, "POST", &url, &form, &ct).await;
        assert_eq!(r.status, 201, "{l}: {:?}", r.body);
        assert_eq!(
            get(&mut c, &format!("/uploads/{l}-form.bin"), &[])
                .await
                .body,
            file
        );
        let r = put_like(&mut c, "POST", "/upload", &form, &ct).await;
        assert_eq!(r.status, 403, "{l}: unsigned form upload");
    }
    srv.stop().await;
}

async fn put_like(
    c: &mut xferd::client::Client,
    method: &str,
    url: &str,
    body: &[u8],
    ct: &str,
) -> Reply {
    let len = body.len().to_string();
    request(
        c,
        method,
        url,
        &[("content-type", ct), ("content-length", &len)],
        Some(body_once(Bytes::copy_from_slice(body))),
    )
    .await
}

#[tokio::test]
async fn creation_limits_and_auth() {
    let srv = TestServer::start_with(|c| {
        c.resumable.max_sessions_per_client = 2;
        c.resumable.max_session_length = 1000;
    })
    .await;
    let mut c = srv.client(Proto::H2).await;
    let r = tus_create(&mut c, "/lim/unsigned.bin", &[("upload-length", "10")]).await;
    assert_eq!(r.status, 403);
    let r = tus_create(
        &mut c,
        &v3("POST", "lim/huge.bin"),
        &[("upload-length", "1001")],
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str()),
        (413, Some("too_large"))
    );
    for i in 0..2 {
        let r = tus_create(
            &mut c,
            &v3("POST", &format!("lim/{i}.bin")),
            &[("upload-length", "10")],
        )
        .await;
        assert_eq!(r.status, 201);
    }
    let r = tus_create(&mut c, &v3("POST", "lim/3.bin"), &[("upload-length", "10")]).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str()),
        (429, Some("too_many_uploads_for_client"))
    );
    assert!(r.header("retry-after").is_some());
    srv.stop().await;
}

#[tokio::test]
async fn interrupted_appends_keep_their_bytes_on_every_transport() {
    let srv = TestServer::start().await;
    for proto in Proto::ALL {
        let l = label(proto);
        let c = srv.client(proto).await;
        let rel = format!("{l}/cut/x.bin");
        let r = request_on(
            &c,
            "POST",
            &v3("POST", &rel),
            &[TUS, ("upload-length", "3000000")],
            None,
        )
        .await;
        let loc = r.header("location").unwrap().to_string();
        // 1 MB goes out, then the client's body fails: the request is reset (h2, h3) or the
        // connection dropped (h1) while the server is still waiting for 2 MB more.
        let first = pattern(17, 0, 1_000_000);
        let body = futures_util::stream::once(async move { Ok(first) }).chain(
            futures_util::stream::once(async {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                Err(xferd::core::body::BodyError("network gone".into()))
            }),
        );
        let req = http::Request::builder()
            .method("PATCH")
            .uri(&loc)
            .header("tus-resumable", "1.0.0")
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", "0")
            .header("content-length", "3000000")
            .body(())
            .unwrap();
        let _ = c.send(req, Some(Box::pin(body))).await;
        drop(c);
        let c = srv.client(proto).await;
        let mut offset = 0;
        for _ in 0..50 {
            let h = request_on(&c, "HEAD", &loc, &[TUS], None).await;
            offset = h.header("upload-offset").unwrap().parse::<u64>().unwrap();
            if offset > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(
            offset > 0 && offset <= 1_000_000,
            "{l}: offset {offset} after an interrupted append"
        );
        let d = pattern(17, 0, 1_000_000);
        let rest = pattern(18, 0, 3_000_000 - offset as usize);
        let off = offset.to_string();
        let len = rest.len().to_string();
        let r = request_on(
            &c,
            "PATCH",
            &loc,
            &[
                TUS,
                ("content-type", "application/offset+octet-stream"),
                ("upload-offset", &off),
                ("content-length", &len),
            ],
            Some(body_once(rest.clone())),
        )
        .await;
        assert_eq!(r.status, 204, "{l}");
        let g = request_on(&c, "GET", &format!("/{rel}"), &[], None).await;
        assert_eq!(&g.body[..offset as usize], &d[..offset as usize], "{l}");
        assert_eq!(&g.body[offset as usize..], &rest[..], "{l}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn paths_under_the_upload_collections_are_ordinary_paths() {
    let srv = TestServer::start().await;
    for proto in Proto::ALL {
        let l = label(proto);
        let mut c = srv.client(proto).await;
        let rel = format!("files/{l}/photo.jpg");
        assert_eq!(
            put(&mut c, &signed_v(&rel, 3), b"abc", &[]).await.status,
            201,
            "{l}"
        );
        assert_eq!(&get(&mut c, &format!("/{rel}"), &[]).await.body[..], b"abc");
        let rel = format!("resumable/{l}/n.bin");
        let r = tus_create(&mut c, &v3("POST", &rel), &[("upload-length", "0")]).await;
        assert_eq!(r.status, 201, "{l}: {:?}", r.body);
        assert_eq!(
            get(&mut c, &format!("/{rel}"), &[]).await.status,
            200,
            "{l}: empty upload completes at once"
        );
    }
    srv.stop().await;
}

#[tokio::test]
async fn tus_checksum_trailer_over_every_transport() {
    use sha1::Digest;
    let srv = TestServer::start().await;
    for proto in Proto::ALL {
        let l = label(proto);
        let c = srv.client(proto).await;
        let rel = format!("{l}/trailer/file.bin");
        let mut cc = srv.client(proto).await;
        let r = tus_create(&mut cc, &v3("POST", &rel), &[("upload-length", "200000")]).await;
        assert_eq!(r.status, 201, "{l}");
        let loc = r.header("location").unwrap().to_string();
        let part = |seed: u64, offset: u64| pattern(seed, offset, 100_000);
        let patch = |offset: u64, data: bytes::Bytes, sum: String| {
            let req = http::Request::builder()
                .method("PATCH")
                .uri(&loc)
                .header("tus-resumable", "1.0.0")
                .header("upload-offset", offset)
                .header("content-type", "application/offset+octet-stream")
                .header("trailer", "Upload-Checksum")
                .body(())
                .unwrap();
            let mut t = http::HeaderMap::new();
            t.insert("upload-checksum", sum.parse().unwrap());
            c.send_with_trailers(req, Some(body_once(data)), Some(t))
        };
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        let d0 = part(21, 0);
        // A wrong checksum in the trailer: 460, nothing counted.
        let wrong = format!("sha1 {}", b64(&sha1::Sha1::digest(b"other")));
        let r = patch(0, d0.clone(), wrong).await.unwrap();
        assert_eq!(r.status.as_u16(), 460, "{l}");
        let h = request(&mut cc, "HEAD", &loc, &[TUS], None).await;
        assert_eq!(h.header("upload-offset"), Some("0"), "{l}");
        // Right checksums (sha1, then sha256): both chunks count.
        let ok = format!("sha1 {}", b64(&sha1::Sha1::digest(&d0)));
        let r = patch(0, d0.clone(), ok).await.unwrap();
        assert_eq!(r.status, 204, "{l}");
        let d1 = part(22, 100_000);
        let ok = format!("sha256 {}", b64(&sha2::Sha256::digest(&d1)));
        let r = patch(100_000, d1.clone(), ok).await.unwrap();
        assert_eq!(r.status, 204, "{l}");
        assert_eq!(r.headers.get("upload-offset").unwrap(), "200000");
        let got = get(&mut cc, &format!("/{}", encode_path(&rel)), &[]).await;
        assert_eq!(got.body, [d0, d1].concat(), "{l}");
    }
    // The extension is advertised.
    let mut c = srv.client(Proto::H1).await;
    let o = request(&mut c, "OPTIONS", "/files/", &[], None).await;
    assert!(o
        .header("tus-extension")
        .unwrap()
        .contains("checksum-trailer"));
    srv.stop().await;
}

//! Deduplication end to end (`[deduplication]`, HFS `deduplication_enabled`): uploads of the
//! same content over h1 and h3 (single-shot `PUT` and tus) share one inode, both download
//! intact, and the saved bytes are a metric; the same basename with other content is not
//! linked (HFS's rule is the opposite); deleting one name keeps the other, deleting the last
//! frees the content-addressed copy; a restart keeps sharing and sweeps orphaned copies; the
//! content-addressed directory cannot be read or written through the HTTP API.

mod common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use xferd::admin::cli::{call, CliError};
use xferd::client::Proto;

const TOKEN: &str = "admin-test-token-0123456789";

fn tweak(c: &mut xferd::config::Config) {
    c.deduplication.enabled = true;
    c.admin.listen = "127.0.0.1:0".parse().unwrap();
    c.admin.token = Some(TOKEN.into());
}

/// A server over an existing directory (a restart keeps the storage and state).
async fn start_in(dir: tempfile::TempDir) -> TestServer {
    let mut config = xferd::config::Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.storage_path = dir.path().join("data");
    config.server.state_path = dir.path().join("state");
    config.server.shutdown_grace = Duration::from_secs(5);
    config.security.secret = Some(SECRET.to_string());
    tweak(&mut config);
    let server = xferd::server::start(config).await.expect("server starts");
    let roots = xferd::tls::read_certs(&server.cert_path).expect("cert");
    TestServer {
        server: Some(server),
        dir,
        roots,
        prefix: String::new(),
    }
}

fn admin_url(srv: &TestServer) -> String {
    format!(
        "http://{}",
        srv.server.as_ref().unwrap().admin_addr.unwrap()
    )
}

async fn admin_delete(srv: &TestServer, rel: &str) -> u16 {
    match call(
        &admin_url(srv),
        TOKEN,
        http::Method::DELETE,
        &format!("/files/{rel}"),
    )
    .await
    {
        Ok(_) => 200,
        Err(CliError::Refused { status, .. }) => status,
        Err(e) => panic!("{rel}: {e}"),
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

async fn metrics(srv: &TestServer) -> String {
    let mut c = srv.client(Proto::H1).await;
    let m = get(&mut c, "/metrics", &[]).await;
    assert_eq!(m.status, 200);
    String::from_utf8_lossy(&m.body).to_string()
}

fn ino(p: &Path) -> (u64, u64) {
    let m = std::fs::metadata(p).unwrap();
    (m.ino(), m.nlink())
}

/// The files of the content-addressed store.
fn cas_entries(storage: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for b in std::fs::read_dir(storage.join(".xferd-cas"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for e in std::fs::read_dir(b.path()).into_iter().flatten().flatten() {
            out.push(e.path());
        }
    }
    out
}

async fn tus_upload(c: &mut xferd::client::Client, rel: &str, data: &[u8]) {
    let len = data.len().to_string();
    let r = request(
        c,
        "POST",
        &signed_v(rel, data.len() as u64),
        &[TUS, ("upload-length", &len)],
        None,
    )
    .await;
    assert_eq!(r.status, 201, "tus create {rel}");
    let loc = r.header("location").unwrap().to_string();
    let r = request(
        c,
        "PATCH",
        &loc,
        &[
            TUS,
            ("upload-offset", "0"),
            ("content-type", "application/offset+octet-stream"),
            ("content-length", &len),
        ],
        Some(body_once(bytes::Bytes::copy_from_slice(data))),
    )
    .await;
    assert_eq!(r.status, 204, "tus patch {rel}: {:?}", r.body);
}

#[tokio::test]
async fn identical_uploads_share_one_copy_over_h1_and_h3() {
    let srv = TestServer::start_with(tweak).await;
    let storage = srv.storage();
    let data = pattern(7, 0, 200_000);
    let n = data.len() as u64;
    let mut h1 = srv.client(Proto::H1).await;
    let mut h3 = srv.client(Proto::H3).await;
    assert_eq!(
        put(&mut h1, &signed_v("a/first.bin", n), &data, &[])
            .await
            .status,
        201
    );
    assert_eq!(
        put(&mut h3, &signed_v("b/second.bin", n), &data, &[])
            .await
            .status,
        201
    );
    // A resumable (tus) upload over h3 of the same content shares it too.
    tus_upload(&mut h3, "c/third.bin", &data).await;
    // The same basename with other content: a copy of its own.
    let other = pattern(8, 0, 200_000);
    assert_eq!(
        put(&mut h1, &signed_v("d/first.bin", n), &other, &[])
            .await
            .status,
        201
    );

    let (i1, links) = ino(&storage.join("a/first.bin"));
    assert_eq!(
        ino(&storage.join("b/second.bin")).0,
        i1,
        "h1 and h3 uploads share the inode"
    );
    assert_eq!(
        ino(&storage.join("c/third.bin")).0,
        i1,
        "the tus upload shares it"
    );
    assert_eq!(links, 4, "three names and the content-addressed link");
    assert_ne!(
        ino(&storage.join("d/first.bin")).0,
        i1,
        "same basename, other bytes"
    );
    // No staged file is left behind.
    assert!(
        srv.stored_files().iter().all(|f| !f.contains(".xferd-tmp")),
        "{:?}",
        srv.stored_files()
    );
    for (proto, rel) in [
        (Proto::H1, "b/second.bin"),
        (Proto::H3, "a/first.bin"),
        (Proto::H3, "c/third.bin"),
    ] {
        let c = if proto == Proto::H1 { &mut h1 } else { &mut h3 };
        let r = get(c, &format!("/{rel}"), &[]).await;
        assert_eq!(r.status, 200, "{rel}");
        assert_eq!(r.body, data, "{rel}");
    }
    let r = get(&mut h3, "/d/first.bin", &[]).await;
    assert_eq!(r.body, other);
    let text = metrics(&srv).await;
    assert_eq!(
        metric(&text, "xferd_dedup_saved_bytes_total"),
        2 * n,
        "{text}"
    );
    assert_eq!(metric(&text, "xferd_dedup_linked_total"), 2, "{text}");

    // Deleting names one by one: the others stay readable; the last frees the copy.
    assert_eq!(cas_entries(&storage).len(), 2);
    for (i, rel) in ["a/first.bin", "c/third.bin"].iter().enumerate() {
        assert_eq!(admin_delete(&srv, rel).await, 200, "{rel}");
        let r = get(&mut h1, "/b/second.bin", &[]).await;
        assert_eq!(
            (r.status.as_u16(), &r.body),
            (200, &data),
            "after deleting {i} names"
        );
    }
    assert_eq!(
        cas_entries(&storage).len(),
        2,
        "one name is left: the copy stays"
    );
    assert_eq!(admin_delete(&srv, "b/second.bin").await, 200);
    assert_eq!(
        cas_entries(&storage).len(),
        1,
        "the last name went: its copy too"
    );
    // The same content again is stored anew (nothing to share) and counted as no saving.
    assert_eq!(
        put(&mut h3, &signed_v("e/again.bin", n), &data, &[])
            .await
            .status,
        201
    );
    let text = metrics(&srv).await;
    assert_eq!(
        metric(&text, "xferd_dedup_saved_bytes_total"),
        2 * n,
        "{text}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_sharing_and_sweeps_orphaned_copies() {
    let mut srv = TestServer::start_with(tweak).await;
    let storage = srv.storage();
    let (data, gone) = (
        b"kept across restarts".to_vec(),
        b"its last name removed by hand".to_vec(),
    );
    let mut c = srv.client(Proto::H1).await;
    assert_eq!(
        put(
            &mut c,
            &signed_v("x/one.txt", data.len() as u64),
            &data,
            &[]
        )
        .await
        .status,
        201
    );
    assert_eq!(
        put(
            &mut c,
            &signed_v("x/gone.txt", gone.len() as u64),
            &gone,
            &[]
        )
        .await
        .status,
        201
    );
    drop(c);
    srv.server.take().unwrap().shutdown().await;
    // Removed behind the server's back: only its content-addressed link is left.
    std::fs::remove_file(storage.join("x/gone.txt")).unwrap();
    assert_eq!(cas_entries(&storage).len(), 2);
    let dir = std::mem::replace(&mut srv.dir, tempfile::tempdir().unwrap());
    let srv = start_in(dir).await;
    assert_eq!(
        cas_entries(&storage).len(),
        1,
        "the start-up sweep freed the orphan"
    );
    let mut c = srv.client(Proto::H3).await;
    assert_eq!(
        put(
            &mut c,
            &signed_v("y/two.txt", data.len() as u64),
            &data,
            &[]
        )
        .await
        .status,
        201
    );
    assert_eq!(
        ino(&storage.join("x/one.txt")).0,
        ino(&storage.join("y/two.txt")).0
    );
    let r = get(&mut c, "/y/two.txt", &[]).await;
    assert_eq!(&r.body[..], &data[..]);
    srv.stop().await;
}

#[tokio::test]
async fn the_content_addressed_store_is_not_reachable_over_http() {
    let srv = TestServer::start_with(tweak).await;
    let storage = srv.storage();
    let data = b"secret-ish content".to_vec();
    for proto in [Proto::H1, Proto::H3] {
        let mut c = srv.client(proto).await;
        let rel = format!("p/{}.txt", label(proto));
        assert_eq!(
            put(&mut c, &signed_v(&rel, data.len() as u64), &data, &[])
                .await
                .status,
            201
        );
    }
    let entry = cas_entries(&storage)
        .pop()
        .expect("a content-addressed entry");
    let rel = entry
        .strip_prefix(&storage)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(rel.starts_with(".xferd-cas/"), "{rel}");
    for proto in [Proto::H1, Proto::H3] {
        let mut c = srv.client(proto).await;
        let l = label(proto);
        for path in [
            format!("/{rel}"),
            "/.xferd-cas/".to_string(),
            format!("/{rel}?x=1"),
        ] {
            let r = get(&mut c, &path, &[]).await;
            assert!(
                matches!(r.status.as_u16(), 400 | 403 | 404),
                "{l} GET {path}: {}",
                r.status
            );
        }
        let r = put(&mut c, &signed_v(&rel, 3), b"bad", &[]).await;
        assert!(
            matches!(r.status.as_u16(), 400 | 403 | 404),
            "{l} PUT: {}",
            r.status
        );
        let r = put(&mut c, &signed_v(".xferd-cas/zz/new", 3), b"bad", &[]).await;
        assert!(
            matches!(r.status.as_u16(), 400 | 403 | 404),
            "{l} PUT new: {}",
            r.status
        );
    }
    assert_eq!(
        std::fs::read(&entry).unwrap(),
        data,
        "the copy is untouched"
    );
    // The admin API neither lists nor deletes it.
    let listed = call(&admin_url(&srv), TOKEN, http::Method::GET, "/files")
        .await
        .unwrap();
    assert!(!listed.to_string().contains("xferd-cas"), "{listed}");
    assert_ne!(admin_delete(&srv, &rel).await, 200);
    assert!(entry.exists());
    srv.stop().await;
}

#[test]
fn config_keys_and_the_s3_refusal() {
    use xferd::config::Config;
    let c = Config::parse("[deduplication]\nenabled = true\n", "x.toml")
        .unwrap()
        .config;
    assert!(c.deduplication.enabled);
    let err = Config::parse(
        "[deduplication]\nenabled = true\n[storage]\nbackend = \"s3\"\n\
         [storage.s3]\nendpoint = \"http://127.0.0.1:1\"\nbucket = \"bucket\"\nregion = \"r\"\n\
         access_key_id = \"a\"\nsecret_access_key = \"s\"\nallow_http = true\n",
        "x.toml",
    )
    .expect_err("dedup with s3 is refused");
    assert!(err.to_string().contains("deduplication.enabled"), "{err}");
    // HFS: both switches, like HFS.
    let hfs = "[server]\nlisten_address = \"0\"\nstorage_path = \"/nonexistent\"\n";
    let both = format!("{hfs}deduplication_enabled = true\n[deduplication]\nenabled = true\n");
    assert!(
        Config::parse(&both, "hfs.toml")
            .unwrap()
            .config
            .deduplication
            .enabled
    );
    let one = format!("{hfs}deduplication_enabled = true\n");
    assert!(
        !Config::parse(&one, "hfs.toml")
            .unwrap()
            .config
            .deduplication
            .enabled
    );
}

/// Expiry deletes through the store like the admin API: a shared copy's modification time is
/// its latest upload's, so an earlier name of the same content is not expired before the
/// later one; once every name has expired, the copy goes too.
#[tokio::test]
async fn expiry_keeps_a_shared_copy_until_its_last_name_expires() {
    const MAX_AGE: Duration = Duration::from_secs(3);
    let srv = TestServer::start_with(|c| {
        tweak(c);
        c.expiry.enabled = true;
        c.expiry.max_age = MAX_AGE;
        c.expiry.sweep_interval = Duration::from_millis(200);
    })
    .await;
    let storage = srv.storage();
    let (shared, solo) = (b"shared by two names".to_vec(), b"alone".to_vec());
    let mut c = srv.client(Proto::H3).await;
    let started = std::time::Instant::now();
    assert_eq!(
        put(
            &mut c,
            &signed_v("old/a.txt", shared.len() as u64),
            &shared,
            &[]
        )
        .await
        .status,
        201
    );
    assert_eq!(
        put(
            &mut c,
            &signed_v("old/solo.txt", solo.len() as u64),
            &solo,
            &[]
        )
        .await
        .status,
        201
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut h1 = srv.client(Proto::H1).await;
    assert_eq!(
        put(
            &mut h1,
            &signed_v("new/b.txt", shared.len() as u64),
            &shared,
            &[]
        )
        .await
        .status,
        201
    );
    assert_eq!(
        ino(&storage.join("old/a.txt")).0,
        ino(&storage.join("new/b.txt")).0
    );
    eventually("the unshared old file expires", || {
        !storage.join("old/solo.txt").exists()
    })
    .await;
    if started.elapsed() < Duration::from_secs(2) + MAX_AGE - Duration::from_millis(300) {
        // Its own upload was 3 s ago, but the shared copy was uploaded again 1 s ago.
        assert!(
            storage.join("old/a.txt").exists(),
            "expired by the first upload's time"
        );
    }
    eventually("both names expire", || {
        !storage.join("old/a.txt").exists() && !storage.join("new/b.txt").exists()
    })
    .await;
    assert!(
        cas_entries(&storage).is_empty(),
        "{:?}",
        cas_entries(&storage)
    );
    srv.stop().await;
}

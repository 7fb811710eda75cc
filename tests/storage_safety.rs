//! Storage safety end to end over HTTP/1.1, HTTP/2 and HTTP/3: a symbolic link inside the
//! storage root (placed there by someone with shell access, or by another program sharing
//! the directory) is never followed - not for downloads, not for uploads, not for creating
//! directories, not by the start-up sweep - and the start-up sweep and recovery do not run
//! on the async runtime's thread.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;
use xferd::client::Proto;

/// Every test here is bounded: a hang is a failure, not a stuck CI job.
const LIMIT: Duration = Duration::from_secs(90);

/// `outside/` (beside the storage root) holds `secret.txt`; the storage root holds
/// `linkdir -> outside` and `a/link -> outside` (a link as an intermediate component).
fn plant_links(srv: &TestServer) -> std::path::PathBuf {
    let outside = srv.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), b"top secret").unwrap();
    std::fs::create_dir_all(outside.join("b")).unwrap();
    std::fs::write(outside.join("b/secret.txt"), b"deeper secret").unwrap();
    let root = srv.storage();
    std::os::unix::fs::symlink(&outside, root.join("linkdir")).unwrap();
    std::fs::create_dir_all(root.join("a")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("a/link")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("filelink.txt")).unwrap();
    outside
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walk(dir);
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = p.strip_prefix(dir).unwrap().display().to_string();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p).into_iter().map(|n| format!("{name}/{n}")));
        }
        out.push(name);
    }
    out
}

#[tokio::test]
async fn downloads_never_follow_a_symlinked_directory() {
    tokio::time::timeout(LIMIT, async {
        let srv = TestServer::start().await;
        plant_links(&srv);
        for proto in Proto::ALL {
            let mut c = srv.client(proto).await;
            let l = label(proto);
            for path in [
                "/linkdir/secret.txt",
                "/a/link/secret.txt",
                "/a/link/b/secret.txt",
                "/filelink.txt",
            ] {
                let r = get(&mut c, path, &[]).await;
                assert_eq!(r.status, 404, "{l} GET {path}: {:?}", r.body);
                assert!(
                    !String::from_utf8_lossy(&r.body).contains("secret"),
                    "{l} GET {path} leaked the file"
                );
            }
            // A normal file still downloads.
            let rel = format!("{l}/ok.txt");
            let up = put(&mut c, &signed_v(&rel, 2), b"ok", &[]).await;
            assert_eq!(up.status, 201, "{l}");
            let r = get(&mut c, &format!("/{rel}"), &[]).await;
            assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"ok"[..]), "{l}");
        }
        srv.stop().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn uploads_never_write_through_a_symlinked_directory() {
    tokio::time::timeout(LIMIT, async {
        let srv = TestServer::start().await;
        let outside = plant_links(&srv);
        let before = listing(&outside);
        for proto in Proto::ALL {
            let mut c = srv.client(proto).await;
            let l = label(proto);
            for rel in [
                format!("linkdir/{l}-new.txt"),
                format!("linkdir/{l}-sub/new.txt"),
                format!("a/link/{l}-new.txt"),
                format!("a/link/b/{l}-new.txt"),
                format!("a/link/{l}-sub/deeper/new.txt"),
                "filelink.txt".to_string(),
            ] {
                // 409: `path_conflict` for a link on the way (storage says ELOOP), or
                // `file_exists` for the link as the last component.
                let r = put(&mut c, &signed_v(&rel, 5), b"hello", &[]).await;
                assert_eq!(
                    r.status, 409,
                    "{l} PUT {rel}: want a 409 refusal, got {:?}",
                    r.body
                );
                assert_eq!(listing(&outside), before, "{l} PUT {rel} wrote outside");
            }
            // The refusals are the client's, not storage failures: uploads still work.
            let rel = format!("a/{l}-fine.txt");
            let r = put(&mut c, &signed_v(&rel, 4), b"fine", &[]).await;
            assert_eq!(r.status, 201, "{l}: {:?}", r.body);
        }
        assert_eq!(
            std::fs::read(outside.join("secret.txt")).unwrap(),
            b"top secret"
        );
        srv.stop().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn resumable_uploads_never_commit_through_a_symlinked_directory() {
    tokio::time::timeout(LIMIT, async {
        let srv = TestServer::start().await;
        let outside = plant_links(&srv);
        let before = listing(&outside);
        for proto in Proto::ALL {
            let mut c = srv.client(proto).await;
            let l = label(proto);
            let rel = format!("a/link/{l}-tus.bin");
            // tus creation-with-upload of the whole body: the commit is the rename.
            let url = signed_v(&rel, 5);
            let r = request(
                &mut c,
                "POST",
                &url,
                &[
                    ("tus-resumable", "1.0.0"),
                    ("upload-length", "5"),
                    ("content-type", "application/offset+octet-stream"),
                    ("content-length", "5"),
                ],
                Some(body_once(bytes::Bytes::from_static(b"hello"))),
            )
            .await;
            assert_eq!(r.status, 409, "{l} tus POST {rel}: {:?}", r.body);
            assert_eq!(listing(&outside), before, "{l} tus {rel} wrote outside");
        }
        srv.stop().await;
    })
    .await
    .expect("bounded");
}

/// The start-up sweep removes crash leftovers inside storage only: a `.xferd-tmp-*` file
/// reached through a symlinked directory belongs to someone else.
#[tokio::test]
async fn startup_sweep_does_not_descend_through_symlinks() {
    tokio::time::timeout(LIMIT, async {
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("data");
        let outside = base.path().join("outside");
        std::fs::create_dir_all(data.join("d")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join(".xferd-tmp-theirs"), b"x").unwrap();
        std::fs::write(data.join("d/.xferd-tmp-ours"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, data.join("d/link")).unwrap();
        let d = data.clone();
        let srv = TestServer::start_with(move |c| c.server.storage_path = d).await;
        assert!(outside.join(".xferd-tmp-theirs").exists());
        assert!(!data.join("d/.xferd-tmp-ours").exists());
        srv.stop().await;
    })
    .await
    .expect("bounded");
}

/// `server::start` runs the temp-file sweep and the session recovery on the blocking pool:
/// with the pool's only thread held, `start` can make no progress on the sweep, and the
/// runtime thread stays free (another task runs) until the pool is released.
#[test]
fn startup_sweep_runs_on_the_blocking_pool() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(LIMIT, async {
            let base = tempfile::tempdir().unwrap();
            let data = base.path().join("data");
            std::fs::create_dir_all(data.join("d")).unwrap();
            let leftover = data.join("d/.xferd-tmp-crashed");
            std::fs::write(&leftover, b"x").unwrap();
            // Hold the only blocking thread.
            let (release, wait) = std::sync::mpsc::channel::<()>();
            let (held_tx, held_rx) = tokio::sync::oneshot::channel();
            let holder = tokio::task::spawn_blocking(move || {
                let _ = held_tx.send(());
                let _ = wait.recv_timeout(LIMIT);
            });
            held_rx.await.unwrap();
            let d = data.clone();
            let starting = tokio::spawn(TestServer::start_with(move |c| c.server.storage_path = d));
            // Let `start` run as far as it can on this (only) runtime thread.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                leftover.exists(),
                "the sweep ran on the runtime thread while the blocking pool was busy"
            );
            assert!(!starting.is_finished());
            release.send(()).unwrap();
            holder.await.unwrap();
            let srv = starting.await.unwrap();
            assert!(!leftover.exists(), "the sweep ran once the pool was free");
            let mut c = srv.client(Proto::H1).await;
            let r = put(&mut c, &signed_v("d/x.txt", 1), b"x", &[]).await;
            assert_eq!(r.status, 201);
            srv.stop().await;
        })
        .await
        .expect("bounded");
    });
}

/// The session-data directory is resolved like everything under the root: if it is a link,
/// the server refuses to start instead of keeping upload bytes wherever the link points.
#[tokio::test]
async fn a_symlinked_session_directory_is_refused_at_start_up() {
    tokio::time::timeout(LIMIT, async {
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("data");
        let outside = base.path().join("outside");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, data.join(".xferd-sessions")).unwrap();
        let mut config = xferd::config::Config::default();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.server.storage_path = data;
        config.server.state_path = base.path().join("state");
        config.security.secret = Some(SECRET.to_string());
        match xferd::server::start(config).await {
            Ok(s) => {
                s.shutdown().await;
                panic!("started with the session directory behind a link");
            }
            Err(e) => assert!(
                format!("{e:#}").contains("session data"),
                "unexpected error: {e:#}"
            ),
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    })
    .await
    .expect("bounded");
}

//! File expiry end to end (`[expiry]`, HFS `filettl`): over h1, h2 and h3, an old upload
//! disappears with its emptied directory, a recent one stays, and a tus upload in progress
//! whose session is older than `max_age` is untouched and still completes. The metric of
//! files and bytes expired counts them.

mod common;

use common::*;
use std::time::Duration;
use xferd::client::Proto;

const MAX_AGE: Duration = Duration::from_secs(4);

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[tokio::test]
async fn old_files_expire_recent_and_in_progress_stay() {
    let srv = TestServer::start_with(|c| {
        c.expiry.enabled = true;
        c.expiry.max_age = MAX_AGE;
        c.expiry.sweep_interval = Duration::from_millis(500);
    })
    .await;
    let mut sessions = Vec::new();
    for proto in Proto::ALL {
        let l = label(proto);
        let mut c = srv.client(proto).await;
        let rel = format!("old/{l}/deep/a.txt");
        let r = put(&mut c, &signed_v(&rel, 5), b"hello", &[]).await;
        assert_eq!(r.status, 201, "{l}");
        // A tus upload started now, half sent, finished after its session is "old".
        let target = format!("busy/{l}/t.bin");
        let r = request(
            &mut c,
            "POST",
            &signed_v(&target, 10),
            &[TUS, ("upload-length", "10")],
            None,
        )
        .await;
        assert_eq!(r.status, 201, "{l} tus create");
        let loc = r.header("location").unwrap().to_string();
        let r = request(
            &mut c,
            "PATCH",
            &loc,
            &[
                TUS,
                ("upload-offset", "0"),
                ("content-type", "application/offset+octet-stream"),
                ("content-length", "5"),
            ],
            Some(body_once(bytes::Bytes::from_static(b"01234"))),
        )
        .await;
        assert_eq!(r.status, 204, "{l} patch");
        sessions.push((proto, loc, target));
    }
    // Past max_age for the first files, then recent ones.
    tokio::time::sleep(MAX_AGE + Duration::from_millis(500)).await;
    for proto in Proto::ALL {
        let mut c = srv.client(proto).await;
        let rel = format!("new/{}/b.txt", label(proto));
        assert_eq!(
            put(&mut c, &signed_v(&rel, 3), b"new", &[]).await.status,
            201
        );
    }
    let storage = srv.storage();
    common::eventually("old files expire", || {
        Proto::ALL.iter().all(|p| {
            !storage
                .join(format!("old/{}/deep/a.txt", label(*p)))
                .exists()
        })
    })
    .await;
    for proto in Proto::ALL {
        let l = label(proto);
        // The emptied directories went with the file (all the way up to old/).
        assert!(!storage.join(format!("old/{l}")).exists(), "{l}");
        assert!(
            storage.join(format!("new/{l}/b.txt")).exists(),
            "{l} recent"
        );
        let mut c = srv.client(proto).await;
        let r = get(&mut c, &format!("/old/{l}/deep/a.txt"), &[]).await;
        assert_eq!(r.status, 404, "{l}");
    }
    assert!(!storage.join("old").exists());
    // The uploads in progress were not touched: they complete with their first half.
    for (proto, loc, target) in sessions {
        let l = label(proto);
        let mut c = srv.client(proto).await;
        let r = request(
            &mut c,
            "PATCH",
            &loc,
            &[
                TUS,
                ("upload-offset", "5"),
                ("content-type", "application/offset+octet-stream"),
                ("content-length", "5"),
            ],
            Some(body_once(bytes::Bytes::from_static(b"56789"))),
        )
        .await;
        assert_eq!(r.status, 204, "{l} second patch: {:?}", r.body);
        let r = get(&mut c, &format!("/{target}"), &[]).await;
        assert_eq!(r.status, 200, "{l}");
        assert_eq!(&r.body[..], b"0123456789", "{l}");
    }
    let mut c = srv.client(Proto::H1).await;
    let m = get(&mut c, "/metrics", &[]).await;
    assert_eq!(m.status, 200);
    let text = String::from_utf8_lossy(&m.body).to_string();
    // Three old files of 5 bytes (a later sweep may also take a recent one on a slow run).
    assert!(metric(&text, "xferd_expired_files_total") >= 3, "{text}");
    assert!(metric(&text, "xferd_expired_bytes_total") >= 15, "{text}");
    srv.stop().await;
}

#[tokio::test]
async fn hfs_filettl_keys_drive_expiry() {
    let text = "[server]\nlisten_address = \"0\"\nstorage_path = \"/nonexistent\"\n\
                filettlenabled = true\nfilettl = \"168h\"\ncleanup_interval = \"1h\"\n";
    let loaded = xferd::config::Config::parse(text, "hfs.toml").unwrap();
    let e = &loaded.config.expiry;
    assert!(e.enabled);
    assert_eq!(e.max_age, Duration::from_secs(168 * 3600));
    assert_eq!(e.sweep_interval, Duration::from_secs(3600));
}

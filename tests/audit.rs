//! The audit log end to end (`[audit]`): over h1, h2 and h3, an upload, a download, a
//! delete (tus termination: xferd has no DELETE of stored files) and a refused request each
//! give one JSON line with exactly the listed fields, right values, and never the query
//! string (no signature) in it. The file is created 0600.

mod common;

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use xferd::client::Proto;

const FIELDS: [&str; 9] = [
    "bytes", "client", "code", "method", "path", "protocol", "sha256", "status", "time",
];

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn one_json_line_per_request_with_the_listed_fields() {
    let srv = TestServer::start_with(|c| {
        c.audit.enabled = true;
        c.audit.path = None;
    })
    .await;
    let log = srv.dir.path().join("state/audit.log");
    let mut expected = 0;
    for proto in Proto::ALL {
        let l = label(proto);
        let mut c = srv.client(proto).await;
        let rel = format!("{l}/a file.txt");
        let url = signed_v(&rel, 11);
        assert!(url.contains("?v="));
        let r = put(&mut c, &url, b"hello audit", &[]).await;
        assert_eq!(r.status, 201, "{l}");
        let r = get(&mut c, &format!("/{}", encode_path(&rel)), &[]).await;
        assert_eq!(r.status, 200, "{l}");
        // Refused: a bad signature.
        let bad = format!("/{l}/x.txt?v=00ff");
        let r = put(&mut c, &bad, b"no", &[]).await;
        assert_eq!(r.status, 403, "{l}");
        // A delete: a tus upload terminated.
        let r = request(
            &mut c,
            "POST",
            &signed_v(&format!("{l}/t.bin"), 4),
            &[TUS, ("upload-length", "4")],
            None,
        )
        .await;
        assert_eq!(r.status, 201, "{l}");
        let loc = r.header("location").unwrap().to_string();
        let r = request(&mut c, "DELETE", &loc, &[TUS], None).await;
        assert_eq!(r.status, 204, "{l}");
        // Not audited: health checks.
        assert_eq!(get(&mut c, "/health", &[]).await.status, 200);
        expected += 5;
    }
    common::eventually("audit lines written", || lines(&log).len() >= expected).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all = lines(&log);
    assert_eq!(all.len(), expected, "{all:#?}");
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let sha = hex::encode(Sha256::digest(b"hello audit"));
    for (i, proto) in Proto::ALL.iter().enumerate() {
        let l = label(*proto);
        let mine: Vec<Value> = all[i * 5..i * 5 + 5]
            .iter()
            .map(|line| {
                assert!(!line.contains("v="), "a signature in the log: {line}");
                serde_json::from_str(line).unwrap()
            })
            .collect();
        for e in &mine {
            let mut keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
            keys.sort();
            assert_eq!(keys, FIELDS, "{e}");
            assert_eq!(e["protocol"], l, "{e}");
            assert_eq!(e["client"], "127.0.0.1", "{e}");
            let t = e["time"].as_str().unwrap();
            assert!(
                t.ends_with('Z') && t.len() == 24 && t.as_bytes()[10] == b'T',
                "{t}"
            );
        }
        let (up, down, refused, create, delete) =
            (&mine[0], &mine[1], &mine[2], &mine[3], &mine[4]);
        assert_eq!(up["method"], "PUT");
        assert_eq!(up["path"], format!("/{l}/a%20file.txt"));
        assert_eq!(up["status"], 201);
        assert_eq!(up["bytes"], 11);
        assert_eq!(up["sha256"], sha.as_str());
        assert_eq!(up["code"], Value::Null);
        assert_eq!(down["method"], "GET");
        assert_eq!(down["status"], 200);
        assert_eq!(down["bytes"], 11);
        assert_eq!(refused["status"], 403);
        assert_eq!(refused["code"], "signature_invalid");
        assert_eq!(refused["bytes"], 0);
        assert_eq!(refused["path"], format!("/{l}/x.txt"));
        assert_eq!(create["method"], "POST");
        assert_eq!(create["status"], 201);
        assert_eq!(delete["method"], "DELETE");
        assert_eq!(delete["status"], 204);
        assert_eq!(delete["code"], Value::Null);
    }
    srv.stop().await;
}

#[tokio::test]
async fn hfs_audit_keys_are_xferd_keys() {
    let text = "[server]\nlisten_address = \"0\"\n[audit]\nenabled = true\noutput = \"stdout\"\n\
                path = \"/var/log/a.log\"\nformat = \"json\"\nmax_size = 100\n";
    let loaded = xferd::config::Config::parse(text, "hfs.toml").unwrap();
    let a = &loaded.config.audit;
    assert!(a.enabled);
    assert_eq!(a.output, xferd::config::AuditOutput::Stdout);
    // format and max_size are accepted, not applied, with their reason.
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.contains("audit.format") && w.contains("JSON lines only")));
}

//! Signed-URL edge cases end to end (issue 10, items 6, 7 and 17): repeated signature
//! parameters are refused with 400 over h1, h2 and h3; a v3 URL valid for longer than
//! `security.max_url_lifetime` is refused (and `xferd sign` will not mint one); a generated
//! secret never appears in the server's output.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;
use xferd::client::Proto;
use xferd::core::auth::Scheme;

/// 64 hex digits that are no valid MAC for anything here.
const GARBAGE: &str = "00000000000000000000000000000000000000000000000000000000000000ff";

/// Every way we know of to say a signature parameter twice, each paired with a valid one.
fn repeated_cases(l: &str, data_len: u64) -> Vec<(String, String)> {
    let mut cases = Vec::new();
    let rel = |n: &str| format!("{l}/rep/{n}.bin");
    // `?v=<valid>&v=<garbage>`: before, the first (valid) one decided and the PUT was stored.
    let r = rel("valid-first");
    cases.push((r.clone(), format!("{}&v={GARBAGE}", signed_v(&r, data_len))));
    // `?v=<garbage>&v=<valid>`: a reader of the last one would accept it.
    let r = rel("garbage-first");
    let valid = signed_v(&r, data_len);
    let (path, q) = valid.split_once('?').unwrap();
    cases.push((r, format!("{path}?v={GARBAGE}&{q}")));
    // A percent-encoded name (`%76` is `v`) is the same parameter.
    let r = rel("encoded-name");
    cases.push((
        r.clone(),
        format!("{}&%76={GARBAGE}", signed_v(&r, data_len)),
    ));
    // v2 and token, each repeated.
    for scheme in [Scheme::V2, Scheme::Token] {
        let r = rel(scheme.param());
        let u = signed(
            "",
            scheme,
            "PUT",
            &r,
            data_len,
            "application/octet-stream",
            0,
        );
        cases.push((r, format!("{u}&{}={GARBAGE}", scheme.param())));
    }
    // v3 with `expires` twice (a later expiry a reader of the last one would use).
    let r = rel("v3-expires");
    let exp = now_unix() + 300;
    let u = signed("", Scheme::V3, "PUT", &r, 0, "", exp);
    cases.push((r.clone(), format!("{u}&expires={}", exp + 86_400)));
    // v3 itself twice.
    let r = rel("v3-twice");
    let u = signed("", Scheme::V3, "PUT", &r, 0, "", exp);
    cases.push((r.clone(), format!("{u}&v3={GARBAGE}")));
    cases
}

#[tokio::test]
async fn repeated_signature_parameters_are_refused_with_400() {
    let srv = TestServer::start().await;
    let data = pattern(6, 0, 3000);
    for proto in Proto::ALL {
        let mut c = srv.client(proto).await;
        let l = label(proto);
        for (rel, url) in repeated_cases(l, data.len() as u64) {
            let r = tokio::time::timeout(Duration::from_secs(20), put(&mut c, &url, &data, &[]))
                .await
                .unwrap_or_else(|_| panic!("{l} {url}: timed out"));
            assert_eq!(r.status, 400, "{l} {url}: {:?}", r.json());
            assert_eq!(
                r.json()["error"],
                "signature_parameter_repeated",
                "{l} {url}"
            );
            assert!(
                !srv.storage().join(&rel).exists(),
                "{l} {url}: stored despite the refusal"
            );
        }
        // The same URLs without the repetition still work (nothing else changed).
        let r = format!("{l}/rep/plain.bin");
        let ok = put(&mut c, &signed_v(&r, data.len() as u64), &data, &[]).await;
        assert_eq!(ok.status, 201, "{l}: {:?}", ok.json());
    }
    srv.stop().await;
}

#[tokio::test]
async fn v3_urls_beyond_the_maximum_lifetime_are_refused() {
    let srv = TestServer::start().await;
    let data = pattern(7, 0, 2000);
    let century = now_unix() + 100 * 365 * 86_400;
    let six_days = now_unix() + 6 * 86_400;
    for proto in Proto::ALL {
        let mut c = srv.client(proto).await;
        let l = label(proto);
        let far = format!("{l}/life/century.bin");
        let url = signed("", Scheme::V3, "PUT", &far, 0, "", century);
        let r = put(&mut c, &url, &data, &[]).await;
        assert_eq!(r.status, 403, "{l}: {:?}", r.json());
        assert_eq!(r.json()["error"], "signature_lifetime_exceeded", "{l}");
        assert!(!srv.storage().join(&far).exists(), "{l}: stored");
        // Within the default maximum (7 days): accepted.
        let near = format!("{l}/life/week.bin");
        let url = signed("", Scheme::V3, "PUT", &near, 0, "", six_days);
        let r = put(&mut c, &url, &data, &[]).await;
        assert_eq!(r.status, 201, "{l}: {:?}", r.json());
    }
    srv.stop().await;
}

#[tokio::test]
async fn the_maximum_lifetime_is_configurable() {
    let srv =
        TestServer::start_with(|c| c.security.max_url_lifetime = Duration::from_secs(600)).await;
    let mut c = srv.client(Proto::H2).await;
    let data = pattern(8, 0, 100);
    let url = signed(
        "",
        Scheme::V3,
        "PUT",
        "cfg/hour.bin",
        0,
        "",
        now_unix() + 3600,
    );
    let r = put(&mut c, &url, &data, &[]).await;
    assert_eq!(r.status, 403, "{:?}", r.json());
    assert_eq!(r.json()["error"], "signature_lifetime_exceeded");
    let url = signed(
        "",
        Scheme::V3,
        "PUT",
        "cfg/min.bin",
        0,
        "",
        now_unix() + 300,
    );
    assert_eq!(put(&mut c, &url, &data, &[]).await.status, 201);
    srv.stop().await;
}

fn xferd_sign(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xferd"))
        .args(["sign", "--secret", "s3cret", "--path", "a/b.bin"])
        .args(args)
        .output()
        .expect("xferd sign runs")
}

#[test]
fn sign_refuses_to_mint_a_url_beyond_the_maximum_lifetime() {
    let long = xferd_sign(&["--expires", "30d"]);
    let stderr = String::from_utf8_lossy(&long.stderr);
    assert!(!long.status.success(), "minted a 30-day URL: {long:?}");
    assert!(stderr.contains("max_url_lifetime"), "{stderr}");
    let ok = xferd_sign(&["--expires", "1h"]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("v3="));
}

/// Kills the child on drop (a failing assertion must not leave a server running).
struct Proc(std::process::Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_generated_secret_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = d.join("xferd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nstorage_path = \"{0}/data\"\nstate_path = \"{0}/state\"\n",
            d.display()
        ),
    )
    .unwrap();
    let out = std::fs::File::create(d.join("out.log")).unwrap();
    let err = std::fs::File::create(d.join("err.log")).unwrap();
    let proc = Proc(
        Command::new(env!("CARGO_BIN_EXE_xferd"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("XFERD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap(),
    );
    let read = || {
        let o = std::fs::read_to_string(d.join("out.log")).unwrap_or_default();
        let e = std::fs::read_to_string(d.join("err.log")).unwrap_or_default();
        o + &e
    };
    // Ready once the start-up banner ends with its `try:` line (bounded: 20 s).
    let mut ready = false;
    for _ in 0..400 {
        if read().contains("try:") {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(proc);
    let output = read();
    assert!(ready, "the server did not start: {output}");
    let secret_path = d.join("state/secret");
    let secret = std::fs::read_to_string(&secret_path).expect("secret stored in the state dir");
    let secret = secret.trim();
    assert!(secret.len() >= 32, "a real secret was generated");
    assert!(
        !output.contains(secret),
        "the generated secret was printed (line: {:?})",
        output.lines().find(|l| l.contains(secret))
    );
    assert!(
        output.contains(&secret_path.display().to_string()),
        "the banner names the secret's file: {output}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&secret_path).unwrap().permissions(),
    );
    assert_eq!(mode & 0o077, 0, "secret file readable by others: {mode:o}");
}

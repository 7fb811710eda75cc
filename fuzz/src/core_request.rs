//! Target `core_request`: whole requests (method, path and query, headers, a body in frames,
//! sometimes cut short) through `Core::handle` over the memory store
//! (`xferd::core::fuzz_entry`), several per input, so sessions created by one request are
//! appended to, queried and completed by the next ones.
//!
//! Input: requests separated by a line `===`. A request is a first line
//! `METHOD TARGET [SCHEME [SIZE]]`, header lines `Name: value`, directive lines (`@frames
//! 3,1,7`: the body is delivered in frames of these sizes, the rest in one; `@cut N`: only
//! the first N bytes are delivered; `@err`: the body ends with a transport error), an empty
//! line, then the body (raw bytes). A header line that is not a valid name and value is
//! dropped: the harness neither sends it nor signs or checks with it. `{id}` and `{first}`
//! in the target and in header values stand for the last and the first session id the
//! server has handed out in this input (from `Location` or a JSON `session_id`). When SCHEME (`v`, `v2`, `token`, `v3`) is
//! given, the harness signs the request itself with [`SECRET`] (HMAC-SHA256 computed here
//! with the `hmac` crate): over the decoded path (or `X-Filename`), SIZE or else the first
//! of `Upload-Length`, `X-Total-Size`, `Content-Length` and the body's length, and the
//! `Content-Type` (v2/token) or the method and an expiry 10 minutes ahead (v3).
//!
//! Properties, per response:
//! - no 5xx, except the documented capacity answers: 507 `insufficient_storage` /
//!   `quota_exceeded` (the store holds [`fuzz_entry::CAPACITY`] bytes, uploads keep 16 MiB
//!   free) and 503
//!   `buffers_exhausted` (the buffer pool's bound); the memory store never fails, so any
//!   other 5xx is a defect;
//! - the `xferd-error` header is present exactly when the status is 400 or more;
//! - a PUT answered 201 stored exactly the body sent (bytes, length and SHA-256) under the
//!   key the signature covered, and a stored object never changes afterwards;
//! - every stored key is one the harness signed (or lies under the form directory after a
//!   signed `POST /upload`); a response that is not 2xx adds no key;
//! - a GET's body has the announced length and `Content-Length`; a single-range 206 has the
//!   length its `Content-Range` gives, and for an object stored by this input, its bytes.

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use xferd::core::body::BodyError;
use xferd::core::fuzz_entry::{self, Answer, FuzzCore};
use xferd::storage::key::Key;
use xferd::storage::store::Store;

/// The shared secret of the core under test.
pub const SECRET: &str = "fuzz-secret";
/// At most this many requests per input.
const MAX_REQUESTS: usize = 16;

type HmacSha256 = hmac::Hmac<Sha256>;

fn mac_hex(message: &[u8]) -> String {
    let mut m = HmacSha256::new_from_slice(SECRET.as_bytes()).expect("any key length");
    m.update(message);
    hex::encode(m.finalize().into_bytes())
}

/// One request as read from the input.
struct Spec {
    method: String,
    target: String,
    scheme: Option<String>,
    size: Option<u64>,
    headers: Vec<(String, String)>,
    frames: Vec<usize>,
    cut: Option<usize>,
    error: bool,
    body: Vec<u8>,
}

fn split_requests(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = find(rest, b"\n===\n") {
        out.push(&rest[..i]);
        rest = &rest[i + 5..];
    }
    out.push(rest);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse(raw: &[u8]) -> Option<Spec> {
    let (head, body) = match find(raw, b"\n\n") {
        Some(i) => (&raw[..i], raw[i + 2..].to_vec()),
        None => (raw, Vec::new()),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split('\n');
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next().unwrap_or("/").to_string();
    let scheme = first.next().map(str::to_string);
    let size = first.next().and_then(|s| s.parse().ok());
    let mut spec = Spec {
        method,
        target,
        scheme,
        size,
        headers: Vec::new(),
        frames: Vec::new(),
        cut: None,
        error: false,
        body,
    };
    for line in lines {
        if let Some(d) = line.strip_prefix("@frames ") {
            spec.frames = d
                .split(',')
                .filter_map(|n| n.trim().parse::<usize>().ok())
                .map(|n| n.max(1))
                .take(64)
                .collect();
        } else if let Some(n) = line.strip_prefix("@cut ") {
            spec.cut = n.trim().parse().ok();
        } else if line.trim() == "@err" {
            spec.error = true;
        } else if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim(), value.strip_prefix(' ').unwrap_or(value));
            // A line that is no valid header is never sent, so it must not count either:
            // `content-length: 5\x0b` once made the harness sign and check a length of 5
            // (`trim` drops the vertical tab) while the request carried another one.
            if http::HeaderName::from_bytes(name.as_bytes()).is_ok()
                && http::HeaderValue::from_str(value).is_ok()
            {
                spec.headers.push((name.to_string(), value.to_string()));
            }
        }
    }
    Some(spec)
}

/// What the harness knows across the requests of one input.
#[derive(Default)]
struct World {
    ids: Vec<String>,
    /// Keys the harness signed (decoded, without the leading `/`).
    signed: BTreeSet<String>,
    /// A signed `POST /upload` was sent: keys under the form directory are allowed.
    form_signed: bool,
    /// Objects this input stored with a PUT, and their bytes.
    stored: BTreeMap<String, Vec<u8>>,
}

impl World {
    fn fill(&self, text: &str) -> String {
        let last = self.ids.last().map_or("", String::as_str);
        let first = self.ids.first().map_or("", String::as_str);
        text.replace("{id}", last).replace("{first}", first)
    }
}

fn header_u64(headers: &[(String, String)], name: &str) -> Option<u64> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.trim().parse().ok())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The path a signature covers: `X-Filename` for HFS, else the decoded request path.
fn signed_path(spec: &Spec, path: &str) -> String {
    if let Some(name) = header(&spec.headers, "x-filename") {
        if let Ok(rel) = xferd::core::resumable::hfs::target_of(name) {
            return rel.as_str().to_string();
        }
        return name.trim_start_matches('/').to_string();
    }
    match xferd::core::path::resolve(path, "") {
        Ok(rel) => rel.as_str().to_string(),
        Err(_) => path.trim_start_matches('/').to_string(),
    }
}

/// Appends the signature the spec asks for to `target`; returns the signed path.
fn sign(spec: &Spec, target: &mut String, world: &mut World) {
    let Some(scheme) = spec.scheme.as_deref() else {
        return;
    };
    let path = target.split('?').next().unwrap_or("").to_string();
    let rel = signed_path(spec, &path);
    let size = spec
        .size
        .or_else(|| header_u64(&spec.headers, "upload-length"))
        .or_else(|| header_u64(&spec.headers, "x-total-size"))
        .or_else(|| header_u64(&spec.headers, "content-length"))
        .unwrap_or(spec.body.len() as u64);
    let ct = header(&spec.headers, "content-type").unwrap_or("application/octet-stream");
    let sep = if target.contains('?') { '&' } else { '?' };
    let query = match scheme {
        "v" => format!("v={}", mac_hex(format!("{rel} {size}").as_bytes())),
        "v2" | "token" => {
            let m = mac_hex(format!("{rel}\0{size}\0{ct}").as_bytes());
            format!("{scheme}={m}")
        }
        "v3" => {
            let expires = xferd::core::unix_secs(std::time::SystemTime::now()) + 600;
            let m = mac_hex(format!("{}\n{expires}\n/{rel}", spec.method).as_bytes());
            format!("v3={m}&expires={expires}")
        }
        _ => return,
    };
    target.push(sep);
    target.push_str(&query);
    if spec.method == "POST" && rel == "upload" {
        world.form_signed = true;
    }
    world.signed.insert(rel);
}

fn build_head(spec: &Spec, target: &str, world: &World) -> Option<http::request::Parts> {
    let method = http::Method::from_bytes(spec.method.as_bytes()).ok()?;
    let mut b = http::Request::builder().method(method).uri(target);
    for (name, value) in &spec.headers {
        let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&world.fill(value)),
        ) else {
            continue;
        };
        b = b.header(n, v);
    }
    b.body(()).ok().map(|r| r.into_parts().0)
}

/// The body as delivered: the frames, the cut, the error.
fn frames(spec: &Spec) -> (Vec<Result<bytes::Bytes, BodyError>>, Vec<u8>) {
    let sent = match spec.cut {
        Some(n) => &spec.body[..n.min(spec.body.len())],
        None => &spec.body[..],
    };
    let mut out = Vec::new();
    let mut rest = sent;
    for &n in &spec.frames {
        if rest.is_empty() {
            break;
        }
        let (a, b) = rest.split_at(n.min(rest.len()));
        out.push(Ok(bytes::Bytes::copy_from_slice(a)));
        rest = b;
    }
    if !rest.is_empty() {
        out.push(Ok(bytes::Bytes::copy_from_slice(rest)));
    }
    if spec.error {
        out.push(Err(BodyError("fuzz: connection reset".into())));
    }
    (out, sent.to_vec())
}

async fn keys(fc: &FuzzCore) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let listed = fc.store.list("", None, 10_000).await.expect("mem list");
    for l in listed {
        let obj = fc
            .store
            .open(&l.key)
            .await
            .expect("mem open")
            .expect("a listed key opens");
        let len = usize::try_from(obj.meta().len).expect("small");
        let data = obj.read_at(0, len).await.expect("mem read");
        assert_eq!(data.len(), len, "{}: short read", l.key.as_str());
        out.insert(l.key.as_str().to_string(), data.to_vec());
    }
    out
}

/// Session ids handed out by `a`: the last segment of `Location`, a JSON `session_id`.
fn learn_ids(a: &Answer, world: &mut World) {
    if let Some(loc) = a.headers.get("location").and_then(|v| v.to_str().ok()) {
        if let Some(id) = loc.rsplit('/').next().filter(|s| !s.is_empty()) {
            world.ids.push(id.to_string());
        }
    }
    if let Ok(v) = serde_json_lite(&a.body) {
        world.ids.push(v);
    }
}

/// `"session_id":"..."` in a JSON body (no JSON crate needed for one string field).
fn serde_json_lite(body: &[u8]) -> Result<String, ()> {
    let text = std::str::from_utf8(body).map_err(|_| ())?;
    let at = text.find("\"session_id\":\"").ok_or(())? + 14;
    let end = text[at..].find('"').ok_or(())?;
    Ok(text[at..at + end].to_string())
}

fn check_status(a: &Answer, what: &str) {
    let code = a
        .headers
        .get("xferd-error")
        .map(|v| v.to_str().expect("ASCII code").to_string());
    assert_eq!(
        code.is_some(),
        a.status.as_u16() >= 400,
        "{what}: status {} with xferd-error {code:?}",
        a.status
    );
    if a.status.is_server_error() {
        let allowed = matches!(
            (a.status.as_u16(), code.as_deref()),
            (507, Some("insufficient_storage" | "quota_exceeded"))
                | (503, Some("buffers_exhausted"))
        );
        assert!(
            allowed,
            "{what}: {} {code:?} over a store that never fails: {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        );
    }
    assert!(
        a.body_error.is_none(),
        "{what}: body failed: {:?}",
        a.body_error
    );
}

fn check_download(spec: &Spec, a: &Answer, rel: &str, world: &World, what: &str) {
    let get = spec.method == "GET";
    if !get || !matches!(a.status.as_u16(), 200 | 206) {
        return;
    }
    assert_eq!(a.body.len() as u64, a.announced, "{what}: announced length");
    if let Some(cl) = a.headers.get("content-length") {
        let cl: u64 = cl
            .to_str()
            .unwrap()
            .parse()
            .expect("numeric Content-Length");
        assert_eq!(a.body.len() as u64, cl, "{what}: Content-Length");
    }
    let stored = world.stored.get(rel);
    if a.status == 200 {
        if let Some(data) = stored {
            assert_eq!(
                &a.body, data,
                "{what}: 200 body differs from the stored object"
            );
        }
        return;
    }
    let Some(cr) = a.headers.get("content-range").and_then(|v| v.to_str().ok()) else {
        return; // multipart/byteranges
    };
    let spec_range = cr.strip_prefix("bytes ").expect("Content-Range unit");
    let (span, total) = spec_range.split_once('/').expect("Content-Range total");
    let (s, e) = span.split_once('-').expect("Content-Range span");
    let (s, e): (u64, u64) = (s.parse().unwrap(), e.parse().unwrap());
    assert!(s <= e, "{what}: {cr}");
    assert_eq!(a.body.len() as u64, e - s + 1, "{what}: {cr}");
    if let Some(data) = stored {
        assert_eq!(total, data.len().to_string(), "{what}: {cr}");
        assert_eq!(&a.body[..], &data[s as usize..=e as usize], "{what}: {cr}");
    }
}

fn is_session_route(path: &str) -> bool {
    path.starts_with(fuzz_entry::TUS_PATH)
        || path.starts_with(fuzz_entry::IETF_PATH)
        || path == "/chunked-upload"
}

/// See the module doc.
pub fn core_request(data: &[u8]) {
    let fc = fuzz_entry::mem_core(SECRET);
    fuzz_entry::block_on(run(&fc, data)).expect("a runtime");
}

fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("CORE_REQUEST_TRACE").is_some())
}

async fn run(fc: &FuzzCore, data: &[u8]) {
    let mut world = World::default();
    let mut before = BTreeMap::new();
    for (i, raw) in split_requests(data)
        .into_iter()
        .take(MAX_REQUESTS)
        .enumerate()
    {
        let Some(spec) = parse(raw) else { continue };
        let mut target = world.fill(&spec.target);
        sign(&spec, &mut target, &mut world);
        let Some(head) = build_head(&spec, &target, &world) else {
            continue;
        };
        let path = head.uri.path().to_string();
        let rel = signed_path(&spec, &path);
        let plain_put = spec.method == "PUT"
            && !is_session_route(&path)
            && !xferd::core::resumable::ietf::is_creation(&head.headers);
        let (frames, sent) = frames(&spec);
        let what = format!("request {i}: {} {target}", spec.method);
        let a = fuzz_entry::exchange(fc, head, frames).await;
        if trace() {
            let code = a.headers.get("xferd-error");
            eprintln!("{what} -> {} {code:?} {} bytes", a.status, a.body.len());
        }
        check_status(&a, &what);
        check_download(&spec, &a, &rel, &world, &what);
        learn_ids(&a, &mut world);
        let after = keys(fc).await;
        for (k, v) in &before {
            assert_eq!(after.get(k), Some(v), "{what}: stored object {k} changed");
        }
        if !a.status.is_success() {
            let added: Vec<_> = after.keys().filter(|k| !before.contains_key(*k)).collect();
            assert!(
                added.is_empty(),
                "{what}: {} yet stored {added:?}",
                a.status
            );
        }
        for k in after.keys() {
            let form = world.form_signed && k.starts_with(&format!("{}/", fuzz_entry::FORM_DIR));
            assert!(
                world.signed.contains(k) || form,
                "{what}: stored {k}, which no signature covered"
            );
        }
        if plain_put && a.status == 201 {
            let data = after
                .get(&rel)
                .unwrap_or_else(|| panic!("{what}: 201 but {rel} absent"));
            assert_eq!(data, &sent, "{what}: stored bytes differ from the body");
            assert_eq!(
                Sha256::digest(data),
                Sha256::digest(&sent),
                "{what}: SHA-256"
            );
            if let Some(cl) = header_u64(&spec.headers, "content-length") {
                assert_eq!(
                    data.len() as u64,
                    cl,
                    "{what}: 201 for a body shorter than declared"
                );
            }
            assert!(
                Key::parse(&rel).is_ok(),
                "{what}: stored under an invalid key"
            );
            world.stored.insert(rel.clone(), data.clone());
        }
        before = after;
    }
}

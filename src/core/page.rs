//! The upload page: a self-contained HTML page, stylesheet and script (`assets/page/`,
//! embedded in the binary), served at [`PATH`] under a Content-Security-Policy that allows
//! nothing but the page's own origin ([`CSP`]: no inline script or style, no other origin,
//! no framing), and the capability check behind it.
//!
//! The link an operator mints (`xferd sign --page`) is `https://HOST/upload-page/#<token>`
//! (see [`crate::core::auth::page`]). The page's script sends the token as
//! `Authorization: Bearer <token>` on a tus creation request to the tus collection
//! (`POST /files/`); [`authorise`] then places the upload at
//! `<prefix>/<16 random hex digits>/<file name>`: the server picks the directory, so a link
//! cannot reach or overwrite anything another upload made, and the file name (tus
//! `Upload-Metadata` `filename`) is reduced to one safe path segment ([`safe_name`]).
//! Deferred lengths are refused under a page token (the size limit needs the length up
//! front). Concatenation (parallel chunk streams) is allowed: each partial declares its
//! length, at most the token's size, and a final is refused ([`check_final`]) when its
//! partials add up to more. As tus requires partials and final to share one target, a
//! client may name the directory itself for them, in `Upload-Metadata` `dir` (exactly 16
//! lower-case hex digits, still under the prefix; nothing is ever overwritten). Later `PATCH`/`HEAD`/`DELETE` requests use the upload URL
//! alone, as for every tus upload.

use crate::core::auth::AuthError;
use crate::core::body::Body;
use crate::core::error::CoreError;
use crate::core::path::{self, MAX_SEGMENT, RESERVED_PREFIX};
use crate::core::resumable::common::Authorised;
use crate::core::{header_str, response, unix_secs, Core};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use std::time::SystemTime;

/// Where the page is served (also without the trailing `/`).
pub const PATH: &str = "/upload-page/";

/// The page's policy: its own origin only; no inline code, no plugins, no framing, no
/// forms posting elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; media-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

const INDEX: &str = include_str!("../../assets/page/index.html");
const SCRIPT: &str = include_str!("../../assets/page/app.js");
const STYLE: &str = include_str!("../../assets/page/style.css");

/// True for the page's own paths.
pub fn is_page(path: &str) -> bool {
    path == PATH.trim_end_matches('/') || path.starts_with(PATH)
}

/// `GET`/`HEAD` of one of the page's files.
pub fn serve(core: &Core, head: &http::request::Parts) -> Result<Response<Body>, CoreError> {
    let name = head
        .uri
        .path()
        .strip_prefix(PATH)
        .unwrap_or_default()
        .trim_end_matches('/');
    let (body, ctype) = match name {
        "" | "index.html" => (
            Bytes::from(INDEX.replace("{{TUS_PATH}}", &html_attr(&core.settings.tus_path))),
            "text/html; charset=utf-8",
        ),
        "app.js" => (
            Bytes::from_static(SCRIPT.as_bytes()),
            "text/javascript; charset=utf-8",
        ),
        "style.css" => (
            Bytes::from_static(STYLE.as_bytes()),
            "text/css; charset=utf-8",
        ),
        _ => return Err(CoreError::NotFound),
    };
    let mut r = response::build(StatusCode::OK, Body::Full(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    Ok(r)
}

fn html_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The page token of a request (`Authorization: Bearer <token>`), if it carries one.
pub fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = header_str(h, header::AUTHORIZATION)?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Authorises a tus creation by its page token: valid MAC, not expired, a length given and
/// within the token's size; the target is chosen here (see the module docs).
pub fn authorise(
    core: &Core,
    head: &http::request::Parts,
    size: Option<u64>,
    now: SystemTime,
) -> Result<Authorised, CoreError> {
    let h = &head.headers;
    let token = bearer(h).ok_or(AuthError::Missing)?;
    let skew = core.settings.allowed_clock_skew.as_secs();
    let cap = core.keys.verify_capability(token, unix_secs(now), skew)?;
    let prefix = path::validate(&cap.prefix).map_err(|_| AuthError::Malformed)?;
    if h.contains_key("upload-defer-length") {
        return Err(CoreError::BadRequest(
            "upload-page links take uploads of a declared length".into(),
        ));
    }
    let is_final = header_str(h, "upload-concat").is_some_and(|c| c.starts_with("final;"));
    let size = match size {
        None if is_final => 0, // bounded by check_final
        other => other.ok_or(CoreError::LengthRequired)?,
    };
    if size > cap.max_size {
        return Err(CoreError::TooLarge {
            size,
            max: cap.max_size,
        });
    }
    let meta = header_str(h, "upload-metadata");
    let name = meta
        .and_then(|m| {
            crate::core::resumable::tus::metadata_value(m, "filename")
                .or_else(|| crate::core::resumable::tus::metadata_value(m, "name"))
        })
        .unwrap_or_default();
    let dir = meta
        .and_then(|m| crate::core::resumable::tus::metadata_value(m, "dir"))
        .filter(|d| d.len() == 16 && d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    let target = path::validate(&format!("{}/{dir}/{}", prefix.as_str(), safe_name(&name)))?;
    Ok(Authorised {
        target,
        signed_size: None,
    })
}

/// Characters escaped in a path segment of the download link.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The download path of `target` (under the URL prefix), percent-encoded.
pub fn download_path(core: &Core, target: &str) -> String {
    let mut out = String::new();
    let prefix = core.settings.prefix.as_str();
    for seg in prefix.split('/').chain(target.split('/')) {
        if !seg.is_empty() {
            out.push('/');
            out.extend(percent_encoding::utf8_percent_encode(seg, SEGMENT));
        }
    }
    out
}

/// Adds `Content-Location: <download path>` to a creation made with a page token (the page
/// shows the link: the server chose where the upload goes).
pub fn add_content_location(core: &Core, req: &HeaderMap, h: &mut HeaderMap, target: &str) {
    if bearer(req).is_none() {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(&download_path(core, target)) {
        h.insert(header::CONTENT_LOCATION, v);
    }
}

/// For a tus final (`Upload-Concat: final;...`) created with a page token: the partials
/// must exist and add up to at most the token's size. Anything else passes (a signed URL
/// has its own rules, checked in [`crate::core::resumable::common::authorise`]).
pub async fn check_final(
    core: &Core,
    head: &http::request::Parts,
    ids: &[String],
    now: SystemTime,
) -> Result<(), CoreError> {
    let Some(token) = bearer(&head.headers) else {
        return Ok(());
    };
    if head.uri.path() != core.settings.tus_path
        || crate::core::auth::SignedQuery::parse(head.uri.query()).is_signed()
    {
        return Ok(());
    }
    let skew = core.settings.allowed_clock_skew.as_secs();
    let cap = core.keys.verify_capability(token, unix_secs(now), skew)?;
    let mut total = 0u64;
    for id in ids {
        let part = core.engine.info(id, unix_secs(now)).await?;
        total = total.saturating_add(part.length.ok_or(CoreError::LengthRequired)?);
    }
    if total > cap.max_size {
        return Err(CoreError::TooLarge {
            size: total,
            max: cap.max_size,
        });
    }
    Ok(())
}

/// A file name reduced to one valid path segment: the part after the last `/` or `\`,
/// control characters replaced by `_`, leading dots and spaces dropped (no hidden files, no
/// reserved `.xferd` names), at most [`MAX_SEGMENT`] bytes (the extension kept when it is
/// short); `file` when nothing is left.
pub fn safe_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = base
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    let clean = clean.trim().trim_start_matches(['.', ' ']);
    let mut out = clean.to_string();
    if out.len() > MAX_SEGMENT {
        let ext = out
            .rfind('.')
            .map(|i| out[i..].to_string())
            .filter(|e| e.len() <= 16)
            .unwrap_or_default();
        let mut cut = MAX_SEGMENT - ext.len();
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(&ext);
    }
    if out.is_empty() || out.starts_with(RESERVED_PREFIX) {
        return "file".into();
    }
    out
}

/// The link `xferd sign --page` prints: `<base>upload-page/#<token>` (`base` ends in `/`).
pub fn link(base: &str, token: &str) -> String {
    format!("{}{}#{token}", base, PATH.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_one_safe_segment() {
        let cases = [
            ("photo.jpg", "photo.jpg"),
            ("../../etc/passwd", "passwd"),
            ("C:\\Users\\me\\a b.txt", "a b.txt"),
            ("..", "file"),
            ("", "file"),
            ("  .hidden", "hidden"),
            (".xferd-tmp", "xferd-tmp"),
            ("a\nb\u{0}.txt", "a_b_.txt"),
            ("dir/", "file"),
            ("Été 2026.mp4", "Été 2026.mp4"),
        ];
        for (input, want) in cases {
            let got = safe_name(input);
            assert_eq!(got, want, "{input:?}");
            assert!(path::validate(&format!("p/0123/{got}")).is_ok(), "{got:?}");
        }
        let long = format!("{}.webm", "é".repeat(300));
        let got = safe_name(&long);
        assert!(got.len() <= MAX_SEGMENT && got.ends_with(".webm"), "{got}");
    }

    #[test]
    fn bearer_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  xp1.a "),
        );
        assert_eq!(bearer(&h), Some("xp1.a"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic xp1.a"),
        );
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer "));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn paths_and_links() {
        assert!(is_page("/upload-page") && is_page("/upload-page/app.js"));
        assert!(!is_page("/upload-pages") && !is_page("/x/upload-page/"));
        assert_eq!(
            link("https://h:8443/", "xp1.t"),
            "https://h:8443/upload-page/#xp1.t"
        );
    }
}

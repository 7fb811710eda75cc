//! tus 1.0.0 over the session engine (the tus resumable upload protocol 1.0.x,
//! tus.io/protocols/resumable-upload).
//!
//! Extensions: creation, creation-with-upload, creation-defer-length, expiration, checksum,
//! checksum-trailer (every transport here passes request trailers: HTTP/1.1 chunked, HTTP/2
//! and HTTP/3 trailing headers), termination, concatenation, concatenation-unfinished. Creation is a `POST` to a signed
//! URL; the upload resource is `<tus_path><id>`. Concatenation needs a v3 signature, because
//! a v/v2 MAC binds the whole file's size, which a partial upload cannot show.

use super::checksum::{self, Expected, Wanted};
use super::common::{authorise, content_length, header_u64, owner_of, session_id};
use super::engine::{NewSession, Placement, SessionError, Write};
use super::session::{Kind, Origin, Session};
use crate::core::body::{Body, BodyStream};
use crate::core::error::CoreError;
use crate::core::response;
use crate::core::{header_str, Core, Ctx};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use std::time::{Duration, UNIX_EPOCH};

pub const VERSION: &str = "1.0.0";
pub const EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,expiration,checksum,checksum-trailer,termination,concatenation,concatenation-unfinished";
const OFFSET_STREAM: &str = "application/offset+octet-stream";

/// True when a request speaks tus (carries `Tus-Resumable`).
pub fn is_tus(h: &HeaderMap) -> bool {
    h.contains_key("tus-resumable")
}

/// Requests under the tus path: OPTIONS, HEAD, PATCH, DELETE on upload resources.
pub async fn resource(
    core: &Core,
    head: &http::request::Parts,
    body: &mut BodyStream,
    ctx: &Ctx,
) -> Response<Body> {
    if head.method == Method::OPTIONS {
        return options(core);
    }
    if let Some(r) = version_refusal(core, &head.headers) {
        return finish(core, Ok(r));
    }
    let result = async {
        let base = &core.settings.tus_path;
        if head.method == Method::POST
            && head.uri.path() == base.as_str()
            && crate::core::page::bearer(&head.headers).is_some()
        {
            // An upload-page creation: the collection plus a page token.
            return create_inner(core, head, body, ctx).await;
        }
        let Some(id) = session_id(head.uri.path(), base) else {
            return Err(if head.method == Method::POST {
                CoreError::BadRequest("create uploads by POSTing to a signed URL".into())
            } else {
                SessionError::NotFound.into()
            });
        };
        let now = ctx.unix();
        match head.method {
            Method::HEAD => {
                let s = core.engine.info_settled(id, now).await?;
                Ok(status_response(core, &s, StatusCode::OK))
            }
            Method::PATCH => patch(core, head, body, id, ctx).await,
            Method::DELETE => {
                core.engine.terminate(id, now).await?;
                Ok(response::build(StatusCode::NO_CONTENT, Body::Empty))
            }
            _ => Err(CoreError::MethodNotAllowed),
        }
    }
    .await;
    finish(core, result)
}

/// `POST` with `Tus-Resumable` to a signed URL: creates an upload (maybe with data).
pub async fn create(
    core: &Core,
    head: &http::request::Parts,
    body: &mut BodyStream,
    ctx: &Ctx,
) -> Response<Body> {
    if let Some(r) = version_refusal(core, &head.headers) {
        return finish(core, Ok(r));
    }
    finish(core, create_inner(core, head, body, ctx).await)
}

async fn create_inner(
    core: &Core,
    head: &http::request::Parts,
    body: &mut BodyStream,
    ctx: &Ctx,
) -> Result<Response<Body>, CoreError> {
    let h = &head.headers;
    let now = ctx.unix();
    let length = header_u64(h, "upload-length")?;
    let deferred = header_str(h, "upload-defer-length").map(str::trim);
    match (length, deferred) {
        (Some(_), Some(_)) => {
            return Err(CoreError::BadRequest(
                "both Upload-Length and Upload-Defer-Length".into(),
            ))
        }
        (None, Some("1")) | (Some(_), None) => {}
        (None, Some(_)) => {
            return Err(CoreError::BadRequest(
                "Upload-Defer-Length must be 1".into(),
            ))
        }
        (None, None) if concat_header(h).is_some_and(|c| c.starts_with("final")) => {}
        (None, None) => {
            return Err(CoreError::BadRequest(
                "Upload-Length or Upload-Defer-Length: 1 is required".into(),
            ))
        }
    }
    if let Some(len) = length {
        let max = core.engine.limits().max_length;
        if len > max {
            return Err(SessionError::TooLarge { max }.into());
        }
    }
    let metadata = header_str(h, "upload-metadata").map(str::to_string);
    let filetype = metadata
        .as_deref()
        .and_then(|m| metadata_value(m, "filetype"));
    let extra: Vec<&str> = filetype.iter().map(String::as_str).collect();
    let concat = concat_header(h);
    let signed_for = match concat {
        Some(c) if c.starts_with("final") => None,
        _ => length,
    };
    let auth = authorise(
        core,
        head,
        None,
        signed_for,
        &["POST", "PUT"],
        &extra,
        ctx.now,
    )?;
    // The same admission as every other way in; a final is admitted by its own target.
    crate::core::upload::admit(core, &auth.target, length).await?;
    let mut new = NewSession {
        origin: Origin::Tus,
        kind: Kind::Whole,
        target: auth.target,
        length,
        signed_size: auth.signed_size,
        metadata,
        owner: owner_of(ctx.peer),
        expected_sha256: None,
        chunk_size: None,
    };
    // Read before anything is created: a zero-length upload completes at creation, and a
    // malformed Content-Length found after it would answer 400 for a stored file (found by
    // the `core_request` fuzz target).
    let declared = content_length(h)?;
    if length == Some(0) && declared.unwrap_or(0) > 0 {
        return Err(SessionError::LengthExceeded.into());
    }
    let session = match concat {
        Some("partial") => {
            if auth.signed_size.is_some() {
                return Err(CoreError::BadRequest(
                    "concatenation needs a v3 signed URL (v/v2 bind the whole file's size)".into(),
                ));
            }
            new.kind = Kind::Partial;
            core.resilience
                .run_session("create", core.engine.create(new, now))
                .await?
        }
        Some(c) if c.starts_with("final;") => {
            let ids = parse_final(c, &core.settings.tus_path)?;
            crate::core::page::check_final(core, head, &ids, ctx.now).await?;
            new.length = None;
            let s = core
                .resilience
                .run_session("concat", core.engine.create_final(new, ids, now))
                .await?;
            let mut r = status_response(core, &s, StatusCode::CREATED);
            add_location(&mut r, core, &s);
            crate::core::page::add_content_location(core, h, r.headers_mut(), &s.target);
            return Ok(r);
        }
        Some(_) => {
            return Err(CoreError::BadRequest(
                "Upload-Concat must be `partial` or `final;<urls>`".into(),
            ))
        }
        None => {
            core.resilience
                .run_session("create", core.engine.create(new, now))
                .await?
        }
    };
    // creation-with-upload: the body is the first chunk.
    let with_data = declared.unwrap_or(0) > 0
        && header_str(h, header::CONTENT_TYPE).is_some_and(|c| c.starts_with(OFFSET_STREAM));
    let session = if with_data {
        let w = Write {
            placement: Placement::Append { offset: 0 },
            declared_len: declared,
            checksum: checksum_of(h, ctx)?,
            last: false,
            lease: None,
        };
        match super::common::write(core, ctx, &session.id, w, body).await {
            Ok(s) => s,
            // The upload exists; what arrived is kept and the client resumes from HEAD.
            Err(SessionError::Interrupted(_)) => core.engine.info(&session.id, now).await?,
            Err(e) => return Err(e.into()),
        }
    } else {
        session
    };
    let mut r = status_response(core, &session, StatusCode::CREATED);
    add_location(&mut r, core, &session);
    super::common::add_hint(core, ctx, r.headers_mut(), session.length);
    crate::core::page::add_content_location(core, h, r.headers_mut(), &session.target);
    Ok(r)
}

async fn patch(
    core: &Core,
    head: &http::request::Parts,
    body: &mut BodyStream,
    id: &str,
    ctx: &Ctx,
) -> Result<Response<Body>, CoreError> {
    let now = ctx.unix();
    let h = &head.headers;
    if !header_str(h, header::CONTENT_TYPE).is_some_and(|c| c.starts_with(OFFSET_STREAM)) {
        return Err(CoreError::ExtensionNotAllowed(format!(
            "Content-Type must be {OFFSET_STREAM}"
        )));
    }
    let offset = header_u64(h, "upload-offset")?
        .ok_or_else(|| CoreError::BadRequest("Upload-Offset is required".into()))?;
    let info = core.engine.info(id, now).await?;
    if matches!(info.kind, Kind::Final { .. }) {
        return Err(CoreError::Forbidden("a final upload cannot be patched"));
    }
    if let Some(len) = header_u64(h, "upload-length")? {
        core.engine.set_length(id, len, now).await?;
    }
    let w = Write {
        placement: Placement::Append { offset },
        declared_len: content_length(h)?,
        checksum: checksum_of(h, ctx)?,
        last: false,
        lease: None,
    };
    let s = super::common::write(core, ctx, id, w, body).await?;
    let mut r = response::build(StatusCode::NO_CONTENT, Body::Empty);
    r.headers_mut().remove(header::CONTENT_LENGTH);
    add_offset_headers(r.headers_mut(), &s);
    super::common::add_hint(core, ctx, r.headers_mut(), s.length);
    Ok(r)
}

/// The request's checksum: the `Upload-Checksum` header, or (checksum-trailer) the trailer
/// announced by `Trailer: Upload-Checksum`.
fn checksum_of(h: &HeaderMap, ctx: &Ctx) -> Result<Option<Wanted>, CoreError> {
    if let Some(v) = header_str(h, "upload-checksum") {
        return Expected::parse_tus(v)
            .map(|e| Some(Wanted::Header(e)))
            .map_err(|e| SessionError::Checksum(e).into());
    }
    let announced = h
        .get_all(header::TRAILER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|name| name.trim().eq_ignore_ascii_case("upload-checksum"));
    match (announced, &ctx.trailers) {
        (false, _) => Ok(None),
        (true, Some(slot)) => Ok(Some(Wanted::Trailer(slot.clone()))),
        (true, None) => Err(CoreError::BadRequest(
            "this transport cannot carry an Upload-Checksum trailer".into(),
        )),
    }
}

/// The 412 answer to a request without `Tus-Resumable: 1.0.0`, if this is one.
fn version_refusal(core: &Core, h: &HeaderMap) -> Option<Response<Body>> {
    if header_str(h, "tus-resumable") == Some(VERSION) {
        return None;
    }
    let err = CoreError::BadRequest("unsupported tus version".into());
    let mut r = response::error(&err, core.settings.auth_failure_status);
    *r.status_mut() = StatusCode::PRECONDITION_FAILED;
    r.headers_mut()
        .insert("tus-version", HeaderValue::from_static(VERSION));
    Some(r)
}

fn concat_header(h: &HeaderMap) -> Option<&str> {
    header_str(h, "upload-concat").map(str::trim)
}

/// `final;/files/a https://host/files/b` -> ids.
pub fn parse_final(value: &str, base: &str) -> Result<Vec<String>, CoreError> {
    let list = value.strip_prefix("final;").unwrap_or("");
    let mut ids = Vec::new();
    for url in list.split_whitespace() {
        let path = url
            .find("://")
            .and_then(|i| url[i + 3..].find('/').map(|j| &url[i + 3 + j..]))
            .unwrap_or(url);
        let id = session_id(path, base).ok_or_else(|| {
            CoreError::BadRequest(format!("`{url}` is not an upload of this server"))
        })?;
        ids.push(id.to_string());
    }
    if ids.is_empty() || ids.len() > 1000 {
        return Err(CoreError::BadRequest(
            "Upload-Concat: final needs 1 to 1000 uploads".into(),
        ));
    }
    Ok(ids)
}

/// One value of `Upload-Metadata` (`key base64,key2 base64`), decoded.
pub fn metadata_value(metadata: &str, key: &str) -> Option<String> {
    use base64::Engine as _;
    metadata.split(',').find_map(|pair| {
        let mut it = pair.trim().splitn(2, ' ');
        (it.next()? == key).then(|| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(it.next().unwrap_or(""))
                .ok()?;
            String::from_utf8(raw).ok()
        })?
    })
}

fn status_response(core: &Core, s: &Session, status: StatusCode) -> Response<Body> {
    let mut r = response::build(status, Body::Empty);
    if status == StatusCode::OK {
        // HEAD: no body, but Content-Length would describe one; leave it out.
        r.headers_mut().remove(header::CONTENT_LENGTH);
    }
    let h = r.headers_mut();
    add_offset_headers(h, s);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match s.length {
        Some(len) => {
            h.insert("upload-length", HeaderValue::from(len));
        }
        None if !matches!(s.kind, Kind::Final { .. }) => {
            h.insert("upload-defer-length", HeaderValue::from_static("1"));
        }
        None => {}
    }
    if let Some(m) = &s.metadata {
        if let Ok(v) = HeaderValue::from_str(m) {
            h.insert("upload-metadata", v);
        }
    }
    match &s.kind {
        Kind::Partial => {
            h.insert("upload-concat", HeaderValue::from_static("partial"));
        }
        Kind::Final { parts } => {
            let urls: Vec<String> = parts
                .iter()
                .map(|p| format!("{}{p}", core.settings.tus_path))
                .collect();
            if let Ok(v) = HeaderValue::from_str(&format!("final;{}", urls.join(" "))) {
                h.insert("upload-concat", v);
            }
        }
        Kind::Whole => {}
    }
    r
}

fn add_offset_headers(h: &mut HeaderMap, s: &Session) {
    if !matches!(s.kind, Kind::Final { .. }) || s.completed.is_some() {
        h.insert("upload-offset", HeaderValue::from(s.offset()));
    }
    if let Some(done) = &s.completed {
        // The stored file's SHA-256 (RFC 9530), as for a single PUT.
        if let Ok(d) = hex::decode(&done.sha256) {
            if let Ok(v) = HeaderValue::from_str(&checksum::repr_digest(&d)) {
                h.insert("repr-digest", v);
            }
        }
    }
    let expires = UNIX_EPOCH + Duration::from_secs(s.expires);
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(expires)) {
        h.insert("upload-expires", v);
    }
}

fn add_location(r: &mut Response<Body>, core: &Core, s: &Session) {
    if let Ok(v) = HeaderValue::from_str(&format!("{}{}", core.settings.tus_path, s.id)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
}

fn options(core: &Core) -> Response<Body> {
    let mut r = response::preflight();
    let h = r.headers_mut();
    h.insert("tus-version", HeaderValue::from_static(VERSION));
    h.insert("tus-extension", HeaderValue::from_static(EXTENSIONS));
    h.insert(
        "tus-max-size",
        HeaderValue::from(core.engine.limits().max_length),
    );
    h.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static(checksum::ALGORITHMS),
    );
    r
}

/// Adds `Tus-Resumable` and maps errors through [`response::error`] (with the configured
/// `auth_failure_status`, like every other protocol), then applies tus's own statuses (460
/// for a checksum mismatch; 412 for an unsupported version, in [`version_refusal`]).
fn finish(core: &Core, result: Result<Response<Body>, CoreError>) -> Response<Body> {
    let mut r = match result {
        Ok(r) => r,
        Err(e) => {
            let mut r = response::error(&e, core.settings.auth_failure_status);
            match &e {
                CoreError::Session(SessionError::ChecksumMismatch) => {
                    *r.status_mut() = StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST)
                }
                CoreError::Session(SessionError::OffsetMismatch { expected, .. }) => {
                    r.headers_mut()
                        .insert("upload-offset", HeaderValue::from(*expected));
                }
                _ => {}
            }
            r
        }
    };
    r.headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(VERSION));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_final_parsing() {
        assert_eq!(
            metadata_value(
                "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential",
                "filename"
            )
            .as_deref(),
            Some("world_domination_plan.pdf")
        );
        assert_eq!(
            metadata_value("is_confidential,filename Zm9v", "is_confidential").as_deref(),
            Some("")
        );
        assert_eq!(metadata_value("filename Zm9v", "filetype"), None);
        let a = "0123456789abcdef0123456789abcdef";
        let b = "fedcba9876543210fedcba9876543210";
        let ids = parse_final(
            &format!("final;/files/{a} https://h:1/files/{b}"),
            "/files/",
        )
        .unwrap();
        assert_eq!(ids, vec![a.to_string(), b.to_string()]);
        assert!(parse_final("final;/other/x", "/files/").is_err());
        assert!(parse_final("final;", "/files/").is_err());
    }
}

//! The IETF "Resumable Uploads for HTTP" draft (draft-ietf-httpbis-resumable-upload) over
//! the session engine, interop versions 6 to 10 (drafts -04/-05 to -13), keyed by the
//! request's `Upload-Draft-Interop-Version` (absent: the newest).
//!
//! - Creation: a `PUT`/`POST` with `Upload-Complete` to a signed URL. Where the transport
//!   can send informational responses (HTTP/3 here; hyper 1.x cannot send a 1xx), a
//!   `104 Upload Resumption Supported` with `Location` goes out before the body is read, so
//!   an interrupted creation can resume. Without it, the client learns the upload resource
//!   only from the final response and restarts an interrupted creation from scratch.
//! - Offset retrieval: `HEAD` (and, from version 9, `GET`) -> 204 with `Upload-Offset`,
//!   `Upload-Complete`, `Upload-Length`, `Upload-Limit`, `Cache-Control: no-store`.
//! - Append: `PATCH` with `application/partial-upload` (version 6 also accepts
//!   `application/offset+octet-stream`), `Upload-Offset`, `Upload-Complete` (required from
//!   version 7; in 6 its absence means "complete").
//! - Mismatched offset: 409, problem details `mismatching-upload-offset` with
//!   `expected-offset`/`provided-offset`. Inconsistent length: 400,
//!   `inconsistent-upload-length`. `DELETE` cancels (204). `OPTIONS` carries `Upload-Limit`.
//! - `Repr-Digest: sha-256=:..:` on creation is checked when the upload completes.

use super::checksum::{self, parse_repr_digest};
use super::common::{authorise, content_length, header_sf_bool, header_u64, owner_of, session_id};
use super::engine::{NewSession, Placement, SessionError, Write};
use super::session::{Kind, Origin, Session};
use crate::core::body::{Body, BodyStream};
use crate::core::error::CoreError;
use crate::core::response;
use crate::core::{header_str, Core, Ctx};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

pub const NEWEST: u32 = 10;
pub const OLDEST: u32 = 6;
const PROBLEM_BASE: &str = "https://iana.org/assignments/http-problem-types#";

/// True when a request creates an IETF-draft upload.
pub fn is_creation(h: &HeaderMap) -> bool {
    h.contains_key("upload-complete") || h.contains_key("upload-draft-interop-version")
}

/// The request's `Upload-Draft-Interop-Version` (absent: [`NEWEST`]).
pub fn version(h: &HeaderMap) -> Result<u32, CoreError> {
    // Present but not visible ASCII reads as empty (refused), not as absent.
    let value = h.get("upload-draft-interop-version");
    match value.map(|v| v.to_str().unwrap_or("")) {
        None => Ok(NEWEST),
        // Plain digits only (a structured-field integer has no `+`).
        Some(v) => match Some(v.trim())
            .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
            .map(str::parse::<u32>)
        {
            Some(Ok(n)) if (OLDEST..=NEWEST).contains(&n) => Ok(n),
            _ => Err(CoreError::BadRequest(format!(
                "unsupported Upload-Draft-Interop-Version (supported: {OLDEST} to {NEWEST})"
            ))),
        },
    }
}

/// `Upload-Limit` as this server applies it.
/// `Upload-Limit`; with `append`, `max-append-size` carries the adaptive chunk advice
/// (advice only: longer appends are still accepted).
pub fn upload_limit(core: &Core, append: Option<u64>) -> HeaderValue {
    let l = core.engine.limits();
    let mut v = format!(
        "max-size={}, min-size=0, max-age={}",
        l.max_length, l.ttl_secs
    );
    if let Some(a) = append {
        v.push_str(&format!(", max-append-size={a}"));
    }
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("min-size=0"))
}

/// `PUT`/`POST` with `Upload-Complete` to a signed URL.
pub async fn create(
    core: &Core,
    head: &http::request::Parts,
    body: &mut BodyStream,
    ctx: &Ctx,
) -> Response<Body> {
    let v = version(&head.headers).unwrap_or(NEWEST);
    finish(core, v, create_inner(core, head, body, ctx).await)
}

async fn create_inner(
    core: &Core,
    head: &http::request::Parts,
    body: &mut BodyStream,
    ctx: &Ctx,
) -> Result<Response<Body>, CoreError> {
    let h = &head.headers;
    let v = version(h)?;
    let now = ctx.unix();
    let complete = header_sf_bool(h, "upload-complete")?.unwrap_or(true);
    let declared_total = header_u64(h, "upload-length")?;
    let clen = content_length(h)?;
    let total = match (declared_total, complete, clen) {
        (Some(t), true, Some(c)) if t != c => {
            return Err(SessionError::LengthMismatch.into());
        }
        (Some(t), _, _) => Some(t),
        (None, true, Some(c)) => Some(c),
        _ => None,
    };
    // A zero-length upload completes at creation: content for it is refused first.
    if total == Some(0) && clen.unwrap_or(0) > 0 {
        return Err(SessionError::LengthExceeded.into());
    }
    let expected = header_str(h, "repr-digest")
        .map(parse_repr_digest)
        .transpose()
        .map_err(SessionError::from)?
        .flatten();
    let auth = authorise(
        core,
        head,
        None,
        total,
        &[head.method.as_str(), "PUT", "POST"],
        &[],
        ctx.now,
    )?;
    crate::core::upload::admit(core, &auth.target, total).await?;
    let new = NewSession {
        origin: Origin::Ietf,
        kind: Kind::Whole,
        target: auth.target,
        length: total,
        signed_size: auth.signed_size,
        metadata: None,
        owner: owner_of(ctx.peer),
        expected_sha256: expected,
        chunk_size: None,
    };
    let session = core
        .resilience
        .run_session("create", core.engine.create(new, now))
        .await?;
    let location = format!("{}{}", core.settings.ietf_path, session.id);
    if let (Some(interim), true) = (&ctx.interim, h.contains_key("upload-draft-interop-version")) {
        let mut r = http::Response::new(());
        *r.status_mut() = StatusCode::from_u16(104).unwrap_or(StatusCode::CONTINUE);
        let rh = r.headers_mut();
        if let Ok(l) = HeaderValue::from_str(&location) {
            rh.insert(header::LOCATION, l);
        }
        rh.insert("upload-draft-interop-version", HeaderValue::from(v));
        rh.insert(
            "upload-limit",
            upload_limit(core, Some(core.adaptive.chunk(ctx, total))),
        );
        let _ = interim.send(r).await;
    }
    let w = Write {
        placement: Placement::Append { offset: 0 },
        declared_len: clen,
        checksum: None,
        last: complete,
        lease: None,
    };
    // A zero-length upload is complete at creation: there is nothing to write (writing
    // would answer 400 `completed_upload` for a stored file; found by `core_request`).
    let s = if session.completed.is_some() {
        session
    } else {
        match super::common::write(core, ctx, &session.id, w, body).await {
            Ok(s) => s,
            Err(SessionError::Interrupted(_)) => core.engine.info(&session.id, now).await?,
            Err(e) => return Err(e.into()),
        }
    };
    let mut r = outcome(core, ctx, v, &s, true);
    if let Ok(l) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, l);
    }
    Ok(r)
}

/// Requests on upload resources under the IETF path.
pub async fn resource(
    core: &Core,
    head: &http::request::Parts,
    body: &mut BodyStream,
    ctx: &Ctx,
) -> Response<Body> {
    let v = version(&head.headers).unwrap_or(NEWEST);
    if head.method == Method::OPTIONS {
        let mut r = response::preflight();
        r.headers_mut()
            .insert("upload-limit", upload_limit(core, None));
        return r;
    }
    let result = async {
        let v = version(&head.headers)?;
        let id =
            session_id(head.uri.path(), &core.settings.ietf_path).ok_or(SessionError::NotFound)?;
        let now = ctx.unix();
        match head.method {
            Method::HEAD => offset_response(core, &core.engine.info_settled(id, now).await?),
            Method::GET if v >= 9 => {
                offset_response(core, &core.engine.info_settled(id, now).await?)
            }
            Method::PATCH => append(core, v, head, body, id, ctx).await,
            Method::DELETE => {
                core.engine.terminate(id, now).await?;
                let mut r = response::build(StatusCode::NO_CONTENT, Body::Empty);
                r.headers_mut().remove(header::CONTENT_LENGTH);
                Ok(r)
            }
            _ => Err(CoreError::MethodNotAllowed),
        }
    }
    .await;
    finish(core, v, result)
}

async fn append(
    core: &Core,
    v: u32,
    head: &http::request::Parts,
    body: &mut BodyStream,
    id: &str,
    ctx: &Ctx,
) -> Result<Response<Body>, CoreError> {
    let now = ctx.unix();
    let h = &head.headers;
    let ct = header_str(h, header::CONTENT_TYPE).unwrap_or("");
    let ok_type = ct.starts_with("application/partial-upload")
        || (v == 6 && ct.starts_with("application/offset+octet-stream"));
    if !ok_type {
        return Err(CoreError::ExtensionNotAllowed(
            "Content-Type must be application/partial-upload".into(),
        ));
    }
    let offset = header_u64(h, "upload-offset")?
        .ok_or_else(|| CoreError::BadRequest("Upload-Offset is required".into()))?;
    let complete = match header_sf_bool(h, "upload-complete")? {
        Some(c) => c,
        None if v == 6 => true,
        None => return Err(CoreError::BadRequest("Upload-Complete is required".into())),
    };
    let s = core.engine.info(id, now).await?;
    if s.completed.is_some() {
        return Err(SessionError::AlreadyCompleted.into());
    }
    if let Some(total) = header_u64(h, "upload-length")? {
        core.engine.set_length(id, total, now).await?;
    }
    let w = Write {
        placement: Placement::Append { offset },
        declared_len: content_length(h)?,
        checksum: None,
        last: complete,
        lease: None,
    };
    let s = super::common::write(core, ctx, id, w, body).await?;
    Ok(outcome(core, ctx, v, &s, false))
}

/// The final response to a creation or append.
fn outcome(core: &Core, ctx: &Ctx, v: u32, s: &Session, creation: bool) -> Response<Body> {
    let done = s.completed.is_some();
    let status = if done || creation || v == 6 {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    };
    let body = match &s.completed {
        Some(c) => Body::json(
            &serde_json::json!({ "path": s.target, "size": s.length, "sha256": c.sha256 }),
        ),
        None => Body::Empty,
    };
    let mut r = response::build(status, body);
    if status == StatusCode::NO_CONTENT {
        r.headers_mut().remove(header::CONTENT_LENGTH);
    }
    let h = r.headers_mut();
    if done {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(c) = &s.completed {
            if let Ok(bytes) = hex::decode(&c.sha256) {
                if let Ok(d) = HeaderValue::from_str(&checksum::repr_digest(&bytes)) {
                    h.insert("repr-digest", d);
                }
            }
        }
    }
    h.insert(
        "upload-complete",
        HeaderValue::from_static(if done { "?1" } else { "?0" }),
    );
    h.insert("upload-offset", HeaderValue::from(s.offset()));
    let advice = super::common::add_hint(core, ctx, h, s.length);
    h.insert("upload-limit", upload_limit(core, Some(advice)));
    r
}

fn offset_response(core: &Core, s: &Session) -> Result<Response<Body>, CoreError> {
    let mut r = response::build(StatusCode::NO_CONTENT, Body::Empty);
    let h = r.headers_mut();
    h.remove(header::CONTENT_LENGTH);
    h.insert("upload-offset", HeaderValue::from(s.offset()));
    h.insert(
        "upload-complete",
        HeaderValue::from_static(if s.completed.is_some() { "?1" } else { "?0" }),
    );
    if let Some(len) = s.length {
        h.insert("upload-length", HeaderValue::from(len));
    }
    h.insert("upload-limit", upload_limit(core, None));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// Errors as problem details where the draft defines a type.
fn finish(core: &Core, v: u32, result: Result<Response<Body>, CoreError>) -> Response<Body> {
    let e = match result {
        Ok(r) => return r,
        Err(e) => e,
    };
    let mut r = response::error(&e, core.settings.auth_failure_status);
    let problem = match &e {
        CoreError::Session(SessionError::OffsetMismatch { expected, provided }) => {
            r.headers_mut()
                .insert("upload-offset", HeaderValue::from(*expected));
            r.headers_mut()
                .insert("upload-complete", HeaderValue::from_static("?0"));
            Some(serde_json::json!({
                "type": format!("{PROBLEM_BASE}mismatching-upload-offset"),
                "title": "offset from request does not match offset of resource",
                "expected-offset": expected,
                "provided-offset": provided,
            }))
        }
        CoreError::Session(SessionError::LengthMismatch | SessionError::LengthExceeded) => {
            Some(serde_json::json!({
                "type": format!("{PROBLEM_BASE}inconsistent-upload-length"),
                "title": "upload length is inconsistent with the content received",
            }))
        }
        CoreError::Session(SessionError::AlreadyCompleted) if v <= 8 => Some(serde_json::json!({
            "type": format!("{PROBLEM_BASE}completed-upload"),
            "title": "upload is already completed",
        })),
        CoreError::Session(SessionError::AlreadyCompleted) => {
            *r.status_mut() = StatusCode::BAD_REQUEST;
            Some(serde_json::json!({
                "type": format!("{PROBLEM_BASE}inconsistent-upload-length"),
                "title": "upload is already completed",
            }))
        }
        _ => None,
    };
    if let Some(p) = problem {
        let status = r.status();
        let headers = r.headers().clone();
        r = response::build(status, Body::json(&p));
        r.extensions_mut().insert(response::ErrorCode(e.code()));
        for (k, val) in headers.iter() {
            if k != header::CONTENT_LENGTH {
                r.headers_mut().insert(k.clone(), val.clone());
            }
        }
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
    }
    if matches!(
        e,
        CoreError::Session(SessionError::TooLarge { .. }) | CoreError::TooLarge { .. }
    ) {
        r.headers_mut()
            .insert("upload-limit", upload_limit(core, None));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "upload-draft-interop-version",
            HeaderValue::from_str(v).unwrap(),
        );
        h
    }

    /// Found by `fuzz/` (target `ietf_headers`): `+7` was read as version 7.
    #[test]
    fn interop_version_is_plain_digits() {
        assert_eq!(version(&HeaderMap::new()).unwrap(), NEWEST);
        assert_eq!(version(&with("7")).unwrap(), 7);
        assert_eq!(version(&with(" 06 ")).unwrap(), 6);
        for bad in ["+7", "-7", "5", "11", "", "7.0", "4294967303"] {
            assert!(version(&with(bad)).is_err(), "{bad:?}");
        }
        let mut odd = HeaderMap::new();
        let value = HeaderValue::from_bytes(b"\xff11").unwrap();
        odd.insert("upload-draft-interop-version", value);
        assert!(version(&odd).is_err(), "unreadable is not absent");
    }
}

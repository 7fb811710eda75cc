//! HFS compatibility endpoints over the session engine (as HMAC File Server 3.4
//! implements them):
//!
//! - `POST /chunked-upload` with `X-Filename` (the target path) and `X-Total-Size`, signed
//!   by a v3 `POST` signature over the target path -> 201 `{session_id, chunk_size,
//!   total_chunks}`;
//! - `PUT|POST /chunked-upload` with `X-Upload-Session-ID` and `X-Chunk-Number` (0-based):
//!   the chunk is written straight to its offset; chunks may arrive in any order and in
//!   parallel; a repeated chunk is acknowledged again; the last one completes the file;
//! - `GET /upload-status?session_id=` -> progress.
//!
//! Unlike HFS, chunks are never separate files copied together, and an invalid signature is
//! never accepted because a session id is known.

use super::common::{authorise, content_length, header_u64, owner_of};
use super::engine::{NewSession, Placement, SessionError, Write};
use super::session::{Kind, Origin, Session};
use crate::core::body::{Body, BodyStream};
use crate::core::error::CoreError;
use crate::core::path;
use crate::core::response;
use crate::core::{header_str, Core, Ctx};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

pub async fn chunked(
    core: &Core,
    head: &http::request::Parts,
    body: &mut BodyStream,
    ctx: &Ctx,
) -> Result<Response<Body>, CoreError> {
    match header_str(&head.headers, "x-upload-session-id") {
        Some(id) => chunk(core, head, body, id.trim(), ctx).await,
        None => create(core, head, ctx).await,
    }
}

async fn create(
    core: &Core,
    head: &http::request::Parts,
    ctx: &Ctx,
) -> Result<Response<Body>, CoreError> {
    let h = &head.headers;
    let name = header_str(h, "x-filename")
        .ok_or_else(|| CoreError::BadRequest("X-Filename is required".into()))?;
    let target = target_of(name)?;
    let total = header_u64(h, "x-total-size")?.ok_or(CoreError::LengthRequired)?;
    let auth = authorise(
        core,
        head,
        Some(target),
        Some(total),
        &["POST"],
        &[],
        ctx.now,
    )?;
    crate::core::upload::admit(core, &auth.target, Some(total)).await?;
    // On a store with a minimum part size (S3), chunk advice never goes below it: every
    // chunk but the last is then a valid part.
    let min_part = core.storage.capabilities().min_part_size;
    let chunk_size = core
        .adaptive
        .chunk(ctx, Some(total))
        .max(min_part)
        .min(total.max(1));
    let new = NewSession {
        origin: Origin::Hfs,
        kind: Kind::Whole,
        target: auth.target,
        length: Some(total),
        signed_size: auth.signed_size,
        metadata: None,
        owner: owner_of(ctx.peer),
        expected_sha256: None,
        chunk_size: Some(chunk_size),
    };
    let s = core
        .resilience
        .run_session("create", core.engine.create(new, ctx.unix()))
        .await?;
    let body = serde_json::json!({
        "session_id": s.id,
        "chunk_size": chunk_size,
        "total_chunks": total_chunks(total, chunk_size),
        "parallel_streams": core.settings.parallel_streams.min(total_chunks(total, chunk_size).max(1)),
    });
    Ok(json(StatusCode::CREATED, &body))
}

async fn chunk(
    core: &Core,
    head: &http::request::Parts,
    body: &mut BodyStream,
    id: &str,
    ctx: &Ctx,
) -> Result<Response<Body>, CoreError> {
    let now = ctx.unix();
    let n = header_u64(&head.headers, "x-chunk-number")?
        .ok_or_else(|| CoreError::BadRequest("X-Chunk-Number is required".into()))?;
    let s = core.engine.info(id, now).await?;
    let (total, size) = (s.length.unwrap_or(0), s.chunk_size.unwrap_or(1).max(1));
    let (offset, len) = chunk_span(n, size, total)
        .ok_or_else(|| CoreError::BadRequest(format!("chunk {n} is out of range")))?;
    if let Some(cl) = content_length(&head.headers)? {
        if cl != len {
            return Err(CoreError::BadRequest(format!(
                "chunk {n} must be {len} bytes, not {cl}"
            )));
        }
    }
    let checksum = match header_str(&head.headers, "upload-checksum") {
        Some(v) => Some(super::checksum::Wanted::Header(
            super::checksum::Expected::parse_tus(v).map_err(SessionError::Checksum)?,
        )),
        None => None,
    };
    let w = Write {
        placement: Placement::At { offset, len },
        declared_len: Some(len),
        checksum,
        last: false,
        lease: None,
    };
    let s = match super::common::write(core, ctx, id, w, body).await {
        Ok(s) => s,
        Err(SessionError::AlreadyCompleted) => s,
        Err(e) => return Err(e.into()),
    };
    let mut v = progress(&s);
    v["success"] = true.into();
    v["chunk"] = n.into();
    let mut r = json(StatusCode::OK, &v);
    super::common::add_hint(core, ctx, r.headers_mut(), s.length);
    Ok(r)
}

pub async fn status(
    core: &Core,
    head: &http::request::Parts,
    ctx: &Ctx,
) -> Result<Response<Body>, CoreError> {
    let id = head
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("session_id="))
        .ok_or_else(|| CoreError::BadRequest("session_id is required".into()))?;
    let s = core.engine.info(id, ctx.unix()).await?;
    let mut v = progress(&s);
    v["session_id"] = s.id.clone().into();
    v["filename"] = s.target.clone().into();
    v["chunk_size"] = s.chunk_size.into();
    v["total_chunks"] = total_chunks(s.length.unwrap_or(0), s.chunk_size.unwrap_or(1)).into();
    Ok(json(StatusCode::OK, &v))
}

fn progress(s: &Session) -> serde_json::Value {
    let total = s.length.unwrap_or(0);
    let uploaded = if s.completed.is_some() {
        total
    } else {
        s.received.covered()
    };
    let pct = if total == 0 {
        100.0
    } else {
        uploaded as f64 * 100.0 / total as f64
    };
    serde_json::json!({
        "uploaded_bytes": uploaded,
        "total_size": total,
        "progress": (pct * 100.0).round() / 100.0,
        "completed": s.completed.is_some(),
    })
}

/// The storage path an `X-Filename` names: leading `/` dropped, percent-decoded once,
/// validated like any request path.
pub fn target_of(x_filename: &str) -> Result<path::RelPath, path::PathError> {
    let decoded = percent_encoding::percent_decode_str(x_filename.trim_start_matches('/'))
        .decode_utf8()
        .map_err(|_| path::PathError::Encoding)?;
    path::validate(&decoded)
}

/// Offset and length of 0-based chunk `n` of `size` bytes in a `total`-byte upload, or
/// `None` when the chunk lies outside it.
pub fn chunk_span(n: u64, size: u64, total: u64) -> Option<(u64, u64)> {
    let offset = n.checked_mul(size).filter(|o| *o < total)?;
    Some((offset, size.min(total - offset)))
}

/// How many chunks of `chunk` bytes make `total` bytes.
pub fn total_chunks(total: u64, chunk: u64) -> u64 {
    total.div_ceil(chunk.max(1))
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = response::build(status, Body::json(v));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

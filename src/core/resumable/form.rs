//! HFS's `POST /upload`: a `multipart/form-data` body whose `file` field is streamed to disk
//! (never buffered whole) and stored at `<form_upload_dir>/<file name>` under the same
//! atomic, no-overwrite rules as `PUT`.
//!
//! Authorised by a v3 `POST` signature over `/upload` with an expiry. HFS's `X-Signature`
//! header (a MAC over the constant `/upload`, valid forever) only with
//! `security.compat_hfs_x_signature`, which start-up logs as insecure.

use crate::core::auth::{AuthError, Claim, SignedQuery};
use crate::core::body::{Body, BodyError, BodyStream};
use crate::core::error::CoreError;
use crate::core::path;
use crate::core::response;
use crate::core::stream::{Digests, Writer};
use crate::core::{header_str, unix_secs, Core, Ctx};
use futures_util::StreamExt;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use sha2::{Digest, Sha256};

/// Bytes of multipart framing and other fields tolerated beyond the file itself.
pub const FORM_OVERHEAD: u64 = 64 << 10;

pub async fn upload(
    core: &Core,
    head: &http::request::Parts,
    body: &mut BodyStream,
    ctx: &Ctx,
) -> Result<Response<Body>, CoreError> {
    authorise(core, head, ctx)?;
    let s = &core.settings;
    let ct = header_str(&head.headers, header::CONTENT_TYPE).unwrap_or("");
    let boundary = multer::parse_boundary(ct).map_err(|_| {
        CoreError::BadRequest("expected multipart/form-data with a boundary".into())
    })?;
    let stream = std::mem::replace(body, crate::core::body::empty_stream());
    let constraints = constraints(s.max_upload_size);
    let mut form = multer::Multipart::with_constraints(
        stream.map(|r| r.map_err(|BodyError(e)| e)),
        boundary,
        constraints,
    );
    while let Some(mut field) = form.next_field().await.map_err(form_error)? {
        if field.name() != Some("file") {
            continue;
        }
        let name = field
            .file_name()
            .ok_or_else(|| CoreError::BadRequest("the file field has no file name".into()))?
            .to_string();
        let rel = stored_path(&s.form_upload_dir, &name)?;
        // The store's `begin` below refuses a taken name (409).
        crate::core::upload::admit_limits(core, &rel, None)?;
        // Quota hook: the request's length bounds the file's (released on failure).
        let declared = header_str(&head.headers, header::CONTENT_LENGTH)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(s.max_upload_size);
        let reservation = core.quotas.reserve(rel.as_str(), declared)?;
        let staged = core
            .resilience
            // Failures count, a success does not (see `upload::put`: the commit does).
            .run_check("create", || core.storage.begin(&rel, None))
            .await?;
        let started = std::time::Instant::now();
        let digests = Digests {
            sha256: Some(Sha256::new()),
            check: None,
        };
        let lease = core.adaptive.lease(ctx, None).await?;
        // [scan] hook: the field is teed into the scanner (size unknown until it ends).
        let (sink, scan) = crate::core::scan::tee(
            core.scanning.as_ref(),
            staged.sink(),
            None,
            core.telemetry(),
        );
        let mut w = Writer::new(sink, 0, lease, digests);
        while let Some(chunk) = field.chunk().await.map_err(form_error)? {
            w.push(&chunk).await?;
        }
        let size = w.accepted();
        let (sink, digests) = w.finish().await?;
        drop(sink);
        if let Some(scan) = scan {
            scan.verdict(rel.as_str(), core.telemetry()).await?;
        }
        let digest: [u8; 32] = digests.sha256.unwrap_or_default().finalize().into();
        let sha = hex::encode(digest);
        // [deduplication] hook: identical content shares the stored copy.
        crate::core::dedup::commit(core, staged, digest, size).await?;
        reservation.commit_as(size);
        core.adaptive.observe(
            ctx,
            crate::core::Direction::Upload,
            size,
            started.elapsed(),
            None,
        );
        tracing::info!(path = %rel, size, sha256 = %sha, "stored form upload");
        let v = serde_json::json!({ "success": true, "path": rel.as_str(), "size": size, "sha256": sha });
        let mut r = response::build(StatusCode::CREATED, Body::json(&v));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // The digest as a PUT states it (the audit log reads it).
        if let Ok(raw) = hex::decode(&sha) {
            if let Ok(v) = HeaderValue::from_str(&super::checksum::repr_digest(&raw)) {
                r.headers_mut().insert("repr-digest", v);
            }
        }
        return Ok(r);
    }
    Err(CoreError::BadRequest("the form has no `file` field".into()))
}

/// The multipart limits for a form whose file may have `max_upload_size` bytes.
pub fn constraints(max_upload_size: u64) -> multer::Constraints {
    multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(max_upload_size.saturating_add(FORM_OVERHEAD))
            .per_field(max_upload_size),
    )
}

/// Where the form's file named `name` is stored: `<dir>/<name>`; a name with a `/` is
/// refused, and the result is validated like any request path.
pub fn stored_path(dir: &str, name: &str) -> Result<path::RelPath, path::PathError> {
    if name.contains('/') {
        return Err(path::PathError::Traversal);
    }
    path::validate(&format!("{dir}/{name}"))
}

fn form_error(e: multer::Error) -> CoreError {
    match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            CoreError::TooLarge { size: 0, max: 0 }
        }
        multer::Error::StreamReadFailed(e) => CoreError::BodyIncomplete(e.to_string()),
        other => CoreError::BadRequest(format!("malformed form: {other}")),
    }
}

fn authorise(core: &Core, head: &http::request::Parts, ctx: &Ctx) -> Result<(), CoreError> {
    let query = SignedQuery::parse(head.uri.query());
    if query.is_signed() {
        let claim = Claim {
            method: "POST",
            path: "upload",
            size: None,
            content_types: &[],
        };
        core.keys.verify(
            &query,
            &claim,
            unix_secs(ctx.now),
            core.settings.allowed_clock_skew.as_secs(),
        )?;
        return Ok(());
    }
    if core.settings.compat_hfs_x_signature {
        if let Some(sig) = header_str(&head.headers, "x-signature") {
            let tag = hex::decode(sig.trim()).map_err(|_| AuthError::Malformed)?;
            if core.keys.verify_raw(b"/upload", &tag) {
                tracing::warn!(
                    "accepted a replayable HFS X-Signature (compat_hfs_x_signature is on)"
                );
                return Ok(());
            }
            return Err(AuthError::Mismatch.into());
        }
    }
    Err(AuthError::Missing.into())
}

//! Single-shot signed uploads (`PUT`, XEP-0363).
//!
//! Order of checks, all before the first body byte is read (so `Expect: 100-continue` is
//! answered only after them): path rules -> signature present -> `Content-Length` present ->
//! signature valid -> [`admit_limits`] (size limit, extension) -> free space -> quota -> the
//! staged write begun (the store refuses a destination that is taken: 409). Then the body
//! streams into a temporary file beside the destination, hashed on the way, and is
//! committed with fsync + no-overwrite rename. Any failure removes the temporary file.

use super::auth::{Claim, SignedQuery};
use super::body::{Body, BodyStream};
use super::error::CoreError;
use super::{header_str, path, response, stream, unix_secs, Core};
use crate::storage::store::Staged;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

/// Space kept free on the storage filesystem beyond the upload itself.
const FREE_SPACE_MARGIN: u64 = 16 << 20;

pub async fn put(
    core: &Core,
    head: &http::request::Parts,
    body: &mut BodyStream,
    ctx: &super::Ctx,
) -> Result<Response<Body>, CoreError> {
    let now = ctx.now;
    let s = &core.settings;
    let rel = path::resolve(head.uri.path(), &s.prefix)?;
    let query = SignedQuery::parse(head.uri.query());
    if !query.is_signed() {
        return Err(super::auth::AuthError::Missing.into());
    }
    let size = match header_str(&head.headers, header::CONTENT_LENGTH) {
        None => return Err(CoreError::LengthRequired),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| CoreError::LengthRequired)?,
    };
    let types = signed_content_types(&head.headers, &rel, &[]);
    let claim = Claim {
        method: "PUT",
        path: rel.as_str(),
        size: Some(size),
        content_types: &types,
    };
    core.keys.verify(
        &query,
        &claim,
        unix_secs(now),
        s.allowed_clock_skew.as_secs(),
    )?;
    admit_limits(core, &rel, Some(size))?;
    let free = core
        .resilience
        .run_check("free_space", || core.storage.free_space())
        .await?;
    if free.is_some_and(|free| free < size.saturating_add(FREE_SPACE_MARGIN)) {
        return Err(CoreError::InsufficientStorage);
    }
    // Quota hook: the length is reserved before the body is read (released on failure).
    let reservation = core.quotas.reserve(rel.as_str(), size)?;
    // The store checks that the destination is free (one check: on S3 a HeadObject of the
    // key and its parents and a listing), so a taken one is refused before the body too.
    // A check for the breaker (failures count, a success does not): on S3 `begin` only
    // reads, and a store that answers reads says nothing about its writes (the commit does).
    let staged = core
        .resilience
        .run_check("create", || core.storage.begin(&rel, Some(size)))
        .await?;
    // On any error below, `staged` is dropped and the staged bytes removed.
    let started = std::time::Instant::now();
    let lease = core.adaptive.lease(ctx, Some(size)).await?;
    // [scan] hook: the body is teed into the scanner; its verdict comes before the commit.
    let (sink, scan) = super::scan::tee(
        core.scanning.as_ref(),
        staged.sink(),
        Some(size),
        core.telemetry(),
    );
    let sha256 = stream::receive(body, sink, size, lease).await?;
    if let Some(scan) = scan {
        scan.verdict(rel.as_str(), core.telemetry()).await?;
    }
    // [deduplication] hook: identical content shares the stored copy.
    super::dedup::commit(core, staged, sha256, size).await?;
    reservation.commit();
    core.adaptive
        .observe(ctx, super::Direction::Upload, size, started.elapsed(), None);
    tracing::info!(path = %rel, size, sha256 = %hex::encode(sha256), "stored");
    let body = Body::json(&serde_json::json!({
        "path": rel.as_str(),
        "size": size,
        "sha256": hex::encode(sha256),
    }));
    let mut resp = response::build(StatusCode::CREATED, body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&super::resumable::checksum::repr_digest(&sha256)) {
        h.insert("repr-digest", v);
    }
    Ok(resp)
}

/// Commits a finished staged write (on a filesystem: fsync + no-overwrite rename) under
/// the breaker; a destination taken meanwhile is the client's conflict (409), not a storage
/// failure.
pub async fn commit(core: &Core, staged: Box<dyn Staged>) -> Result<(), CoreError> {
    let job = async { staged.commit().await.map_err(CoreError::from) };
    core.resilience.run_once("commit", job).await
}

/// Content types a v2 signature may cover, in the order tried (Prosody's
/// mod_http_upload_external protocol v2 signs the type the client declared in its slot request):
/// the declared `Content-Type` (unless it is a resumable protocol's own media type),
/// `extra` (e.g. tus metadata's `filetype`), then the type guessed from the extension.
pub fn signed_content_types<'a>(
    headers: &'a http::HeaderMap,
    rel: &path::RelPath,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut types: Vec<&str> = Vec::new();
    if let Some(ct) = header_str(headers, header::CONTENT_TYPE) {
        if !ct.starts_with("application/offset+octet-stream")
            && !ct.starts_with("application/partial-upload")
        {
            types.push(ct);
        }
    }
    types.extend_from_slice(extra);
    let guessed = mime_guess::from_path(rel.file_name())
        .first_raw()
        .unwrap_or("application/octet-stream");
    if !types.contains(&guessed) {
        types.push(guessed);
    }
    types
}

/// The admission check of every way a file comes in - `PUT`, the form upload, and the
/// creation of a tus (whole, partial or final), IETF or HFS chunked upload - once its
/// signature has been verified (which bound the target path, already validated, and for
/// v/v2 its size): the size is within `max_upload_size` (when known; a deferred one is
/// checked as it becomes known), the extension is allowed, and no file exists at the target.
/// Where the staged write begins at once (`PUT`, the form), [`admit_limits`] and the store's
/// own check in `begin` do this with one existence check instead of two.
pub async fn admit(
    core: &Core,
    target: &path::RelPath,
    size: Option<u64>,
) -> Result<(), CoreError> {
    admit_limits(core, target, size)?;
    // Under the breaker like every storage call: a store that is down makes this the
    // request's first failure, and it must count (503 once the breaker opens, not 500s);
    // a check's success is not recorded (see `Resilience::run_check`).
    if core
        .resilience
        .run_check("exists", || core.storage.exists(target))
        .await?
    {
        return Err(CoreError::Exists);
    }
    Ok(())
}

/// [`admit`] without the existence check: the size limit, the allowed extensions, and no
/// key that a route of the server's own shadows ([`super::shadowed_by_route`]).
pub fn admit_limits(
    core: &Core,
    target: &path::RelPath,
    size: Option<u64>,
) -> Result<(), CoreError> {
    if super::shadowed_by_route(target) {
        return Err(CoreError::BadPath(path::PathError::Reserved));
    }
    let s = &core.settings;
    if let Some(size) = size.filter(|n| *n > s.max_upload_size) {
        return Err(CoreError::TooLarge {
            size,
            max: s.max_upload_size,
        });
    }
    if !s.allowed_extensions.is_empty() {
        let ext = target.extension().unwrap_or_default();
        if !s.allowed_extensions.contains(&ext) {
            return Err(CoreError::ExtensionNotAllowed(ext));
        }
    }
    Ok(())
}

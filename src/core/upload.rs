//! Single-shot signed uploads (`PUT`, XEP-0363).
//!
//! Order of checks, all before the first body byte is read (so `Expect: 100-continue` is
//! answered only after them): path rules -> signature present -> `Content-Length` present ->
//! signature valid -> size limit -> extension -> destination free -> free space. Then the
//! body streams into a temporary file beside the destination, hashed on the way, and is
//! committed with fsync + no-overwrite rename. Any failure removes the temporary file.

use super::auth::{Claim, SignedQuery};
use super::body::{Body, BodyStream};
use super::error::CoreError;
use super::{header_str, path, response, stream, unix_secs, Core};
use crate::storage::fs::CommitError;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use std::time::SystemTime;

/// Space kept free on the storage filesystem beyond the upload itself.
const FREE_SPACE_MARGIN: u64 = 16 << 20;

pub async fn put(
    core: &Core,
    head: &http::request::Parts,
    body: &mut BodyStream,
    now: SystemTime,
) -> Result<Response<Body>, CoreError> {
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
    let guessed = mime_guess::from_path(rel.file_name())
        .first_raw()
        .unwrap_or("application/octet-stream");
    let declared = header_str(&head.headers, header::CONTENT_TYPE);
    let mut types: Vec<&str> = declared.into_iter().collect();
    if declared != Some(guessed) {
        types.push(guessed);
    }
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
    if size > s.max_upload_size {
        return Err(CoreError::TooLarge {
            size,
            max: s.max_upload_size,
        });
    }
    check_destination(core, &rel).await?;
    if core.storage.available_bytes().await? < size.saturating_add(FREE_SPACE_MARGIN) {
        return Err(CoreError::InsufficientStorage);
    }
    let (temp, file) = core.storage.create_temp(&rel).await?;
    // On any error below, `temp` is dropped and the temporary file removed.
    let (file, sha256) = stream::receive(body, file, size, core.buffers.lease()).await?;
    tokio::task::spawn_blocking(move || temp.commit_blocking(file))
        .await
        .map_err(|e| CoreError::Storage(std::io::Error::other(e.to_string())))?
        .map_err(|e| match e {
            CommitError::Exists => CoreError::Exists,
            CommitError::Io(io) => CoreError::from(io),
        })?;
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
    let digest = format!(":{}:", base64_std(&sha256));
    if let Ok(v) = HeaderValue::from_str(&format!("sha-256={digest}")) {
        h.insert("repr-digest", v);
    }
    Ok(resp)
}

/// Refuses a destination whose extension is not allowed or which already exists.
pub async fn check_destination(core: &Core, rel: &path::RelPath) -> Result<(), CoreError> {
    let s = &core.settings;
    if !s.allowed_extensions.is_empty() {
        let ext = rel.extension().unwrap_or_default();
        if !s.allowed_extensions.contains(&ext) {
            return Err(CoreError::ExtensionNotAllowed(ext));
        }
    }
    if core.storage.exists(rel).await? {
        return Err(CoreError::Exists);
    }
    Ok(())
}

/// Standard base64 with padding (RFC 4648), for `Repr-Digest`.
pub fn base64_std(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64() {
        assert_eq!(super::base64_std(b""), "");
        assert_eq!(super::base64_std(b"f"), "Zg==");
        assert_eq!(super::base64_std(b"fo"), "Zm8=");
        assert_eq!(super::base64_std(b"foo"), "Zm9v");
        assert_eq!(super::base64_std(b"foobar"), "Zm9vYmFy");
    }
}

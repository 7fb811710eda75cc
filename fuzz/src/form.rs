//! Target `multipart_form`: the `multipart/form-data` stream of HFS's `POST /upload`, read
//! with the limits and file-name rule of `xferd::core::resumable::form`.

use crate::number;
use crate::uri::check_rel;
use bytes::Bytes;
use futures_util::FutureExt;
use xferd::core::resumable::form::{constraints, stored_path, FORM_OVERHEAD};

/// Input: line 1 `max_upload_size`, line 2 the `Content-Type`, line 3 the size of the body
/// pieces the stream delivers, then the body (raw bytes).
///
/// Properties: no field yields more than `max_upload_size` bytes and all fields together no
/// more than the whole-stream limit or the body's length; a stored file name gives a path
/// beneath `form_upload_dir` whose file name is the one sent; reading always makes progress
/// on a body that is entirely available.
pub fn multipart_form(data: &[u8]) {
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let mut line = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let max = number(&line()) % (1 << 16) + 1;
    let content_type = line();
    let piece = (number(&line()) % 512 + 1) as usize;
    let body = parts.next().unwrap_or_default().to_vec();
    let Ok(boundary) = multer::parse_boundary(&content_type) else {
        return;
    };
    let pieces: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(piece)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let stream = futures_util::stream::iter(pieces);
    let mut form = multer::Multipart::with_constraints(stream, boundary, constraints(max));
    let mut total = 0u64;
    loop {
        let next = form
            .next_field()
            .now_or_never()
            .expect("a ready body never waits");
        let Ok(Some(mut field)) = next else {
            break;
        };
        if field.name() == Some("file") {
            if let Some(name) = field.file_name().map(str::to_string) {
                if let Ok(rel) = stored_path("uploads", &name) {
                    check_rel(&rel);
                    assert!(rel.as_str().starts_with("uploads/"));
                    assert_eq!(rel.file_name(), name);
                }
            }
        }
        let mut size = 0u64;
        while let Ok(Some(c)) = field
            .chunk()
            .now_or_never()
            .expect("a ready body never waits")
        {
            size += c.len() as u64;
        }
        assert!(size <= max, "a field gave {size} bytes, limit {max}");
        total += size;
    }
    assert!(total <= max + FORM_OVERHEAD && total <= body.len() as u64);
}

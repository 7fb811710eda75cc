//! Request paths -> validated relative storage paths.
//!
//! Steps, in this order and exactly once each: take the URL path, drop the leading `/`,
//! percent-decode `%XX` (a `+` stays a `+`), require UTF-8, strip the configured prefix if
//! present, then validate every segment. Refused: empty segments, `.` and `..`, NUL and other
//! control characters, backslashes, absolute paths, over-long names, and the reserved
//! `.xferd` prefix (temporary files live under it). Nothing here touches the disk. The
//! validated path is a storage [`Key`] (`RelPath` is its name here); its rules live with it.

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is not valid percent-encoded UTF-8")]
    Encoding,
    #[error("path is empty")]
    Empty,
    #[error("path contains an empty, `.` or `..` segment")]
    Traversal,
    #[error("path contains a forbidden character")]
    Character,
    #[error("path or file name is too long")]
    TooLong,
    #[error("path uses a reserved name")]
    Reserved,
}

use crate::storage::key::{Key, KeyError};
pub use crate::storage::key::{Key as RelPath, MAX_PATH, MAX_SEGMENT, RESERVED_PREFIX};

impl From<KeyError> for PathError {
    fn from(e: KeyError) -> PathError {
        match e {
            KeyError::Empty => PathError::Empty,
            KeyError::Traversal => PathError::Traversal,
            KeyError::Character => PathError::Character,
            KeyError::TooLong => PathError::TooLong,
            KeyError::Reserved => PathError::Reserved,
        }
    }
}

/// Decodes a raw URL path (`/a%20b/c`) once and validates it; `prefix` (no slashes at the
/// ends, may be empty) is stripped when the path starts with it.
pub fn resolve(raw_path: &str, prefix: &str) -> Result<RelPath, PathError> {
    let raw = raw_path.strip_prefix('/').ok_or(PathError::Traversal)?;
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathError::Encoding)?;
    let mut path: &str = &decoded;
    if !prefix.is_empty() {
        if path == prefix {
            return Err(PathError::Empty);
        }
        if let Some(rest) = path.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) {
            path = rest;
        }
    }
    validate(path)
}

/// Validates an already-decoded relative path (the rules are the storage key's:
/// [`Key::parse`]).
pub fn validate(path: &str) -> Result<RelPath, PathError> {
    Ok(Key::parse(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let ok: &[(&str, &str, &str)] = &[
            ("/foo/bar.jpg", "", "foo/bar.jpg"),
            ("/upload/foo/bar.jpg", "upload", "foo/bar.jpg"),
            ("/foo/bar.jpg", "upload", "foo/bar.jpg"),
            (
                "/d6a1c3e0/My%20Photo%20%C3%A9.jpg",
                "",
                "d6a1c3e0/My Photo é.jpg",
            ),
            ("/a/b+c.txt", "", "a/b+c.txt"),
            ("/a/100%25.txt", "", "a/100%.txt"),
            ("/a/x%23y%26z'.txt", "", "a/x#y&z'.txt"),
            ("/a/%2e%2e.txt", "", "a/...txt"),
            ("/a/.hidden", "", "a/.hidden"),
            ("/uploadx/f", "upload", "uploadx/f"),
        ];
        for (raw, prefix, want) in ok {
            assert_eq!(
                resolve(raw, prefix).map(|p| p.as_str().to_string()),
                Ok(want.to_string()),
                "{raw}"
            );
        }
        let bad: &[(&str, PathError)] = &[
            ("/", PathError::Empty),
            ("/../etc/passwd", PathError::Traversal),
            ("/a/%2e%2e/b", PathError::Traversal),
            ("/a/%2E%2E/b", PathError::Traversal),
            ("/a/./b", PathError::Traversal),
            ("/a//b", PathError::Traversal),
            ("/a/", PathError::Traversal),
            ("/%2Fetc/passwd", PathError::Traversal),
            ("//etc/passwd", PathError::Traversal),
            ("/a/b%00c", PathError::Character),
            ("/a%5C..%5Cb", PathError::Character),
            ("/a/%ff", PathError::Encoding),
            ("/a/.xferd-tmp-1", PathError::Reserved),
            ("relative", PathError::Traversal),
        ];
        for (raw, want) in bad {
            assert_eq!(resolve(raw, ""), Err(*want), "{raw}");
        }
        assert_eq!(resolve("/upload", "upload"), Err(PathError::Empty));
        assert_eq!(resolve("/upload/", "upload"), Err(PathError::Empty));
        let long = format!("/{}", "a".repeat(256));
        assert_eq!(resolve(&long, ""), Err(PathError::TooLong));
    }

    #[test]
    fn double_encoding_is_decoded_once() {
        // `%252e%252e` decodes to the literal name `%2e%2e`, which is harmless.
        assert_eq!(
            resolve("/a/%252e%252e/b", "").unwrap().as_str(),
            "a/%2e%2e/b"
        );
    }

    #[test]
    fn extension() {
        assert_eq!(
            validate("a/b.JPG").unwrap().extension().as_deref(),
            Some("jpg")
        );
        assert_eq!(validate("a/.bashrc").unwrap().extension(), None);
        assert_eq!(validate("a/noext").unwrap().extension(), None);
    }

    proptest::proptest! {
        #[test]
        fn resolved_paths_never_escape(raw in "/[a-zA-Z0-9%./\\\\]{0,40}") {
            if let Ok(p) = resolve(&raw, "") {
                let s = p.as_str();
                proptest::prop_assert!(!s.starts_with('/'));
                proptest::prop_assert!(s.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
                proptest::prop_assert!(!s.contains('\\') && !s.contains('\0'));
            }
        }
    }
}

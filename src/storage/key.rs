//! [`Key`]: the name of a stored object, relative to the store's root. A leaf type owned by
//! the storage layer (it imports nothing else of the crate); the core's request-path
//! decoding ([`crate::core::path`]) produces keys through [`Key::parse`].
//!
//! Invariant of every `Key`: non-empty, at most [`MAX_PATH`] bytes, no leading `/`, `/`
//! separated segments that are neither empty, `.` nor `..`, at most [`MAX_SEGMENT`] bytes,
//! without `\` or control characters, and none starting with [`RESERVED_PREFIX`] (the
//! storage's own names: temporary files, session data). So a key never escapes the root
//! and never names a backend's private object.

/// Longest accepted key (bytes) and segment.
pub const MAX_PATH: usize = 1024;
pub const MAX_SEGMENT: usize = 255;
/// Names starting with this are the storage's own (temporary files, session data).
pub const RESERVED_PREFIX: &str = ".xferd";

/// Why a string is not a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is empty")]
    Empty,
    #[error("key contains an empty, `.` or `..` segment")]
    Traversal,
    #[error("key contains a forbidden character")]
    Character,
    #[error("key or segment is too long")]
    TooLong,
    #[error("key uses a reserved name")]
    Reserved,
}

/// A validated key: a relative path beneath the store's root (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    /// Validates an already-decoded relative path.
    pub fn parse(path: &str) -> Result<Key, KeyError> {
        if path.is_empty() {
            return Err(KeyError::Empty);
        }
        if path.len() > MAX_PATH {
            return Err(KeyError::TooLong);
        }
        if path.starts_with('/') {
            return Err(KeyError::Traversal);
        }
        for seg in path.split('/') {
            if seg.is_empty() || seg == "." || seg == ".." {
                return Err(KeyError::Traversal);
            }
            if seg.len() > MAX_SEGMENT {
                return Err(KeyError::TooLong);
            }
            if seg.chars().any(|c| c == '\\' || c.is_control()) {
                return Err(KeyError::Character);
            }
            if seg.starts_with(RESERVED_PREFIX) {
                return Err(KeyError::Reserved);
            }
        }
        Ok(Key(path.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
    /// The file name (last segment).
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
    /// (`a/b`, `c`) for `a/b/c`; (``, `c`) at the top.
    pub fn split(&self) -> (&str, &str) {
        self.0.rsplit_once('/').unwrap_or(("", &self.0))
    }
    /// The lower-case extension of the file name, if any.
    pub fn extension(&self) -> Option<String> {
        let name = self.file_name();
        let (stem, ext) = name.rsplit_once('.')?;
        (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_ascii_lowercase())
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

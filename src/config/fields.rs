//! xferd's own key names, read from the config structs themselves (so a key added to a struct
//! is known here without a second list), and the "did you mean" search over key names.

use super::{AdminConfig, LogConfig, RateLimitConfig, ScanConfig};
use super::{
    Config, DownloadsConfig, MetricsConfig, PerformanceConfig, ResumableConfig, SecurityConfig,
    ServerConfig, StreamingConfig, TlsConfig,
};
use super::{S3Config, StorageConfig};
use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The field names serde would accept for `T`, captured from `deserialize_struct`.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    match T::deserialize(Probe) {
        Err(Fields(f)) => f,
        Ok(_) => &[],
    }
}

/// The sections of an xferd config (the fields of [`Config`]).
pub(super) fn sections() -> &'static [&'static str] {
    fields_of::<Config>()
}

/// The keys of an xferd section; `None` when the section is not known here (it is then
/// passed through whole and checked by serde).
pub(super) fn keys(section: &str) -> Option<&'static [&'static str]> {
    Some(match section {
        "server" => fields_of::<ServerConfig>(),
        "tls" => fields_of::<TlsConfig>(),
        "security" => fields_of::<SecurityConfig>(),
        "downloads" => fields_of::<DownloadsConfig>(),
        "resumable" => fields_of::<ResumableConfig>(),
        "performance" => fields_of::<PerformanceConfig>(),
        "streaming" => fields_of::<StreamingConfig>(),
        "metrics" => fields_of::<MetricsConfig>(),
        "rate_limit" => fields_of::<RateLimitConfig>(),
        "log" => fields_of::<LogConfig>(),
        "expiry" => fields_of::<super::ExpiryConfig>(),
        "quota" => fields_of::<super::QuotaConfig>(),
        "audit" => fields_of::<super::AuditConfig>(),
        "scan" => fields_of::<ScanConfig>(),
        "admin" => fields_of::<AdminConfig>(),
        "storage" => fields_of::<StorageConfig>(),
        "storage.s3" => fields_of::<S3Config>(),
        "cluster" => fields_of::<super::ClusterConfig>(),
        "deduplication" => fields_of::<super::DedupConfig>(),
        _ => return None,
    })
}

/// The candidate closest to `word` (case-insensitive edit distance), if any is close enough
/// to be a plausible misspelling.
pub(super) fn nearest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance (insertions, deletions, substitutions), over chars.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row.first().copied().unwrap_or(0);
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j + 1).copied().unwrap_or(usize::MAX);
            let left = row.get(j).copied().unwrap_or(usize::MAX);
            let best = (diag + usize::from(ca != *cb))
                .min(above.saturating_add(1))
                .min(left.saturating_add(1));
            diag = above;
            if let Some(cell) = row.get_mut(j + 1) {
                *cell = best;
            }
        }
    }
    row.last().copied().unwrap_or(0)
}

/// The "error" a [`Probe`] returns: the struct's field names.
#[derive(Debug)]
struct Fields(&'static [&'static str]);

impl std::fmt::Display for Fields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fields {:?}", self.0)
    }
}

impl std::error::Error for Fields {}

impl de::Error for Fields {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Fields(&[])
    }
}

/// A deserializer that produces nothing and reports the field list of the struct asked for.
struct Probe;

impl<'de> Deserializer<'de> for Probe {
    type Error = Fields;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
        Err(Fields(&[]))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Fields> {
        Err(Fields(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_from_the_structs() {
        assert!(sections().contains(&"server") && sections().contains(&"metrics"));
        assert!(!sections().contains(&"hfs"), "skipped fields are not keys");
        let server = keys("server").unwrap();
        assert!(server.contains(&"listen") && server.contains(&"storage_path"));
        assert_eq!(keys("metrics").unwrap(), &["enabled", "listen"]);
        assert!(keys("clamav").is_none());
    }

    #[test]
    fn nearest_finds_plausible_misspellings_only() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
        let keys = ["listen", "storage_path", "max_upload_size"];
        assert_eq!(
            nearest("listen_adress", ["listen_address", "listen"]),
            Some("listen_address")
        );
        assert_eq!(nearest("storge_path", keys), Some("storage_path"));
        assert_eq!(nearest("Max_Upload_Size", keys), Some("max_upload_size"));
        assert_eq!(nearest("completely_different", keys), None);
    }
}

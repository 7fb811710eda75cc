//! `[storage]`: where finished files live - `backend = "fs"` (the default: the directory
//! `server.storage_path`) or `"s3"` (a bucket of an S3-compatible store, `[storage.s3]`).
//!
//! Credentials: `access_key_id` + `secret_access_key` from the file when both are set,
//! else the standard environment variables `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
//! (and `AWS_SESSION_TOKEN`). They are never logged: `Debug` redacts the secret and the
//! token, and `check-config --explain` shows `<redacted>`.

use super::{de_size, ConfigError};
use serde::Deserialize;

/// The backend finished files are stored in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Fs,
    S3,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub backend: Backend,
    pub s3: S3Config,
}

/// `[storage.s3]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// `https://host[:port]`, no path (the bucket is addressed path-style).
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Prepended to every key (`"xferd/"`); empty = the bucket's root.
    pub prefix: String,
    /// Allow a plain `http://` endpoint (a store on loopback or a private network).
    pub allow_http: bool,
    /// Size of every part of a multipart upload but the last (5MB..5GB; equal parts).
    #[serde(deserialize_with = "de_size")]
    pub part_size: u64,
    /// Parts held in memory per upload, the one filling included: memory per upload is
    /// at most `part_size x max_parts_in_flight`.
    pub max_parts_in_flight: usize,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: String::new(),
            prefix: String::new(),
            allow_http: false,
            part_size: 8 << 20,
            max_parts_in_flight: 4,
            access_key_id: None,
            secret_access_key: None,
        }
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("allow_http", &self.allow_http)
            .field("part_size", &self.part_size)
            .field("max_parts_in_flight", &self.max_parts_in_flight)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Resolved credentials: (access key id, secret access key, session token).
pub type Keys = (String, String, Option<String>);

impl S3Config {
    /// The credentials to sign with: the file's pair, else the AWS environment variables.
    pub fn credentials(&self) -> Result<Keys, String> {
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            return Ok((id.clone(), secret.clone(), None));
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Ok((id, secret, env("AWS_SESSION_TOKEN"))),
            _ => Err(
                "no S3 credentials: set storage.s3.access_key_id and secret_access_key, \
                 or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    .into(),
            ),
        }
    }
}

fn bad(key: &str, message: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    })
}

impl StorageConfig {
    /// Checks `[storage.s3]` when it is the backend (reachability is checked at start-up).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.backend != Backend::S3 {
            return Ok(());
        }
        let s = &self.s3;
        let scheme_ok = s.endpoint.starts_with("https://")
            || (s.allow_http && s.endpoint.starts_with("http://"));
        if !scheme_ok {
            return bad(
                "storage.s3.endpoint",
                "must be an https:// URL (http:// needs allow_http = true)",
            );
        }
        match s.endpoint.parse::<http::Uri>() {
            Ok(u)
                if u.host().is_some_and(|h| !h.is_empty())
                    && matches!(u.path(), "" | "/")
                    && u.query().is_none() => {}
            _ => {
                return bad(
                    "storage.s3.endpoint",
                    "must be scheme://host[:port] with no path",
                )
            }
        }
        if s.region.is_empty() {
            return bad("storage.s3.region", "must not be empty");
        }
        let b = &s.bucket;
        let bucket_ok = (3..=63).contains(&b.len())
            && b.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
            && !b.starts_with(['-', '.'])
            && !b.ends_with(['-', '.']);
        if !bucket_ok {
            return bad(
                "storage.s3.bucket",
                "must be 3-63 lowercase letters, digits, `-` or `.`",
            );
        }
        if s.prefix.contains("..") || s.prefix.contains('\\') || s.prefix.starts_with('/') {
            return bad(
                "storage.s3.prefix",
                "must be a relative prefix like \"xferd/\"",
            );
        }
        if !((5 << 20)..=(5 << 30)).contains(&s.part_size) {
            return bad("storage.s3.part_size", "must be between 5MB and 5GB");
        }
        if !(1..=64).contains(&s.max_parts_in_flight) {
            return bad("storage.s3.max_parts_in_flight", "must be between 1 and 64");
        }
        if s.access_key_id.is_some() != s.secret_access_key.is_some() {
            return bad(
                "storage.s3.access_key_id",
                "`access_key_id` and `secret_access_key` must be given together",
            );
        }
        if let Err(e) = s.credentials() {
            return bad("storage.s3.access_key_id", e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(extra, "t.toml").map(|l| l.config)
    }

    const OK: &str = "[storage]\nbackend = \"s3\"\n[storage.s3]\nendpoint = \"http://127.0.0.1:9000\"\nallow_http = true\nbucket = \"files\"\naccess_key_id = \"AK\"\nsecret_access_key = \"very-secret\"\npart_size = \"16MB\"\n";

    #[test]
    fn an_s3_section_parses_and_never_shows_the_secret() {
        let c = parse(OK).unwrap();
        assert_eq!(c.storage.backend, super::Backend::S3);
        assert_eq!(c.storage.s3.part_size, 16 << 20);
        assert_eq!(c.storage.s3.region, "us-east-1");
        let shown = format!("{:?}", c.storage);
        assert!(!shown.contains("very-secret"), "{shown}");
        let loaded = Config::parse(OK, "t.toml").unwrap();
        let secret = loaded
            .report
            .iter()
            .find(|r| r.key == "storage.s3.secret_access_key")
            .expect("reported");
        assert_eq!(secret.value, "<redacted>");
    }

    #[test]
    fn bad_s3_settings_name_their_key() {
        for (from, to, key) in [
            ("http://127.0.0.1:9000", "ftp://x", "storage.s3.endpoint"),
            (
                "allow_http = true",
                "allow_http = false",
                "storage.s3.endpoint",
            ),
            ("\"files\"", "\"Bad_Bucket\"", "storage.s3.bucket"),
            ("\"16MB\"", "\"1MB\"", "storage.s3.part_size"),
            (
                "secret_access_key = \"very-secret\"\n",
                "",
                "storage.s3.access_key_id",
            ),
        ] {
            let text = OK.replace(from, to);
            match parse(&text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{to}"),
                other => panic!("{to}: {other:?}"),
            }
        }
        assert!(parse(&OK.replace("bucket =", "buckt =")).is_err());
        // The fs backend ignores an unfinished s3 section.
        assert!(parse("[storage]\nbackend = \"fs\"\n[storage.s3]\nbucket = \"\"\n").is_ok());
    }
}

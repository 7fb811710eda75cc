//! Signature verification for signed URLs (XEP-0363 leaves the scheme to the
//! deployment; these are Prosody's `mod_http_upload_external` protocols v1 and v2, which
//! ejabberd's `external_secret` and Metronome also use, and HMAC File Server 3.4's v3).
//!
//! Schemes, selected by the query parameter present:
//! - `v`: HMAC over `path + " " + size` (Prosody protocol v1, ejabberd);
//! - `v2` / `token`: HMAC over `path + "\0" + size + "\0" + content_type` (Prosody v2);
//! - `v3` + `expires`: HMAC over `METHOD + "\n" + expires + "\n" + "/" + path`.
//!
//! The MAC is HMAC-SHA256 keyed with the raw secret bytes, hex on the wire (either case),
//! compared in constant time through `Mac::verify_slice`. Several keys may be configured for
//! rotation. Time is passed in as Unix seconds; nothing here reads a clock.
//!
//! Two refusals guard against ambiguity and against URLs that never die:
//! - a query naming a signature parameter (`v`/`v1`, `v2`, `token`, `v3`, `expires`) more
//!   than once, or two schemes at once, is refused as [`AuthError::Repeated`]: a proxy or an
//!   XMPP server that reads the last occurrence would disagree with us about what was signed.
//!   Names are percent-decoded before they are compared (`%76` is `v`);
//! - a v3 URL whose `expires` lies further ahead than the maximum lifetime (plus the clock
//!   skew) is refused as [`AuthError::LifetimeExceeded`], even with a valid MAC.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a request's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no signature in the URL")]
    Missing,
    #[error("malformed signature parameter")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
    #[error("signed URL has expired")]
    Expired,
    #[error("signature scheme needs the size (Content-Length)")]
    SizeRequired,
    #[error("a signature parameter appears more than once in the URL")]
    Repeated,
    #[error("signed URL is valid for longer than this server allows")]
    LifetimeExceeded,
}

/// Default longest validity of a v3 URL (`security.max_url_lifetime`): 7 days. XMPP servers
/// sign PUT URLs for minutes to an hour (ejabberd's `token_expiry` is 3600 s); 7 days leaves
/// room for signed download links shared for a week while a leaked URL still dies.
pub const DEFAULT_MAX_URL_LIFETIME_SECS: u64 = 7 * 24 * 3600;

/// A signature scheme, as chosen by the query parameter name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    V,
    V2,
    Token,
    V3,
}

impl Scheme {
    pub fn parse(name: &str) -> Option<Scheme> {
        match name {
            "v" | "v1" => Some(Scheme::V),
            "v2" => Some(Scheme::V2),
            "token" => Some(Scheme::Token),
            "v3" => Some(Scheme::V3),
            _ => None,
        }
    }
    pub fn param(self) -> &'static str {
        match self {
            Scheme::V => "v",
            Scheme::V2 => "v2",
            Scheme::Token => "token",
            Scheme::V3 => "v3",
        }
    }
}

/// The shared secrets: the current one first, then the previous ones (rotation). Clones
/// share the secrets, which [`Keys::replace`] swaps (SIGHUP reload).
#[derive(Clone)]
pub struct Keys {
    keys: std::sync::Arc<std::sync::RwLock<Vec<Vec<u8>>>>,
    path_only_compat: bool,
    /// Longest accepted v3 validity (`expires - now`), in seconds.
    max_lifetime_secs: u64,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} keys, redacted)", self.secrets().len())
    }
}

/// What a request claims, to be checked against its signature.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// HTTP method, upper case.
    pub method: &'a str,
    /// Decoded path, prefix stripped, without the leading `/`.
    pub path: &'a str,
    /// The declared size (`Content-Length`), when the request has one.
    pub size: Option<u64>,
    /// Candidate content types for v2, tried in order (declared, then guessed).
    pub content_types: &'a [&'a str],
}

/// The signature parameters found in a query string.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SignedQuery {
    pub scheme: Option<(Scheme, String)>,
    pub expires: Option<String>,
    /// The (decoded) name of a signature parameter seen a second time, or of a second
    /// scheme; [`Keys::verify`] then refuses with [`AuthError::Repeated`].
    pub repeated: Option<String>,
}

impl SignedQuery {
    /// Extracts the signature parameters (names and values percent-decoded). A second
    /// signature parameter is not read but remembered in `repeated`.
    pub fn parse(query: Option<&str>) -> SignedQuery {
        let mut out = SignedQuery::default();
        for pair in query.unwrap_or("").split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            let value = || {
                percent_encoding::percent_decode_str(value)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            if name == "expires" {
                if out.expires.is_some() {
                    out.repeated.get_or_insert_with(|| name.to_string());
                } else {
                    out.expires = Some(value());
                }
            } else if let Some(scheme) = Scheme::parse(&name) {
                if out.scheme.is_some() {
                    out.repeated.get_or_insert_with(|| name.to_string());
                } else {
                    out.scheme = Some((scheme, value()));
                }
            }
        }
        out
    }

    pub fn is_signed(&self) -> bool {
        self.scheme.is_some()
    }
}

impl Keys {
    pub fn new(current: &str, previous: &[String], path_only_compat: bool) -> Keys {
        let mut keys = vec![current.as_bytes().to_vec()];
        keys.extend(previous.iter().map(|k| k.as_bytes().to_vec()));
        Keys {
            keys: std::sync::Arc::new(std::sync::RwLock::new(keys)),
            path_only_compat,
            max_lifetime_secs: DEFAULT_MAX_URL_LIFETIME_SECS,
        }
    }

    /// Replaces the secrets (for every clone); URLs signed with the old ones stop verifying
    /// unless `previous` keeps them.
    pub fn replace(&self, current: &str, previous: &[String]) {
        let mut keys = vec![current.as_bytes().to_vec()];
        keys.extend(previous.iter().map(|k| k.as_bytes().to_vec()));
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
    }

    fn secrets(&self) -> std::sync::RwLockReadGuard<'_, Vec<Vec<u8>>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the longest accepted v3 validity (`security.max_url_lifetime`).
    pub fn with_max_lifetime(mut self, secs: u64) -> Keys {
        self.max_lifetime_secs = secs;
        self
    }

    /// Checks `query`'s signature against `claim`. `now` is Unix seconds.
    pub fn verify(
        &self,
        query: &SignedQuery,
        claim: &Claim<'_>,
        now: u64,
        skew_secs: u64,
    ) -> Result<Scheme, AuthError> {
        if query.repeated.is_some() {
            return Err(AuthError::Repeated);
        }
        let (scheme, hex_mac) = query.scheme.as_ref().ok_or(AuthError::Missing)?;
        let tag = hex::decode(hex_mac.trim()).map_err(|_| AuthError::Malformed)?;
        if tag.len() != 32 {
            return Err(AuthError::Malformed);
        }
        let mut messages: Vec<Vec<u8>> = Vec::new();
        match scheme {
            Scheme::V => {
                let size = claim.size.ok_or(AuthError::SizeRequired)?;
                messages.push(format!("{} {}", claim.path, size).into_bytes());
            }
            Scheme::V2 | Scheme::Token => {
                let size = claim.size.ok_or(AuthError::SizeRequired)?;
                for ct in claim.content_types {
                    messages.push(format!("{}\0{}\0{}", claim.path, size, ct).into_bytes());
                }
            }
            Scheme::V3 => {
                let expires_text = query.expires.as_deref().ok_or(AuthError::Malformed)?;
                let expires: u64 = expires_text.parse().map_err(|_| AuthError::Malformed)?;
                // Verify first, so an expired URL with a forged MAC is still "mismatch".
                let msg = v3_message(claim.method, expires, claim.path);
                if !self.any_key_verifies(&msg, &tag) {
                    return Err(AuthError::Mismatch);
                }
                if now > expires.saturating_add(skew_secs) {
                    return Err(AuthError::Expired);
                }
                let latest = now
                    .saturating_add(self.max_lifetime_secs)
                    .saturating_add(skew_secs);
                if expires > latest {
                    return Err(AuthError::LifetimeExceeded);
                }
                return Ok(Scheme::V3);
            }
        }
        if self.path_only_compat {
            messages.push(claim.path.as_bytes().to_vec());
        }
        if messages.iter().any(|m| self.any_key_verifies(m, &tag)) {
            Ok(*scheme)
        } else {
            Err(AuthError::Mismatch)
        }
    }

    /// Constant-time check of a raw MAC over `message` (for HFS's legacy header).
    pub fn verify_raw(&self, message: &[u8], tag: &[u8]) -> bool {
        tag.len() == 32 && self.any_key_verifies(message, tag)
    }

    fn any_key_verifies(&self, message: &[u8], tag: &[u8]) -> bool {
        // Every key is tried (no early exit), so timing does not reveal which key matched.
        let mut ok = false;
        for key in self.secrets().iter() {
            ok |= mac(key, message).verify_slice(tag).is_ok();
        }
        ok
    }

    /// Mints a hex MAC with the current key (for `xferd sign` and tests).
    pub fn sign(&self, message: &[u8]) -> String {
        let keys = self.secrets();
        let key = keys.first().map(Vec::as_slice).unwrap_or_default();
        hex::encode(mac(key, message).finalize().into_bytes())
    }
}

fn mac(key: &[u8], message: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(message);
    m
}

/// The v3 message: `METHOD\nexpires\n/path`.
pub fn v3_message(method: &str, expires: u64, path: &str) -> Vec<u8> {
    format!("{method}\n{expires}\n/{path}").into_bytes()
}

/// The message a scheme signs, for minting URLs.
pub fn message_for(
    scheme: Scheme,
    method: &str,
    path: &str,
    size: u64,
    content_type: &str,
    expires: u64,
) -> Vec<u8> {
    match scheme {
        Scheme::V => format!("{path} {size}").into_bytes(),
        Scheme::V2 | Scheme::Token => format!("{path}\0{size}\0{content_type}").into_bytes(),
        Scheme::V3 => v3_message(method, expires, path),
    }
}

#[cfg(test)]
mod tests;

/// Upload-page capabilities (`xferd sign --page`).
pub mod page;

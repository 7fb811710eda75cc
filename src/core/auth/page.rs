//! Upload-page capabilities: the token an operator mints with `xferd sign --page` and hands
//! out in the fragment of the page's link (`https://HOST/upload-page/#<token>`). The
//! fragment never reaches the server's logs; the page's script sends the token as
//! `Authorization: Bearer <token>` on the tus creation request only.
//!
//! A token allows uploads under one prefix, until an expiry, each at most a given size:
//!
//! `xp1.<expires>.<max_size>.<base64url(prefix)>.<hex HMAC-SHA256>`
//!
//! The MAC is keyed with the server secret (any of the rotation keys verifies) over
//! `message` = `"xferd-page\n" + prefix + "\n" + expires + "\n" + max_size`, and compared
//! in constant time like every other scheme (`Keys::any_key_verifies`). The prefix is
//! base64url so that no character of it can be read as a separator. Order of checks:
//! shape ([`AuthError::Malformed`]) -> MAC ([`AuthError::Mismatch`], so a forged token is
//! never reported as merely expired) -> expiry ([`AuthError::Expired`], the stable code
//! `signature_expired`) -> the server's maximum lifetime ([`AuthError::LifetimeExceeded`]).
//! Nothing here reads a clock.

use super::{AuthError, Keys};
use base64::Engine as _;

/// The token's first field; a later format gets a new one.
pub const TOKEN_VERSION: &str = "xp1";
/// Longest token read; anything longer is malformed (a prefix is at most a path's length).
pub const MAX_TOKEN_LEN: usize = 8192;

/// What a page link allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    /// Relative storage path (no leading or trailing `/`) every upload lands under.
    pub prefix: String,
    /// Unix seconds after which the link is refused.
    pub expires: u64,
    /// Largest single upload, in bytes.
    pub max_size: u64,
}

/// The signed message of a capability.
pub fn message(prefix: &str, expires: u64, max_size: u64) -> Vec<u8> {
    format!("xferd-page\n{prefix}\n{expires}\n{max_size}").into_bytes()
}

impl Capability {
    /// The token for this capability, MACed with the current key of `keys`.
    pub fn mint(&self, keys: &Keys) -> String {
        let mac = keys.sign(&message(&self.prefix, self.expires, self.max_size));
        let prefix = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.prefix);
        format!(
            "{TOKEN_VERSION}.{}.{}.{prefix}.{mac}",
            self.expires, self.max_size
        )
    }
}

/// Splits a token into its capability and MAC; only the shape is checked.
fn parse(token: &str) -> Result<(Capability, Vec<u8>), AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed);
    }
    let mut it = token.split('.');
    let fields: Vec<&str> = it.by_ref().take(5).collect();
    if it.next().is_some() || fields.len() != 5 || fields[0] != TOKEN_VERSION {
        return Err(AuthError::Malformed);
    }
    let number = |s: &str| -> Result<u64, AuthError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AuthError::Malformed);
        }
        s.parse().map_err(|_| AuthError::Malformed)
    };
    let expires = number(fields[1])?;
    let max_size = number(fields[2])?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(fields[3])
        .map_err(|_| AuthError::Malformed)?;
    let prefix = String::from_utf8(raw).map_err(|_| AuthError::Malformed)?;
    let tag = hex::decode(fields[4]).map_err(|_| AuthError::Malformed)?;
    if tag.len() != 32 {
        return Err(AuthError::Malformed);
    }
    Ok((
        Capability {
            prefix,
            expires,
            max_size,
        },
        tag,
    ))
}

impl Keys {
    /// Checks a page token (see the module docs for the order of checks). `now` is Unix
    /// seconds; `skew_secs` the allowed clock skew.
    pub fn verify_capability(
        &self,
        token: &str,
        now: u64,
        skew_secs: u64,
    ) -> Result<Capability, AuthError> {
        let (cap, tag) = parse(token.trim())?;
        if !self.any_key_verifies(&message(&cap.prefix, cap.expires, cap.max_size), &tag) {
            return Err(AuthError::Mismatch);
        }
        if now > cap.expires.saturating_add(skew_secs) {
            return Err(AuthError::Expired);
        }
        let latest = now
            .saturating_add(self.max_lifetime_secs)
            .saturating_add(skew_secs);
        if cap.expires > latest {
            return Err(AuthError::LifetimeExceeded);
        }
        Ok(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn cap() -> Capability {
        Capability {
            prefix: "inbox/alice".into(),
            expires: NOW + 3600,
            max_size: 1 << 20,
        }
    }

    #[test]
    fn mints_the_documented_format_and_verifies() {
        let k = Keys::new("secret", &[], false);
        let t = cap().mint(&k);
        // base64url("inbox/alice") = aW5ib3gvYWxpY2U; the MAC over the documented message.
        let mac = k.sign(b"xferd-page\ninbox/alice\n1700003600\n1048576");
        assert_eq!(t, format!("xp1.1700003600.1048576.aW5ib3gvYWxpY2U.{mac}"));
        assert_eq!(k.verify_capability(&t, NOW, 0), Ok(cap()));
        // Rotation: a token minted with the previous key still verifies.
        let rotated = Keys::new("new", &["secret".to_string()], false);
        assert_eq!(rotated.verify_capability(&t, NOW, 0), Ok(cap()));
        assert_eq!(
            Keys::new("other", &[], false).verify_capability(&t, NOW, 0),
            Err(AuthError::Mismatch)
        );
    }

    #[test]
    fn every_field_is_bound_by_the_mac() {
        let k = Keys::new("secret", &[], false);
        let t = cap().mint(&k);
        let f: Vec<&str> = t.split('.').collect();
        let other_prefix = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("inbox");
        let forged = [
            format!("xp1.{}.{}.{}.{}", NOW + 7200, f[2], f[3], f[4]),
            format!("xp1.{}.{}.{}.{}", f[1], 1u64 << 30, f[3], f[4]),
            format!("xp1.{}.{}.{other_prefix}.{}", f[1], f[2], f[4]),
        ];
        for t in forged {
            assert_eq!(
                k.verify_capability(&t, NOW, 0),
                Err(AuthError::Mismatch),
                "{t}"
            );
        }
    }

    #[test]
    fn expiry_skew_and_lifetime() {
        let k = Keys::new("secret", &[], false);
        let t = cap().mint(&k);
        assert_eq!(
            k.verify_capability(&t, NOW + 3601, 0),
            Err(AuthError::Expired)
        );
        assert!(k.verify_capability(&t, NOW + 3601, 5).is_ok());
        let short = Keys::new("secret", &[], false).with_max_lifetime(60);
        assert_eq!(
            short.verify_capability(&t, NOW, 0),
            Err(AuthError::LifetimeExceeded)
        );
        // A forged token is a mismatch even when it would also be expired.
        let forged = t.replace(&t[t.len() - 4..], "0000");
        assert_eq!(
            k.verify_capability(&forged, NOW + 9999, 0),
            Err(AuthError::Mismatch)
        );
    }

    #[test]
    fn malformed_tokens() {
        let k = Keys::new("secret", &[], false);
        let good = cap().mint(&k);
        let f: Vec<&str> = good.split('.').collect();
        let cases = [
            String::new(),
            "xp1".into(),
            good.replacen("xp1", "xp2", 1),
            format!("{good}.x"),
            format!("xp1.-1.{}.{}.{}", f[2], f[3], f[4]),
            format!("xp1.+5.{}.{}.{}", f[2], f[3], f[4]),
            format!("xp1.{}.99999999999999999999999.{}.{}", f[1], f[3], f[4]),
            format!("xp1.{}.{}.!!.{}", f[1], f[2], f[4]),
            format!("xp1.{}.{}.{}.abcd", f[1], f[2], f[3]),
            format!("xp1.{}.{}.{}.{}zz", f[1], f[2], f[3], &f[4][..62]),
            "x".repeat(MAX_TOKEN_LEN + 1),
        ];
        for t in cases {
            assert_eq!(
                k.verify_capability(&t, NOW, 0),
                Err(AuthError::Malformed),
                "{t:.80}"
            );
        }
    }
}

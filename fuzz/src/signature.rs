//! Target `signature`: signed-URL query parsing and MAC verification (v, v2, token, v3),
//! checked against an HMAC-SHA256 computed here with the `hmac` and `sha2` crates.

use crate::{lines, number};
use hmac::{KeyInit, Mac};
use percent_encoding::percent_decode_str;
use xferd::core::auth::{AuthError, Claim, Keys, Scheme, SignedQuery};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// HMAC-SHA256 of `message` under `key`, computed without xferd.
fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("any key length");
    m.update(message);
    m.finalize().into_bytes().into()
}

fn scheme_of(name: &str) -> Option<Scheme> {
    Some(match name {
        "v" | "v1" => Scheme::V,
        "v2" => Scheme::V2,
        "token" => Scheme::Token,
        "v3" => Scheme::V3,
        _ => return None,
    })
}

/// The messages a scheme may sign for a claim (Prosody v1/v2, HFS v3), built byte by byte.
fn messages(scheme: Scheme, claim: &Claim<'_>, size: u64, expires: u64) -> Vec<Vec<u8>> {
    let path = claim.path.as_bytes();
    let size = size.to_string();
    match scheme {
        Scheme::V => vec![[path, b" ", size.as_bytes()].concat()],
        Scheme::V2 | Scheme::Token => claim
            .content_types
            .iter()
            .map(|ct| [path, b"\0", size.as_bytes(), b"\0", ct.as_bytes()].concat())
            .collect(),
        Scheme::V3 => {
            let e = expires.to_string();
            let m = claim.method.as_bytes();
            vec![[m, b"\n", e.as_bytes(), b"\n/", path].concat()]
        }
    }
}

/// What verification must answer, from first principles.
#[allow(clippy::too_many_arguments)]
fn expected(
    q: &SignedQuery,
    keys: &[Vec<u8>],
    compat: bool,
    claim: &Claim<'_>,
    now: u64,
    skew: u64,
    max_life: u64,
) -> Result<Scheme, AuthError> {
    if q.repeated.is_some() {
        return Err(AuthError::Repeated);
    }
    let (scheme, text) = q.scheme.clone().ok_or(AuthError::Missing)?;
    let tag = hex::decode(text.trim()).map_err(|_| AuthError::Malformed)?;
    if tag.len() != 32 {
        return Err(AuthError::Malformed);
    }
    let matches = |msgs: &[Vec<u8>]| {
        msgs.iter()
            .any(|m| keys.iter().any(|k| hmac(k, m)[..] == tag[..]))
    };
    if scheme == Scheme::V3 {
        let expires: u64 = q
            .expires
            .as_deref()
            .and_then(|e| e.parse().ok())
            .ok_or(AuthError::Malformed)?;
        if !matches(&messages(scheme, claim, 0, expires)) {
            return Err(AuthError::Mismatch);
        }
        if u128::from(now) > u128::from(expires) + u128::from(skew) {
            return Err(AuthError::Expired);
        }
        if u128::from(expires) > u128::from(now) + u128::from(max_life) + u128::from(skew) {
            return Err(AuthError::LifetimeExceeded);
        }
        return Ok(scheme);
    }
    let size = claim.size.ok_or(AuthError::SizeRequired)?;
    let mut msgs = messages(scheme, claim, size, 0);
    if compat {
        msgs.push(claim.path.as_bytes().to_vec());
    }
    if matches(&msgs) {
        Ok(scheme)
    } else {
        Err(AuthError::Mismatch)
    }
}

/// Checks `SignedQuery::parse` against a plain reading of the query: the first occurrence of
/// each signature parameter is taken, decoded, and a second one is flagged.
fn check_parse(query: &str, q: &SignedQuery) {
    let (mut scheme, mut expires, mut schemes, mut expiries) = (None, None, 0, 0);
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode_str(name).decode_utf8_lossy();
        let value = percent_decode_str(value).decode_utf8_lossy().into_owned();
        if name == "expires" {
            expiries += 1;
            expires.get_or_insert(value);
        } else if let Some(s) = scheme_of(&name) {
            schemes += 1;
            scheme.get_or_insert((s, value));
        }
    }
    assert_eq!(q.scheme, scheme, "scheme of {query:?}");
    assert_eq!(q.expires, expires, "expires of {query:?}");
    assert_eq!(
        q.repeated.is_some(),
        schemes > 1 || expiries > 1,
        "{query:?}"
    );
}

/// Input lines: 1 current key; 2 previous keys (tab-separated); 3 flags (`c` path-only
/// compatibility, `u` upper-case MACs); 4 method; 5 path; 6 size (empty: none); 7 content
/// types (tab-separated); 8 now; 9 clock skew; 10 maximum lifetime; 11 the query, where
/// `{mac}` is replaced by a MAC computed here per line 12: `scheme key-index expires
/// content-type-index`.
///
/// Properties: parsing agrees with [`check_parse`]; verification agrees with [`expected`]
/// (so an accepted MAC equals the independent HMAC of a message the scheme signs, under a
/// configured key); an accepted URL stops verifying when the path changes or one bit of the
/// MAC flips.
pub fn signature(data: &[u8]) {
    let l = lines(data);
    let field = |i: usize| l.get(i).map_or("", String::as_str);
    let current = field(0);
    let previous: Vec<String> = match field(1) {
        "" => Vec::new(),
        p => p.split('\t').map(str::to_string).collect(),
    };
    let compat = field(2).contains('c');
    let upper = field(2).contains('u');
    let keys = Keys::new(current, &previous, compat);
    let raw_keys: Vec<Vec<u8>> = std::iter::once(current)
        .chain(previous.iter().map(String::as_str))
        .map(|k| k.as_bytes().to_vec())
        .collect();
    let size = match field(5) {
        "" => None,
        s => Some(number(s)),
    };
    let cts: Vec<&str> = field(6).split('\t').collect();
    let claim = Claim {
        method: field(3),
        path: field(4),
        size,
        content_types: &cts,
    };
    let now = number(field(7)) % (1 << 40);
    let skew = number(field(8)) % 100_000;
    let max_life = number(field(9));
    let keys = keys.with_max_lifetime(max_life);
    let mut sign = field(11).split(' ');
    let mac_scheme = sign.next().and_then(scheme_of).unwrap_or(Scheme::V);
    let key = raw_keys[sign.next().map_or(0, |i| number(i) as usize) % raw_keys.len()].clone();
    let expires = sign.next().map_or(0, number);
    let ct = cts[sign.next().map_or(0, |i| number(i) as usize) % cts.len()];
    let one_ct = Claim {
        content_types: &[ct],
        ..claim
    };
    let msg = messages(mac_scheme, &one_ct, size.unwrap_or(0), expires)
        .pop()
        .unwrap_or_default();
    let mut mac = hex::encode(hmac(&key, &msg));
    if upper {
        mac = mac.to_uppercase();
    }
    let query = field(10).replace("{mac}", &mac);

    let q = SignedQuery::parse(Some(&query));
    check_parse(&query, &q);
    assert_eq!(SignedQuery::parse(None), SignedQuery::default());
    let got = keys.verify(&q, &claim, now, skew);
    let want = expected(&q, &raw_keys, compat, &claim, now, skew, max_life);
    assert_eq!(got, want, "query {query:?}");
    if got.is_ok() {
        let moved = format!("{}x", claim.path);
        let elsewhere = Claim {
            path: &moved,
            ..claim
        };
        assert!(
            keys.verify(&q, &elsewhere, now, skew).is_err(),
            "path ignored"
        );
        let mut flipped = q.clone();
        if let Some((_, text)) = flipped.scheme.as_mut() {
            let mut tag = hex::decode(text.trim()).expect("accepted hex");
            tag[0] ^= 1;
            *text = hex::encode(tag);
        }
        assert_eq!(
            keys.verify(&flipped, &claim, now, skew),
            Err(AuthError::Mismatch)
        );
        assert!(keys.verify_raw(&msg, &hmac(&key, &msg)));
    }
}

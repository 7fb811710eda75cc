//! Table tests of signature verification (vectors computed independently), rotation,
//! repeated parameters, the v3 lifetime bound, and a property test of the query parser.

use super::*;

fn keys() -> Keys {
    Keys::new("secret", &[], false)
}

// Test vectors computed independently (Python `hmac` and `openssl dgst -sha256 -hmac`):
// secret `secret`, path `foo/bar.jpg`, size 1234, type `image/jpeg`, expires 1700000000.
const V: &str = "fae9d934536a2d0385ab11c726b010b9ccd5212304135d576df9db1fc653ad94";
const V2: &str = "626eedc59396fdc5958bbfaba9a319d689caa556550e67c2e0e7950bb6a17a36";
const V3_PUT: &str = "6b129c374f9d37df8f117d3c564653dcb29549c4d2b292359e3bfc39f9c57559";
const V3_GET: &str = "edfc90be0782e97b878c9345ed5d3831b60c03ff4132a921ef313df7cbf5c35c";
const V3_POST: &str = "58af41e3531f2a8ca45431ee06c13a397c76a19af2c5b5ea51d1c6d1b7b8ed92";
const V_UTF8: &str = "258ff63d592de4bfb3aa4930a62e801c64d4032a8f41efcf6c0d9c9ebfaa81bc";
const PATH_ONLY: &str = "19c63eea7fe1b7e65a6bdadcf438bfa4cf844eac9f7bb106af2b513f614597b3";

#[test]
fn minting_reproduces_every_vector() {
    let k = keys();
    let p = "foo/bar.jpg";
    let cases: &[(&[u8], &str)] = &[
        (&message_for(Scheme::V, "PUT", p, 1234, "", 0), V),
        (
            &message_for(Scheme::V2, "PUT", p, 1234, "image/jpeg", 0),
            V2,
        ),
        (
            &message_for(Scheme::V3, "PUT", p, 0, "", 1_700_000_000),
            V3_PUT,
        ),
        (
            &message_for(Scheme::V3, "GET", p, 0, "", 1_700_000_000),
            V3_GET,
        ),
        (
            &message_for(Scheme::V3, "POST", "upload", 0, "", 1_700_000_000),
            V3_POST,
        ),
        (
            &message_for(Scheme::V, "PUT", "d6a1c3e0/My Photo é.jpg", 5, "", 0),
            V_UTF8,
        ),
        (b"foo/bar.jpg", PATH_ONLY),
    ];
    for (msg, want) in cases {
        assert_eq!(
            k.sign(msg),
            *want,
            "message {:?}",
            String::from_utf8_lossy(msg)
        );
    }
}

fn claim<'a>(method: &'a str, path: &'a str, size: Option<u64>, ct: &'a [&'a str]) -> Claim<'a> {
    Claim {
        method,
        path,
        size,
        content_types: ct,
    }
}

fn q(s: &str) -> SignedQuery {
    SignedQuery::parse(Some(s))
}

#[test]
fn verification_table() {
    let k = keys();
    let p = "foo/bar.jpg";
    let jpeg: &[&str] = &["image/jpeg"];
    let octet_then_jpeg: &[&str] = &["application/octet-stream", "image/jpeg"];
    let now = 1_700_000_000;
    let cases: Vec<(String, Claim, u64, Result<Scheme, AuthError>)> = vec![
        (
            format!("v={V}"),
            claim("PUT", p, Some(1234), &[]),
            now,
            Ok(Scheme::V),
        ),
        (
            format!("v={}", V.to_uppercase()),
            claim("PUT", p, Some(1234), &[]),
            now,
            Ok(Scheme::V),
        ),
        (
            format!("v={V}"),
            claim("PUT", p, Some(1235), &[]),
            now,
            Err(AuthError::Mismatch),
        ),
        (
            format!("v={V}"),
            claim("PUT", "foo/baz.jpg", Some(1234), &[]),
            now,
            Err(AuthError::Mismatch),
        ),
        (
            format!("v={V}"),
            claim("PUT", p, None, &[]),
            now,
            Err(AuthError::SizeRequired),
        ),
        (
            format!("v2={V2}"),
            claim("PUT", p, Some(1234), jpeg),
            now,
            Ok(Scheme::V2),
        ),
        (
            format!("token={V2}"),
            claim("PUT", p, Some(1234), jpeg),
            now,
            Ok(Scheme::Token),
        ),
        // Declared type tried first, then the guess: still verifies.
        (
            format!("v2={V2}"),
            claim("PUT", p, Some(1234), octet_then_jpeg),
            now,
            Ok(Scheme::V2),
        ),
        (
            format!("v2={V2}"),
            claim("PUT", p, Some(1234), &["text/plain"]),
            now,
            Err(AuthError::Mismatch),
        ),
        (
            format!("v3={V3_PUT}&expires=1700000000"),
            claim("PUT", p, None, &[]),
            now,
            Ok(Scheme::V3),
        ),
        (
            format!("v3={V3_PUT}&expires=1700000000"),
            claim("PUT", p, None, &[]),
            now + 60,
            Ok(Scheme::V3),
        ),
        (
            format!("v3={V3_PUT}&expires=1700000000"),
            claim("PUT", p, None, &[]),
            now + 61,
            Err(AuthError::Expired),
        ),
        (
            format!("v3={V3_PUT}&expires=1700000001"),
            claim("PUT", p, None, &[]),
            now,
            Err(AuthError::Mismatch),
        ),
        (
            format!("v3={V3_PUT}&expires=1700000000"),
            claim("GET", p, None, &[]),
            now,
            Err(AuthError::Mismatch),
        ),
        (
            format!("v3={V3_GET}&expires=1700000000"),
            claim("GET", p, None, &[]),
            now,
            Ok(Scheme::V3),
        ),
        (
            format!("v3={V3_POST}&expires=1700000000"),
            claim("POST", "upload", None, &[]),
            now,
            Ok(Scheme::V3),
        ),
        (
            format!("v3={V3_PUT}"),
            claim("PUT", p, None, &[]),
            now,
            Err(AuthError::Malformed),
        ),
        (
            "v=zz".to_string(),
            claim("PUT", p, Some(1234), &[]),
            now,
            Err(AuthError::Malformed),
        ),
        (
            "v=abcd".to_string(),
            claim("PUT", p, Some(1234), &[]),
            now,
            Err(AuthError::Malformed),
        ),
        (
            "x=1".to_string(),
            claim("PUT", p, Some(1234), &[]),
            now,
            Err(AuthError::Missing),
        ),
        // Path-only MACs are refused unless the compatibility switch is on.
        (
            format!("v={PATH_ONLY}"),
            claim("PUT", p, Some(1234), &[]),
            now,
            Err(AuthError::Mismatch),
        ),
    ];
    for (query, c, now, want) in cases {
        assert_eq!(k.verify(&q(&query), &c, now, 60), want, "{query} {c:?}");
    }
    let utf8 = claim("PUT", "d6a1c3e0/My Photo é.jpg", Some(5), &[]);
    assert_eq!(
        k.verify(&q(&format!("v={V_UTF8}")), &utf8, now, 60),
        Ok(Scheme::V)
    );
}

#[test]
fn rotation_and_compat_switch() {
    let rotated = Keys::new("new-secret", &["secret".to_string()], false);
    let c = claim("PUT", "foo/bar.jpg", Some(1234), &[]);
    assert_eq!(
        rotated.verify(&q(&format!("v={V}")), &c, 0, 60),
        Ok(Scheme::V)
    );
    let compat = Keys::new("secret", &[], true);
    assert_eq!(
        compat.verify(&q(&format!("v={PATH_ONLY}")), &c, 0, 60),
        Ok(Scheme::V)
    );
}

#[test]
fn query_parsing() {
    let s = SignedQuery::parse(Some("expires=5&v3=ab%63d&x=1&x=2"));
    assert_eq!(s.scheme, Some((Scheme::V3, "abcd".to_string())));
    assert_eq!(s.expires.as_deref(), Some("5"));
    assert_eq!(s.repeated, None);
    assert!(!SignedQuery::parse(None).is_signed());
    // A percent-encoded name is the parameter it decodes to.
    let s = SignedQuery::parse(Some("%76=ab"));
    assert_eq!(s.scheme, Some((Scheme::V, "ab".to_string())));
}

#[test]
fn repeated_signature_parameters_are_refused() {
    let k = keys();
    let c = claim("PUT", "foo/bar.jpg", Some(1234), &["image/jpeg"]);
    let g = "00".repeat(32);
    let e = "expires=1700000000";
    for query in [
        format!("v={V}&v={g}"),
        format!("v={g}&v={V}"),
        format!("v={V}&v={V}"),
        format!("v={V}&v1={g}"),
        format!("v={V}&%76={g}"),
        format!("%76={V}&v={g}"),
        format!("v={V}&v2={g}"),
        format!("v2={V2}&v2={g}"),
        format!("token={V2}&token={g}"),
        format!("v2={V2}&token={g}"),
        format!("v3={V3_PUT}&{e}&expires=1700000001"),
        format!("v3={V3_PUT}&{e}&v3={g}"),
        format!("v3={V3_PUT}&{e}&%65xpires=1"),
    ] {
        let parsed = q(&query);
        assert!(parsed.repeated.is_some(), "{query}");
        let claim = if query.starts_with("v3") {
            claim("PUT", "foo/bar.jpg", None, &[])
        } else {
            c
        };
        assert_eq!(
            k.verify(&parsed, &claim, 1_700_000_000, 60),
            Err(AuthError::Repeated),
            "{query}"
        );
    }
}

#[test]
fn v3_lifetime_is_bounded() {
    let q3 = q(&format!("v3={V3_PUT}&expires=1700000000"));
    let c = claim("PUT", "foo/bar.jpg", None, &[]);
    let exp = 1_700_000_000u64;
    // Default: 7 days (+ skew) ahead is the limit.
    let k = keys();
    let edge = exp - DEFAULT_MAX_URL_LIFETIME_SECS - 60;
    assert_eq!(k.verify(&q3, &c, edge, 60), Ok(Scheme::V3));
    assert_eq!(
        k.verify(&q3, &c, edge - 1, 60),
        Err(AuthError::LifetimeExceeded)
    );
    // Configured: 600 s.
    let k = keys().with_max_lifetime(600);
    assert_eq!(k.verify(&q3, &c, exp - 660, 60), Ok(Scheme::V3));
    assert_eq!(
        k.verify(&q3, &c, exp - 661, 60),
        Err(AuthError::LifetimeExceeded)
    );
    // A forged MAC stays "mismatch", whatever its expiry.
    let forged = q(&format!("v3={}&expires=1700000000", "00".repeat(32)));
    assert_eq!(k.verify(&forged, &c, 0, 60), Err(AuthError::Mismatch));
    // Far-future expiries do not overflow.
    let k = keys().with_max_lifetime(u64::MAX);
    assert_eq!(k.verify(&q3, &c, u64::MAX, 0), Err(AuthError::Expired));
}

/// Parameter names a query may carry: signature ones (plain and encoded) and others.
const NAMES: &[&str] = &[
    "v",
    "v1",
    "v2",
    "token",
    "v3",
    "expires",
    "%76",
    "%76%33",
    "%65xpires",
    "x",
    "size",
    "V",
    "vv",
    "",
];

/// Which signature slot a name fills: 0 = a scheme, 1 = `expires`, none otherwise.
fn slot(name: &str) -> Option<usize> {
    match name {
        "v" | "v1" | "v2" | "token" | "v3" | "%76" | "%76%33" => Some(0),
        "expires" | "%65xpires" => Some(1),
        _ => None,
    }
}

proptest::proptest! {
    #[test]
    fn any_repetition_is_refused_and_the_rest_parses_as_before(
        pairs in proptest::collection::vec((0..NAMES.len(), "[0-9a-f]{0,8}"), 0..8)
    ) {
        let query: Vec<String> =
            pairs.iter().map(|(i, v)| format!("{}={v}", NAMES[*i])).collect();
        let parsed = SignedQuery::parse(Some(&query.join("&")));
        let mut counts = [0usize; 2];
        for (i, _) in &pairs {
            if let Some(s) = slot(NAMES[*i]) {
                counts[s] += 1;
            }
        }
        let repeated = counts.iter().any(|&n| n > 1);
        proptest::prop_assert_eq!(parsed.repeated.is_some(), repeated);
        if repeated {
            let c = claim("PUT", "p", Some(1), &[]);
            proptest::prop_assert_eq!(keys().verify(&parsed, &c, 0, 60), Err(AuthError::Repeated));
        } else {
            // At most one of each: exactly the values given, as the old parser read them.
            let first = |s: usize| pairs.iter().find(|(i, _)| slot(NAMES[*i]) == Some(s));
            proptest::prop_assert_eq!(
                parsed.scheme.as_ref().map(|(_, v)| v.clone()),
                first(0).map(|(_, v)| v.clone())
            );
            proptest::prop_assert_eq!(parsed.expires.clone(), first(1).map(|(_, v)| v.clone()));
        }
    }
}

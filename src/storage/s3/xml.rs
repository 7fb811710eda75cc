//! The little XML S3 speaks, read and written by hand: S3's answers are flat (no
//! attributes on the elements read, no CDATA), so finding `<Name>...</Name>` and decoding
//! the five entities and character references is all it takes - lighter than an XML crate.

/// The text of the first `<name>...</name>` in `xml` (still escaped).
pub fn first<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    all(xml, name).into_iter().next()
}

/// The texts of every `<name>...</name>` in `xml`, in order (elements of that name are
/// never nested in S3's answers).
pub fn all<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else {
            break;
        };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

/// The decoded text of the first `<name>` element.
pub fn text(xml: &str, name: &str) -> Option<String> {
    first(xml, name).map(unescape)
}

/// Decodes `&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;` and `&#N;` / `&#xN;` (anything else
/// is kept as it is).
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(end) = tail.find(';').filter(|e| *e <= 10) else {
            out.push('&');
            rest = &tail[1..];
            continue;
        };
        let entity = &tail[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escapes text for an element's content.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The body of CompleteMultipartUpload for `(part number, ETag)` pairs.
pub fn complete_body(parts: &[(u32, String)]) -> String {
    let mut s = String::from("<CompleteMultipartUpload>");
    for (n, etag) in parts {
        s.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
            escape(etag)
        ));
    }
    s.push_str("</CompleteMultipartUpload>");
    s
}

/// An ISO 8601 time as S3 lists it (`2026-12-01T23:15:18.000Z`), to whole seconds.
pub fn parse_iso8601(s: &str) -> Option<std::time::SystemTime> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = super::sigv4::days_from_civil(i64::from(y), mo, d);
    let secs = days * 86400 + i64::from(h * 3600 + mi * 60 + se);
    let secs = u64::try_from(secs).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_found_and_decoded() {
        let xml = r#"<?xml version="1.0"?><ListBucketResult xmlns="x"><Contents><Key>a&amp;b &#x263A;</Key><Size>3</Size></Contents><Contents><Key>c&lt;</Key></Contents><IsTruncated>false</IsTruncated></ListBucketResult>"#;
        let keys: Vec<String> = all(xml, "Contents")
            .into_iter()
            .filter_map(|c| text(c, "Key"))
            .collect();
        assert_eq!(keys, ["a&b \u{263A}", "c<"]);
        assert_eq!(text(xml, "IsTruncated").as_deref(), Some("false"));
        assert_eq!(text(xml, "Missing"), None);
        assert_eq!(unescape("&bogus; & &#99999999;"), "&bogus; & &#99999999;");
    }

    #[test]
    fn the_complete_body_escapes_etags() {
        let body = complete_body(&[(1, "\"abc\"".into())]);
        assert_eq!(
            body,
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>\
             <ETag>&quot;abc&quot;</ETag></Part></CompleteMultipartUpload>"
        );
    }

    #[test]
    fn listed_times_parse() {
        let t = parse_iso8601("2013-05-24T00:00:00.000Z").unwrap();
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            1_369_353_600
        );
        assert!(parse_iso8601("2013-13-24T00:00:00Z").is_none());
        assert!(parse_iso8601("garbage").is_none());
    }
}

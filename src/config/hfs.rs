//! HMAC File Server (HFS) configuration files, taken as they are.
//!
//! Every leaf key of a config file falls in one of four classes:
//!
//! - **(a)** an xferd key (exact spelling): used as is;
//! - **(b)** an HFS key xferd implements: moved to its xferd key with a conversion (a bare
//!   port `"8080"` or `":8080"` becomes `0.0.0.0:8080`, `bind_ip` supplies its host,
//!   `metricsport` becomes `metrics.listen` on the listen host, ...);
//! - **(c)** an HFS key xferd does not implement (or HFS itself never reads): accepted, kept in
//!   [`HfsCompat`], and named with its reason in one start-up warning;
//! - **(d)** anything else: an error naming the key and the nearest valid spelling.
//!
//! HFS reads its config through viper: keys match case-insensitively and unknown keys are
//! silently ignored. Here HFS keys also match case-insensitively (xferd's own keys stay
//! exact), and the spellings HFS ignores are class (c) with a reason that names the spelling
//! HFS does read (`file_ttl_enabled` is not `filettlenabled`). The table of keys is data, in
//! `hfs/keys.rs`. Values kept for later feature work (file TTL, deduplication, ClamAV, Redis,
//! quotas, ...) are parsed here with HFS's units, so a bad value is an error now, naming the
//! key, rather than a surprise when the feature arrives.

mod compat;
mod keys;

pub use compat::HfsCompat;

use super::{fields, ConfigError};
use std::collections::BTreeSet;
use toml::{Table, Value};

/// What xferd does with an HFS key.
#[derive(Debug, Clone, Copy)]
pub enum Disposition {
    /// Class (b): applied as this xferd key (`section.key`).
    Map(&'static str),
    /// Class (c): accepted, not applied, for this reason.
    Keep(&'static str),
}

/// The class of one key of a config file (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyClass {
    /// (a) an xferd key.
    Xferd,
    /// (b) an HFS key mapped to an xferd key.
    Mapped,
    /// (c) an HFS key accepted but not applied.
    Accepted,
}

impl KeyClass {
    /// `a`, `b` or `c`.
    pub fn letter(self) -> char {
        match self {
            KeyClass::Xferd => 'a',
            KeyClass::Mapped => 'b',
            KeyClass::Accepted => 'c',
        }
    }
}

/// One key of a config file: as written, its value (secrets redacted), its class and what
/// xferd does with it.
#[derive(Debug, Clone)]
pub struct KeyReport {
    pub key: String,
    pub value: String,
    pub class: KeyClass,
    pub meaning: String,
}

/// A config table with the HFS keys translated, plus what was done.
pub(super) struct Translated {
    /// Only xferd keys remain.
    pub table: Table,
    pub compat: HfsCompat,
    pub report: Vec<KeyReport>,
    pub warnings: Vec<String>,
}

/// One leaf of the config file.
struct Leaf {
    /// As written, e.g. `["clamav", "clamavEnabled"]`.
    path: Vec<String>,
    value: Value,
}

impl Leaf {
    fn key(&self) -> String {
        self.path.join(".")
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// Classifies every key of `table` and moves the class (b) keys to their xferd names.
pub(super) fn translate(table: Table) -> Result<Translated, ConfigError> {
    let mut leaves = Vec::new();
    flatten(Vec::new(), table, &mut leaves);
    let mut out = Table::new();
    let mut passthrough = Table::new();
    let mut report = Vec::new();
    let mut mapped: Vec<(Leaf, String)> = Vec::new();
    let mut kept: Vec<(Leaf, &'static str)> = Vec::new();
    let mut seen = BTreeSet::new();
    for leaf in leaves {
        let key = leaf.key();
        if !seen.insert(key.to_ascii_lowercase()) {
            return Err(invalid(
                &key,
                "is set twice (HFS matches keys case-insensitively)",
            ));
        }
        let section = leaf.path.first().map(String::as_str).unwrap_or("");
        let is_xferd_section = fields::sections().contains(&section);
        if is_xferd_section && fields::keys(section).is_none() {
            // A section this module does not list: serde checks it.
            report.push(KeyReport {
                value: shown(&key, &leaf.value),
                key: key.clone(),
                class: KeyClass::Xferd,
                meaning: "xferd key".into(),
            });
            insert(&mut passthrough, &leaf.path, leaf.value);
            continue;
        }
        if let ([sec, name], Some(known)) = (leaf.path.as_slice(), fields::keys(section)) {
            if known.contains(&name.as_str()) {
                report.push(KeyReport {
                    key: key.clone(),
                    value: shown(&key, &leaf.value),
                    class: KeyClass::Xferd,
                    meaning: "xferd key".into(),
                });
                insert(&mut out, &[sec.clone(), name.clone()], leaf.value);
                continue;
            }
        }
        // A known sub-section of an xferd section (`[storage.s3]`).
        if let [sec, sub, rest @ ..] = leaf.path.as_slice() {
            let known = fields::keys(&format!("{sec}.{sub}"));
            let empty = rest.is_empty() && leaf.value.as_table().is_some_and(|t| t.is_empty());
            if known.is_some_and(|k| empty || matches!(rest, [n] if k.contains(&n.as_str()))) {
                report.push(KeyReport {
                    key: key.clone(),
                    value: shown(&key, &leaf.value),
                    class: KeyClass::Xferd,
                    meaning: "xferd key".into(),
                });
                insert(&mut out, &leaf.path, leaf.value);
                continue;
            }
        }
        if leaf.value.as_table().is_some_and(|t| t.is_empty()) {
            if is_xferd_section && leaf.path.len() == 1 {
                insert(&mut out, &leaf.path, leaf.value);
            } else if is_hfs_section(&leaf.path) {
                kept.push((leaf, "empty HFS section"));
            } else {
                return Err(unknown(&leaf.path));
            }
            continue;
        }
        match disposition(&leaf.path) {
            Some(Disposition::Map(to)) => mapped.push((leaf, to.to_string())),
            Some(Disposition::Keep(why)) => kept.push((leaf, why)),
            None => match xferd_case_variant(&leaf.path) {
                Some(to) => mapped.push((leaf, to)),
                None => return Err(unknown(&leaf.path)),
            },
        }
    }
    // The listen address first: `metricsport` takes its host.
    mapped.sort_by_key(|(l, _)| {
        !matches!(
            l.key().to_ascii_lowercase().as_str(),
            "server.listen_address" | "server.listenport" | "server.bind_ip"
        )
    });
    let mut warnings = Vec::new();
    let hfs_file = !mapped.is_empty() || !kept.is_empty();
    apply_mapped(&mut out, mapped, &mut report, &mut warnings)?;
    let compat = compat::keep(kept, &mut report, &mut warnings)?;
    if hfs_file {
        hfs_defaults(&mut out, &mut warnings);
        super::dedup::hfs_pair(&mut out, &mut report);
    }
    if let Some(Value::String(secret)) = out.get("security").and_then(|s| s.get("secret")) {
        if secret.contains('$') {
            warnings.push(
                "security.secret contains `$`: it is used literally, as HFS does (neither \
                 expands environment variables such as ${VAR})"
                    .into(),
            );
        }
    }
    for (name, value) in passthrough {
        out.insert(name, value);
    }
    Ok(Translated {
        table: out,
        compat,
        report,
        warnings,
    })
}

/// A file with HFS keys is read as HFS reads it: where it does not set them, the keys xferd
/// maps take HFS's defaults (HFS listens on port 8080 on every interface, stores in
/// `./uploads`, and serves no metrics).
fn hfs_defaults(out: &mut Table, warnings: &mut Vec<String>) {
    let mut applied = Vec::new();
    for (sec, key, value) in [
        ("server", "listen", Value::String("0.0.0.0:8080".into())),
        ("server", "storage_path", Value::String("./uploads".into())),
        ("metrics", "enabled", Value::Boolean(false)),
    ] {
        let section = out
            .entry(sec.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        if let Value::Table(t) = section {
            if !t.contains_key(key) {
                applied.push(format!("{sec}.{key} = {value}"));
                t.insert(key.to_string(), value);
            }
        }
    }
    if !applied.is_empty() {
        warnings.push(format!(
            "HFS configuration: HFS's defaults apply where it sets nothing: {}",
            applied.join(", ")
        ));
    }
}

/// Every leaf (a value that is not a table, or an empty table), with its path.
fn flatten(path: Vec<String>, table: Table, out: &mut Vec<Leaf>) {
    for (name, value) in table {
        let mut p = path.clone();
        p.push(name);
        match value {
            // An empty table is kept as a leaf, so an unknown empty section is still caught.
            Value::Table(t) if t.is_empty() => out.push(Leaf {
                path: p,
                value: Value::Table(t),
            }),
            Value::Table(t) => flatten(p, t, out),
            value => out.push(Leaf { path: p, value }),
        }
    }
}

fn insert(table: &mut Table, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            if !entry.is_table() {
                *entry = Value::Table(Table::new());
            }
            if let Value::Table(t) = entry {
                insert(t, rest, value);
            }
        }
    }
}

/// The HFS table entry for a key path, matched case-insensitively.
fn disposition(path: &[String]) -> Option<Disposition> {
    let lower = path.join(".").to_ascii_lowercase();
    if let Ok(i) = keys::HFS_KEYS.binary_search_by(|(k, _)| (*k).cmp(lower.as_str())) {
        return keys::HFS_KEYS.get(i).map(|(_, d)| *d);
    }
    // `[quotas.custom] "jid" = "10GB"`: the names are JIDs.
    if let [q, c, _] = path {
        if q.eq_ignore_ascii_case("quotas") && c.eq_ignore_ascii_case("custom") {
            return Some(Disposition::Keep(keys::R39));
        }
    }
    None
}

/// Whether HFS keys live under this table path (`file`, `admin.auth`).
fn is_hfs_section(path: &[String]) -> bool {
    let prefix = format!("{}.", path.join(".").to_ascii_lowercase());
    keys::HFS_KEYS.iter().any(|(k, _)| k.starts_with(&prefix))
}

/// An xferd key in HFS's case-insensitive spelling (`Storage_Path`) -> `server.storage_path`.
fn xferd_case_variant(path: &[String]) -> Option<String> {
    let [sec, name] = path else { return None };
    let sec = sec.to_ascii_lowercase();
    let known = fields::keys(&sec)?;
    let k = known.iter().find(|k| k.eq_ignore_ascii_case(name))?;
    Some(format!("{sec}.{k}"))
}

/// The class (d) error: the key, and the nearest spelling among xferd's and HFS's keys.
fn unknown(path: &[String]) -> ConfigError {
    let key = path.join(".");
    let Some((name, parent)) = path.split_last() else {
        return invalid(&key, "unknown key");
    };
    let parent_dotted = parent.join(".").to_ascii_lowercase();
    let mut candidates: Vec<String> = Vec::new();
    if let [sec] = parent {
        if let Some(known) = fields::keys(sec) {
            candidates.extend(known.iter().map(|k| format!("{sec}.{k}")));
        }
    }
    let hfs_in_section: Vec<String> = keys::HFS_KEYS
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| k.rsplit_once('.').is_some_and(|(p, _)| p == parent_dotted))
        .map(String::from)
        .collect();
    candidates.extend(hfs_in_section);
    let section_known = !candidates.is_empty();
    if !section_known {
        // Unknown section: suggest a section.
        let mut sections: BTreeSet<String> =
            fields::sections().iter().map(|s| s.to_string()).collect();
        sections.extend(
            keys::HFS_KEYS
                .iter()
                .filter_map(|(k, _)| k.rsplit_once('.').map(|(p, _)| p.to_string())),
        );
        let want = parent.join(".");
        let hint = fields::nearest(&want, sections.iter().map(String::as_str))
            .map(|s| format!("; did you mean [{s}]?"))
            .unwrap_or_default();
        return invalid(
            &key,
            format!("unknown key: [{want}] is neither an xferd nor an HFS section{hint}"),
        );
    }
    let last = |c: &String| {
        c.rsplit_once('.')
            .map(|(_, k)| k.to_string())
            .unwrap_or_default()
    };
    let names: Vec<String> = candidates.iter().map(last).collect();
    let hint = fields::nearest(name, names.iter().map(String::as_str))
        .and_then(|n| candidates.iter().find(|c| last(c) == n))
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default();
    invalid(&key, format!("unknown key{hint}"))
}

/// What the explain table shows as a value; secrets are never shown.
fn shown(key: &str, value: &Value) -> String {
    let k = key.to_ascii_lowercase();
    if ["secret", "password", "token", "redis_url"]
        .iter()
        .any(|s| k.contains(s))
    {
        return "<redacted>".into();
    }
    let text = value.to_string();
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// Applies the class (b) keys; two keys for the same xferd key are a conflict.
fn apply_mapped(
    out: &mut Table,
    mapped: Vec<(Leaf, String)>,
    report: &mut Vec<KeyReport>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let lower = |l: &Leaf| l.key().to_ascii_lowercase();
    let find = |name: &str| mapped.iter().find(|(l, _)| lower(l) == name);
    let bind_ip = find("server.bind_ip").map(|(l, _)| l);
    let metrics_on = find("server.metricsenabled").map(|(l, _)| l.value.as_bool() == Some(true));
    let mut names = Vec::new();
    for (leaf, to) in &mapped {
        let key = leaf.key();
        let lkey = lower(leaf);
        let (value, meaning) = match lkey.as_str() {
            "server.bind_ip" => {
                let listen = find("server.listen_address").or_else(|| find("server.listenport"));
                let bare = |l: &Leaf| match &l.value {
                    Value::String(t) => t.trim().trim_start_matches(':').parse::<u16>().is_ok(),
                    Value::Integer(_) => true,
                    _ => false,
                };
                let note = if let Some((l, _)) = listen {
                    if bare(l) {
                        "host of server.listen".to_string()
                    } else {
                        format!("unused: {} names its host", l.key())
                    }
                } else {
                    // HFS's default port is 8080.
                    let addr = listen_from(Some(leaf), &Value::String("8080".into()), &key)?;
                    set(out, to, Value::String(addr.clone()), &key)?;
                    format!("server.listen = {addr} (HFS's default port 8080)")
                };
                report.push(entry(leaf, KeyClass::Mapped, note));
                names.push(format!("{key} -> {to}"));
                continue;
            }
            "server.listen_address" | "server.listenport" => {
                let addr = listen_from(bind_ip, &leaf.value, &key)?;
                (
                    Some(Value::String(addr.clone())),
                    format!("server.listen = {addr}"),
                )
            }
            "server.metricsport" => {
                let port = port_of(&leaf.value)
                    .ok_or_else(|| invalid(&key, "must be a port number like \"9090\""))?;
                if metrics_on == Some(true) {
                    let host = listen_host(out);
                    let addr = join_host_port(&host, port);
                    (
                        Some(Value::String(addr.clone())),
                        format!("metrics.listen = {addr} (host of server.listen)"),
                    )
                } else {
                    (
                        None,
                        "unused: metrics are off (server.metricsenabled)".into(),
                    )
                }
            }
            // HFS deduplicates only with both switches on (see `super::dedup`).
            "server.deduplication_enabled" => {
                (None, super::dedup::hfs_server_switch(out, &leaf.value))
            }
            // HFS reads `filettl` first; `max_file_age` is its fallback.
            "server.max_file_age" if find("server.filettl").is_some() => (
                None,
                "unused: server.filettl is set (HFS reads it first)".into(),
            ),
            "uploads.chunk_size" | "uploads.chunksize"
                if leaf
                    .value
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("adaptive")) =>
            {
                (
                    None,
                    "\"adaptive\": xferd's performance.intelligent_chunking (on by default)".into(),
                )
            }
            _ => (Some(leaf.value.clone()), to.to_string()),
        };
        if let Some(v) = value {
            set(out, to, v, &key)?;
        }
        report.push(entry(leaf, KeyClass::Mapped, meaning));
        names.push(format!("{key} -> {to}"));
    }
    if !names.is_empty() {
        warnings.push(format!(
            "HFS keys mapped to xferd keys ({}): {}",
            names.len(),
            names.join(", ")
        ));
    }
    Ok(())
}

fn entry(leaf: &Leaf, class: KeyClass, meaning: impl Into<String>) -> KeyReport {
    let key = leaf.key();
    KeyReport {
        value: shown(&key, &leaf.value),
        key,
        class,
        meaning: meaning.into(),
    }
}

/// Sets `to` (`section.key`) unless it is already set.
fn set(out: &mut Table, to: &str, value: Value, from: &str) -> Result<(), ConfigError> {
    let (sec, key) = to.split_once('.').unwrap_or(("", to));
    let section = out
        .entry(sec.to_string())
        .or_insert_with(|| Value::Table(Table::new()));
    let Value::Table(section) = section else {
        return Err(invalid(sec, "must be a table"));
    };
    if section.contains_key(key) {
        return Err(invalid(
            from,
            format!("HFS key conflicts with `{to}`, which is also set"),
        ));
    }
    section.insert(key.to_string(), value);
    Ok(())
}

/// HFS listens on `bind_ip + ":" + listen_address`; `listen_address` is a bare port
/// (`"8080"`), `":8080"`, or (accepted here, though HFS would fail) a whole `host:port`.
fn listen_from(bind_ip: Option<&Leaf>, value: &Value, key: &str) -> Result<String, ConfigError> {
    let text = match value {
        Value::String(s) => s.trim().to_string(),
        Value::Integer(i) => i.to_string(),
        _ => return Err(invalid(key, "must be a port like \"8080\" or \":8080\"")),
    };
    let port = text.strip_prefix(':').unwrap_or(&text);
    if !port.chars().all(|c| c.is_ascii_digit()) {
        // A whole address (HFS itself would fail on it).
        return match text.parse::<std::net::SocketAddr>() {
            Ok(a) => Ok(a.to_string()),
            Err(_) => Err(invalid(
                key,
                format!("`{text}` is neither a port nor an address like \"0.0.0.0:8080\""),
            )),
        };
    }
    if port.parse::<u16>().is_err() {
        return Err(invalid(key, format!("`{text}` is not a port (1-65535)")));
    }
    let host = match bind_ip {
        None => "0.0.0.0".to_string(),
        Some(leaf) => {
            let ip = leaf.value.as_str().map(str::trim).unwrap_or("");
            match ip.parse::<std::net::IpAddr>() {
                Ok(_) => ip.to_string(),
                Err(_) if ip.is_empty() => "0.0.0.0".to_string(),
                Err(_) => return Err(invalid(&leaf.key(), format!("`{ip}` is not an IP address"))),
            }
        }
    };
    Ok(join_host_port(&host, port.parse::<u16>().unwrap_or(0)))
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The host of the `server.listen` already set, else xferd's default.
fn listen_host(out: &Table) -> String {
    out.get("server")
        .and_then(|s| s.get("listen"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "0.0.0.0".into())
}

fn port_of(value: &Value) -> Option<u16> {
    match value {
        Value::Integer(i) => u16::try_from(*i).ok(),
        Value::String(s) => s.trim().trim_start_matches(':').parse().ok(),
        _ => None,
    }
    .filter(|p| *p != 0)
}

/// The `check-config --explain` table: key, value, class, what xferd does; then the counts.
pub fn explain(report: &[KeyReport]) -> String {
    use std::fmt::Write;
    let kw = report.iter().map(|r| r.key.len()).max().unwrap_or(0).max(3);
    let vw = report
        .iter()
        .map(|r| r.value.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut out = format!("{:kw$}  {:vw$}  class  what xferd does\n", "key", "value");
    for r in report {
        let _ = writeln!(
            out,
            "{:kw$}  {:vw$}  {}      {}",
            r.key,
            r.value,
            r.class.letter(),
            r.meaning
        );
    }
    let (a, b, c) = counts(report);
    let _ = writeln!(
        out,
        "keys: {} (a: {a} xferd, b: {b} HFS mapped, c: {c} HFS accepted, not applied)",
        report.len()
    );
    out
}

/// Per-class counts of a report: `(a, b, c)`.
pub fn counts(report: &[KeyReport]) -> (usize, usize, usize) {
    let n = |class| report.iter().filter(|r| r.class == class).count();
    (
        n(KeyClass::Xferd),
        n(KeyClass::Mapped),
        n(KeyClass::Accepted),
    )
}

#[cfg(test)]
mod tests;

//! Target `config`: the TOML configuration loader, HFS key translation included.

use xferd::config::{Config, ConfigError};

const ORIGIN: &str = "fuzz.toml";

/// Input: a config file (UTF-8; other bytes are refused before parsing, as `Config::load`
/// does).
///
/// Properties: loading is deterministic; a config that loads still loads, to the same
/// settings and warnings, when its TOML table is written back out by the `toml` crate
/// (the outcome depends on the data, not its formatting); an error names the file
/// (syntax) or a key (validation): a dotted xferd key or one spelled as in the file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, ORIGIN) {
        Ok(loaded) => {
            let again = Config::parse(text, ORIGIN).expect("loads twice");
            assert_eq!(
                format!("{:?}", again.config),
                format!("{:?}", loaded.config)
            );
            let table: toml::Table = toml::from_str(text).expect("loaded text is TOML");
            let Ok(written) = toml::to_string(&table) else {
                return;
            };
            let back = Config::parse(&written, ORIGIN)
                .unwrap_or_else(|e| panic!("written back, {written:?} fails: {e}"));
            assert_eq!(format!("{:?}", back.config), format!("{:?}", loaded.config));
            assert_eq!(back.warnings, loaded.warnings);
        }
        Err(ConfigError::Parse { path, message }) => {
            assert_eq!(path, ORIGIN);
            assert!(!message.is_empty());
        }
        Err(ConfigError::Invalid { key, message }) => {
            assert!(!message.is_empty(), "{key:?}");
            // An empty key only where the file has one (`[""]`, `"" = 1`).
            let empty_key = text.contains("\"\"") || text.contains("''");
            assert!(!key.is_empty() || empty_key, "empty key for {message:?}");
            // A dotted xferd key, or a key of the file: as it spells it, or as TOML reads a
            // quoted key (`["a\\b"]` is the key `a\b`).
            assert!(
                key.contains('.') || text.contains(&key) || keys_of(text).contains(&key),
                "{key:?} is not a key"
            );
        }
        Err(e @ ConfigError::Read { .. }) => panic!("text cannot fail to read: {e}"),
    }
}

/// Every key of the TOML document `text`, tables and arrays of tables included.
fn keys_of(text: &str) -> Vec<String> {
    fn walk(t: &toml::Table, out: &mut Vec<String>) {
        for (k, v) in t {
            out.push(k.clone());
            match v {
                toml::Value::Table(t) => walk(t, out),
                toml::Value::Array(a) => a.iter().for_each(|x| {
                    if let toml::Value::Table(t) = x {
                        walk(t, out)
                    }
                }),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(t) = toml::from_str::<toml::Table>(text) {
        walk(&t, &mut out);
    }
    out
}

//! Unit tests of the HFS key translation (the 19 real HFS files are in tests/hfs_configs.rs).

use super::*;
use crate::config::{Config, Loaded};
use std::path::PathBuf;
use std::time::Duration;

fn parse(text: &str) -> Result<Loaded, ConfigError> {
    Config::parse(text, "test.toml")
}

fn class_of(l: &Loaded, key: &str) -> Option<KeyClass> {
    l.report.iter().find(|r| r.key == key).map(|r| r.class)
}

#[test]
fn key_table_is_sorted_lower_case_and_unique() {
    for pair in keys::HFS_KEYS.windows(2) {
        if let [(a, _), (b, _)] = pair {
            assert!(a < b, "{a} !< {b}");
        }
    }
    for (k, _) in keys::HFS_KEYS {
        assert_eq!(*k, k.to_ascii_lowercase());
    }
}

#[test]
fn mapped_targets_are_xferd_keys() {
    for (k, d) in keys::HFS_KEYS {
        if let Disposition::Map(to) = d {
            let (sec, key) = to.split_once('.').unwrap();
            let known = fields::keys(sec).unwrap_or_else(|| panic!("{k}: section {sec}"));
            assert!(known.contains(&key), "{k} -> {to}");
        }
    }
}

#[test]
fn hfs_keys_are_mapped_with_one_warning() {
    let loaded = parse(
        "[server]\nlisten_address = \":8080\"\nmax_upload_size = \"1GB\"\n\
         [uploads]\nallowed_extensions = [\".JPG\", \"png\"]\n[security]\nsecret = \"s\"\n",
    )
    .unwrap();
    let c = &loaded.config;
    assert_eq!(c.server.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.server.allowed_extensions, vec!["jpg", "png"]);
    assert_eq!(c.security.secret.as_deref(), Some("s"));
    assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
    assert!(loaded.warnings[0].contains("server.listen_address -> server.listen"));
    assert!(loaded.warnings[0].contains("uploads.allowed_extensions"));
    // HFS's defaults for what the file leaves out: ./uploads, no metrics.
    assert!(loaded.warnings[1].contains("server.storage_path = \"./uploads\""));
    assert_eq!(c.server.storage_path, PathBuf::from("./uploads"));
    assert!(!c.metrics.enabled);
    assert_eq!(
        class_of(&loaded, "server.listen_address"),
        Some(KeyClass::Mapped)
    );
    assert_eq!(
        class_of(&loaded, "server.max_upload_size"),
        Some(KeyClass::Xferd)
    );
}

#[test]
fn hfs_key_conflicting_with_xferd_key_is_an_error() {
    let err = parse("[server]\nlisten_address = \"8080\"\nlisten = \"127.0.0.1:1\"\n").unwrap_err();
    assert!(err.to_string().contains("listen_address"), "{err}");
    let err = parse("[server]\nlisten_address = \"8080\"\nlistenport = \"8081\"\n").unwrap_err();
    assert!(err.to_string().contains("server.listen"), "{err}");
}

#[test]
fn bare_port_takes_bind_ip_and_metricsport_takes_the_listen_host() {
    let c = parse(
        "[server]\nmetricsport = 9090\nmetricsenabled = true\nbind_ip = \"127.0.0.2\"\n\
         listen_address = \"8888\"\n",
    )
    .unwrap()
    .config;
    assert_eq!(c.server.listen, "127.0.0.2:8888".parse().unwrap());
    assert!(c.metrics.enabled);
    assert_eq!(c.metrics.listen, Some("127.0.0.2:9090".parse().unwrap()));
    // metricsport without metricsenabled: no separate listener; HFS's default is off.
    let c = parse("[server]\nmetricsport = \"9090\"\nmetricsenabled = false\n")
        .unwrap()
        .config;
    assert!(!c.metrics.enabled);
    assert_eq!(c.metrics.listen, None);
    let err = parse("[server]\nlisten_address = \"99999\"\n").unwrap_err();
    assert!(err.to_string().contains("listen_address"), "{err}");
    let err =
        parse("[server]\nbind_ip = \"localhost-ish\"\nlisten_address = \"80\"\n").unwrap_err();
    assert!(err.to_string().contains("bind_ip"), "{err}");
}

#[test]
fn hfs_keys_match_case_insensitively_xferd_keys_exactly() {
    let l = parse("[ClamAV]\nclamavEnabled = true\n[server]\nStorage_Path = \"/x\"\n").unwrap();
    assert!(l.config.scan.enabled);
    assert_eq!(l.config.server.storage_path, PathBuf::from("/x"));
    assert_eq!(class_of(&l, "server.Storage_Path"), Some(KeyClass::Mapped));
    let err = parse("[clamav]\nclamavenabled = true\nClamAVEnabled = false\n").unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
}

#[test]
fn unknown_keys_name_the_nearest_spelling() {
    let err = parse("[server]\nlisten_adress = \"1.2.3.4:1\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.listen_adress"), "{err}");
    assert!(err.contains("`server.listen_address`"), "{err}");
    let err = parse("[clamav]\nclamavenabeld = true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`clamav.clamavenabled`"), "{err}");
    let err = parse("[server]\nstorge_path = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`server.storage_path`"), "{err}");
    let err = parse("[clamv]\nclamavenabled = true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("[clamav]"), "{err}");
    let err = parse("[nonsense]\nx = 1\n").unwrap_err().to_string();
    assert!(err.contains("nonsense"), "{err}");
    assert!(parse("top_level = 1\n").is_err());
}

#[test]
fn ttl_follows_hfs_spellings_and_units() {
    let ttl = |text: &str| {
        let e = parse(text).unwrap().config.expiry;
        e.enabled.then_some(e.max_age)
    };
    let day = 86400;
    assert_eq!(
        ttl("[server]\nfilettlenabled = true\nfilettl = \"2y\"\n"),
        Some(Duration::from_secs(730 * day))
    );
    assert_eq!(
        ttl("[server]\nfilettlenabled = true\nfilettl = \"2w\"\n"),
        Some(Duration::from_secs(14 * day))
    );
    // Fallbacks: max_file_age, then 720h.
    assert_eq!(
        ttl("[server]\nfilettlenabled = true\nmax_file_age = \"7d\"\n"),
        Some(Duration::from_secs(7 * day))
    );
    assert_eq!(
        ttl("[server]\nfilettlenabled = true\n"),
        Some(Duration::from_secs(30 * day))
    );
    // The documented spelling is one HFS does not read: no TTL, and the warning says so.
    let l = parse("[server]\nfile_ttl_enabled = true\nfile_ttl = \"1d\"\n").unwrap();
    assert!(!l.config.expiry.enabled);
    assert!(
        l.warnings.iter().any(|w| w.contains("filettlenabled")),
        "{:?}",
        l.warnings
    );
    let err = parse("[server]\nfilettlenabled = true\nfilettl = \"3 days\"\n").unwrap_err();
    assert!(err.to_string().contains("3 days"), "{err}");
    // filettl wins over max_file_age (HFS's order); cleanup_interval is the sweep's.
    let l = parse(
        "[server]\nfilettlenabled = true\nfilettl = \"168h\"\nmax_file_age = \"720h\"\n\
         cleanup_interval = \"6h\"\n",
    )
    .unwrap();
    assert_eq!(l.config.expiry.max_age, Duration::from_secs(7 * day));
    assert_eq!(
        l.config.expiry.sweep_interval,
        Duration::from_secs(6 * 3600)
    );
    // filettlenabled = false: nothing expires, whatever filettl says.
    assert_eq!(
        ttl("[server]\nfilettlenabled = false\nfilettl = \"1h\"\n"),
        None
    );
}

#[test]
fn accepted_keys_are_one_warning_with_reasons() {
    let l = parse(
        "[server]\npid_file = \"/run/h.pid\"\ndeduplication_enabled = true\n\
         [deduplication]\nenabled = true\nmaxsize = \"1GB\"\n[redis]\nredisenabled = true\n\
         redispassword = \"hunter2\"\n[iso]\nenabled = true\n",
    )
    .unwrap();
    let c = &l.config.hfs;
    assert!(l.config.deduplication.enabled && c.redis_enabled && !c.clamav_enabled);
    assert_eq!(c.dedup_max_size, Some(1 << 30));
    // The dedup switches are applied (xferd's key and its HFS alias), the rest kept.
    assert_eq!(l.warnings.len(), 3, "{:?}", l.warnings);
    assert!(l.warnings[0].contains("server.deduplication_enabled -> deduplication.enabled"));
    let w = &l.warnings[1];
    for key in [
        "server.pid_file",
        "deduplication.maxsize",
        "redis.redispassword",
    ] {
        assert!(w.contains(key), "{w}");
    }
    assert!(w.contains("iso.enabled: unsafe in HFS"), "{w}");
    assert!(!w.contains("hunter2") && !format!("{:?}", l.config).contains("hunter2"));
    let shown = l
        .report
        .iter()
        .find(|r| r.key == "redis.redispassword")
        .unwrap();
    assert_eq!(shown.value, "<redacted>");
    assert_eq!(counts(&l.report), (1, 1, 5));
}

#[test]
fn dedup_needs_both_switches_like_hfs() {
    // `[deduplication] enabled` alone is xferd's own key.
    let c = parse("[deduplication]\nenabled = true\n").unwrap().config;
    assert!(c.deduplication.enabled);
    let c = parse("[server]\ndeduplication_enabled = true\n")
        .unwrap()
        .config;
    assert!(!c.deduplication.enabled);
    let off = "[server]\ndeduplication_enabled = true\n[deduplication]\nenabled = false\n";
    assert!(!parse(off).unwrap().config.deduplication.enabled);
    let off = "[server]\ndeduplication_enabled = false\n[deduplication]\nenabled = true\n";
    assert!(!parse(off).unwrap().config.deduplication.enabled);
    let both = "[server]\ndeduplication_enabled = true\n[deduplication]\nenabled = true\n";
    assert!(parse(both).unwrap().config.deduplication.enabled);
}

#[test]
fn secret_with_env_syntax_is_literal_and_warned() {
    let l = parse("[security]\nsecret = \"${HMAC_SECRET}\"\n").unwrap();
    assert_eq!(l.config.security.secret.as_deref(), Some("${HMAC_SECRET}"));
    assert!(
        l.warnings.iter().any(|w| w.contains("literally")),
        "{:?}",
        l.warnings
    );
    assert!(!l.report.iter().any(|r| r.value.contains("HMAC_SECRET")));
}

#[test]
fn adaptive_chunk_size_keeps_the_default() {
    let l = parse("[uploads]\nchunk_size = \"adaptive\"\n").unwrap();
    assert_eq!(l.config.resumable.chunk_size, 8 << 20);
    let c = parse("[uploads]\nchunksize = \"32MB\"\n").unwrap().config;
    assert_eq!(c.resumable.chunk_size, 32 << 20);
}

#[test]
fn empty_sections_are_checked_too() {
    let l = parse("[file]\n[metrics]\n").unwrap();
    assert_eq!(class_of(&l, "file"), Some(KeyClass::Accepted));
    let err = parse("[bogus]\n").unwrap_err().to_string();
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn xferd_files_keep_xferd_defaults_hfs_files_get_hfs_defaults() {
    let x = parse("[server]\nmax_upload_size = \"1GB\"\n").unwrap();
    assert!(x.warnings.is_empty());
    assert_eq!(x.config.server.listen.port(), 8443);
    assert!(x.config.metrics.enabled);
    let h = parse("[server]\nport = 8080\n[metrics]\nenabled = true\n").unwrap();
    assert_eq!(h.config.server.listen, "0.0.0.0:8080".parse().unwrap());
    assert!(h.config.metrics.enabled, "an explicit xferd key wins");
}

#[test]
fn aliases_accepted_before_the_table_still_map() {
    let c = parse(
        "[server]\nsecret = \"s\"\nmaxuploadsize = \"1MB\"\nmax_connections_limit = 7\n\
         [tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n",
    )
    .unwrap()
    .config;
    assert_eq!(c.security.secret.as_deref(), Some("s"));
    assert_eq!(c.server.max_upload_size, 1 << 20);
    assert_eq!(c.server.max_connections, 7);
    assert_eq!(c.tls.cert, Some(PathBuf::from("/c.pem")));
    assert_eq!(c.tls.key, Some(PathBuf::from("/k.pem")));
}

#[test]
fn sections_match_case_insensitively_and_whole_addresses_are_checked() {
    let l = parse("[Server]\nstorage_path = \"/s\"\nListen_Address = \"9000\"\n").unwrap();
    assert_eq!(l.config.server.storage_path, PathBuf::from("/s"));
    assert_eq!(l.config.server.listen, "0.0.0.0:9000".parse().unwrap());
    let l =
        parse("[server]\nlisten_address = \"127.0.0.1:7000\"\nbind_ip = \"0.0.0.0\"\n").unwrap();
    assert_eq!(l.config.server.listen, "127.0.0.1:7000".parse().unwrap());
    let bind = l.report.iter().find(|r| r.key == "server.bind_ip").unwrap();
    assert!(bind.meaning.starts_with("unused"), "{}", bind.meaning);
    let err = parse("[server]\nlisten_address = \"localhost:8080\"\n").unwrap_err();
    assert!(err.to_string().contains("server.listen_address"), "{err}");
}

#[test]
fn hfs_rate_limit_section_is_applied_to_uploads() {
    let loaded = parse(
        "[server]\nlisten_address = \"8080\"\n[rate_limit]\nenabled = true\n\
         requests_per_minute = 30\nburst_size = 7\nwhitelisted_ips = [\"10.0.0.0/8\", \"192.0.2.1\"]\n\
         by_ip = true\nby_jid = true\nwhitelisted_jids = [\"a@b\"]\ncleanup_interval = \"5m\"\n",
    )
    .unwrap();
    let rl = &loaded.config.rate_limit;
    assert!(rl.enabled);
    assert_eq!((rl.uploads_per_minute, rl.upload_burst), (30, 7));
    assert_eq!(rl.exempt.len(), 2);
    assert!(rl.exempt[0].contains("10.9.8.7".parse().unwrap()));
    // HFS does not limit downloads; xferd's own default applies to them.
    assert_eq!(rl.downloads_per_minute, 600);
    assert_eq!(
        class_of(&loaded, "rate_limit.enabled"),
        Some(KeyClass::Xferd)
    );
    for k in [
        "rate_limit.requests_per_minute",
        "rate_limit.burst_size",
        "rate_limit.whitelisted_ips",
    ] {
        assert_eq!(class_of(&loaded, k), Some(KeyClass::Mapped), "{k}");
    }
    for k in [
        "rate_limit.by_ip",
        "rate_limit.by_jid",
        "rate_limit.whitelisted_jids",
        "rate_limit.cleanup_interval",
    ] {
        assert_eq!(class_of(&loaded, k), Some(KeyClass::Accepted), "{k}");
    }
    // An entry that is no address is an error naming the key.
    let err = parse("[rate_limit]\nwhitelisted_ips = [\"localhost\"]\n").unwrap_err();
    assert!(err.to_string().contains("exempt"), "{err}");
    // Both spellings of one key conflict.
    let err = parse("[rate_limit]\nrequests_per_minute = 1\nuploads_per_minute = 2\n").unwrap_err();
    assert!(err.to_string().contains("requests_per_minute"), "{err}");
}

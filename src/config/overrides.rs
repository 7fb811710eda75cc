//! Command-line overrides for running a config written for another machine (`xferd serve
//! --storage-path DIR --listen ADDR --state-path DIR --metrics-listen ADDR`), and the start-up
//! check that every directory the config names can be created, as an error naming the key.

use super::{Config, ConfigError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Values given on the command line in place of the config file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `server.storage_path`.
    pub storage_path: Option<PathBuf>,
    /// `server.listen`. Without `metrics_listen`, a separate metrics listener moves to this
    /// host too (its port is kept).
    pub listen: Option<SocketAddr>,
    /// `server.state_path`; the files an HFS config names for features xferd keeps for later
    /// (pid file, log file, metadata database, audit log, deduplication directory) move into
    /// it, keeping their file names.
    pub state_path: Option<PathBuf>,
    /// `metrics.listen` (e.g. when HFS's `metricsport` is taken on this machine).
    pub metrics_listen: Option<SocketAddr>,
}

impl Config {
    /// Applies command-line overrides.
    pub fn apply_overrides(&mut self, o: &Overrides) {
        if let Some(p) = &o.storage_path {
            self.server.storage_path = p.clone();
        }
        if let Some(addr) = o.listen {
            self.server.listen = addr;
            if let (None, Some(m)) = (o.metrics_listen, self.metrics.listen.as_mut()) {
                m.set_ip(addr.ip());
            }
        }
        if let Some(m) = o.metrics_listen {
            self.metrics.listen = Some(m);
        }
        if let Some(dir) = &o.state_path {
            self.server.state_path = dir.clone();
            let h = &mut self.hfs;
            for p in [
                &mut h.pid_file,
                &mut h.log_file,
                &mut h.metadata_db,
                &mut h.audit_log,
                &mut h.dedup_dir,
            ]
            .into_iter()
            .flatten()
            {
                *p = rebase(dir, p);
            }
            if let Some(p) = self.audit.path.as_mut() {
                *p = rebase(dir, p);
            }
        }
    }

    /// Creates the directories the server will write to (`server.storage_path`,
    /// `server.state_path`); a failure is an error naming the key.
    pub fn prepare_paths(&self) -> Result<(), ConfigError> {
        for (key, dir) in [
            ("server.storage_path", &self.server.storage_path),
            ("server.state_path", &self.server.state_path),
        ] {
            create(key, dir)?;
        }
        Ok(())
    }
}

fn create(key: &str, dir: &Path) -> Result<(), ConfigError> {
    let err = |e: std::io::Error| ConfigError::Invalid {
        key: key.to_string(),
        message: format!(
            "cannot create directory {}: {e} (give another one on the command line, e.g. \
             --storage-path or --state-path)",
            dir.display()
        ),
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    if !dir.is_dir() {
        return Err(err(std::io::Error::other("not a directory")));
    }
    Ok(())
}

/// `dir` joined with the file name of `path` (or `path` itself when it has none).
fn rebase(dir: &Path, path: &Path) -> PathBuf {
    match path.file_name() {
        Some(name) => dir.join(name),
        None => dir.join(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_redirect_paths_and_ports() {
        let text = "[server]\nlisten_address = \"8080\"\nstorage_path = \"/nonexistent/u\"\n\
                    metricsenabled = true\nmetricsport = \"9090\"\n\
                    pid_file = \"/var/run/h.pid\"\n[logging]\nfile = \"/var/log/h.log\"\n";
        let mut c = Config::parse(text, "t.toml").unwrap().config;
        assert_eq!(c.metrics.listen, Some("0.0.0.0:9090".parse().unwrap()));
        let tmp = tempfile::tempdir().unwrap();
        c.apply_overrides(&Overrides {
            storage_path: Some(tmp.path().join("s")),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            state_path: Some(tmp.path().join("st")),
            metrics_listen: None,
        });
        assert_eq!(c.server.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(c.hfs.pid_file, Some(tmp.path().join("st").join("h.pid")));
        assert_eq!(c.hfs.log_file, Some(tmp.path().join("st").join("h.log")));
        c.prepare_paths().unwrap();
        assert!(tmp.path().join("s").is_dir() && tmp.path().join("st").is_dir());
    }

    #[test]
    fn uncreatable_directory_is_an_error_naming_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let mut c = Config::default();
        c.server.storage_path = file.join("below");
        c.server.state_path = tmp.path().join("state");
        let err = c.prepare_paths().unwrap_err().to_string();
        assert!(err.contains("server.storage_path"), "{err}");
        c.server.storage_path = tmp.path().join("ok");
        c.server.state_path = file.clone();
        let err = c.prepare_paths().unwrap_err().to_string();
        assert!(err.contains("server.state_path"), "{err}");
    }
}

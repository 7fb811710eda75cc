//! `xferd download URL [FILE]`: parallel range requests on one connection, resumable.
//!
//! 1. `HEAD` gives the length, the `ETag` and whether ranges are served.
//! 2. With ranges, the file is cut into [`PART`] pieces; N workers (the `--streams`, 4 by
//!    default; 1 over HTTP/1.1) fetch them with `Range` + `If-Range: <etag>` and write each
//!    at its offset into `FILE.part`. Without ranges: one `GET`, retried whole.
//! 3. Requests are retried and the breaker applies as for uploads ([`super::chunked`]).
//! 4. Pieces done are recorded in `FILE.xferd-download.json`; a restarted download with the
//!    same ETag continues from it. At the end `FILE.part` is synced and renamed to `FILE`.

use super::chunked::{progress_bar, refuse, save_state, send, Connector, Options, Pieces, Target};
use super::retry::Guard;
use super::Proto;
use anyhow::{bail, Context};
use http::Request;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Size of one range request.
pub const PART: u64 = 8 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct State {
    path: String,
    etag: String,
    len: u64,
    part: u64,
    done: Vec<u64>,
}

/// What happened.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub transfer: super::chunked::Transfer,
    pub parts_resumed: u64,
    pub file: String,
}

fn sibling(file: &Path, suffix: &str) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Downloads `target` into `file`.
pub async fn download(target: Target, file: &Path, opts: Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let conn = Connector::for_options(&target, &opts);
    let guard = Guard::new(opts.policy.clone());
    let retries = AtomicU64::new(0);
    let path_q = target.path_q.clone();
    let head = || {
        let req = Request::builder()
            .method("HEAD")
            .uri(path_q.as_str())
            .body(())?;
        Ok((req, None))
    };
    let a = send(&conn, &guard, &retries, "HEAD", &head).await?;
    if !a.status.is_success() {
        return Err(refuse("download refused", &a));
    }
    let h = |name: &str| a.headers.get(name).and_then(|v| v.to_str().ok());
    let len: u64 = h("content-length")
        .and_then(|v| v.parse().ok())
        .context("the server did not give the file's length")?;
    let etag = h("etag").unwrap_or("").to_string();
    let ranges = h("accept-ranges") == Some("bytes") && !etag.is_empty();
    let part_path = sibling(file, ".part");
    let state_path = opts
        .state
        .clone()
        .unwrap_or_else(|| sibling(file, ".xferd-download.json"));
    let out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&part_path)
        .with_context(|| format!("cannot write {}", part_path.display()))?;
    out.set_len(len)
        .with_context(|| format!("cannot size {} (disk full?)", part_path.display()))?;
    let out = Arc::new(out);
    let mut state = std::fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<State>(&b).ok())
        .filter(|s| s.path == target.path() && s.etag == etag && s.len == len && ranges)
        .unwrap_or(State {
            path: target.path().to_string(),
            etag: etag.clone(),
            len,
            part: PART,
            done: Vec::new(),
        });
    let part = if ranges { state.part } else { len.max(1) };
    let pieces = Pieces::new(len, part, len.div_ceil(part).max(1), &mut state.done);
    let resumed = state.done.len() as u64;
    if resumed > 0 {
        guard.say(format_args!("resuming: {resumed} parts already on disk"));
    }
    let (_, c) = conn.get().await?;
    let streams = if !ranges || c.proto() == Proto::H1 {
        1
    } else {
        opts.streams.unwrap_or(4).clamp(1, 64)
    };
    let bar = progress_bar(len, opts.progress);
    bar.set_position(pieces.done_bytes);
    let shared = Mutex::new(state);
    let worker = |_: usize| async {
        loop {
            let Some((n, offset, size)) = pieces.next() else {
                return Ok::<_, anyhow::Error>(());
            };
            let make = || {
                let mut b = Request::builder().method("GET").uri(path_q.as_str());
                if ranges {
                    b = b
                        .header("range", format!("bytes={offset}-{}", offset + size - 1))
                        .header("if-range", etag.as_str());
                }
                Ok((b.body(())?, None))
            };
            let a = send(&conn, &guard, &retries, &format!("part {n}"), &make).await?;
            let want = if ranges { 206 } else { 200 };
            if a.status.as_u16() != want {
                if a.status.as_u16() == 200 && ranges {
                    // If-Range failed: the ETag changed.
                    bail!("the file changed on the server while downloading; start again");
                }
                return Err(refuse(&format!("part {n} refused"), &a));
            }
            if a.body.len() as u64 != size {
                bail!("part {n}: expected {size} bytes, got {}", a.body.len());
            }
            let (o, body) = (out.clone(), a.body.clone());
            tokio::task::spawn_blocking(move || o.write_all_at(&body, offset))
                .await?
                .context("writing the download (disk full?)")?;
            bar.inc(size);
            if let Ok(mut s) = shared.lock() {
                s.done.push(n);
                if ranges {
                    save_state(&state_path, &*s)?;
                }
            }
        }
    };
    futures_util::future::try_join_all((0..streams).map(worker)).await?;
    bar.finish_and_clear();
    let o = out.clone();
    tokio::task::spawn_blocking(move || o.sync_all()).await??;
    std::fs::rename(&part_path, file)
        .with_context(|| format!("cannot move the download to {}", file.display()))?;
    let _ = std::fs::remove_file(&state_path);
    conn.close().await;
    Ok(Report {
        transfer: conn.transfer(Some(c.proto()), len, started, streams, &retries),
        parts_resumed: resumed,
        file: file.display().to_string(),
    })
}

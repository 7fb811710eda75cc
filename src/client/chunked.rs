//! xferd's own resilient upload client (`xferd upload`).
//!
//! 1. Connect: HTTP/3 first; if UDP is blocked or QUIC fails within [`H3_CONNECT_TIMEOUT`],
//!    HTTP/2, then HTTP/1.1 (or only the version asked for). A broken connection is replaced
//!    by a new one (same order, the last working version first).
//! 2. A v3 URL first tries a session (`/chunked-upload`; granted by a `POST` signature): the
//!    server's answer gives the chunk size and the number of parallel streams (`--streams`
//!    overrides); that many workers share one connection, each taking the next chunk not yet
//!    done and sending it with `Upload-Checksum: sha256`. A refused creation (a `PUT`
//!    signature) and any v/v2/token URL upload with one `PUT`, retried whole.
//! 3. Every request is retried on transport errors and on 408/425/429/5xx with exponential
//!    backoff and jitter; a circuit breaker shared by the workers pauses them all after
//!    repeated failures ([`super::retry`]). Other statuses end the upload with a message.
//! 4. Progress (session id, chunk size, chunks done) is kept in a small state file beside
//!    the source (`FILE.xferd-upload.json`, or `--state`), written after each acknowledged
//!    chunk; a restarted client resumes from it after checking the session with the server,
//!    and removes it when the upload is complete.

use super::retry::{retryable, Guard, Policy};
use super::trust::Trust;
use super::{Client, Proto};
use crate::core::body::BodyStream;
use anyhow::{bail, Context};
use bytes::Bytes;
use http::{Request, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an HTTP/3 handshake may take before falling back to TCP.
pub const H3_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where to upload.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    /// Path and query of the signed URL.
    pub path_q: String,
}

impl Target {
    /// Parses and resolves an `https://` URL.
    pub async fn parse(url: &str) -> anyhow::Result<Target> {
        let uri: http::Uri = url
            .parse()
            .with_context(|| format!("`{url}` is not a URL"))?;
        if uri.scheme_str() != Some("https") {
            bail!("`{url}`: only https:// URLs are supported");
        }
        let host = uri
            .host()
            .context("the URL has no host")?
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("cannot resolve {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        let path_q = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        Ok(Target { addr, host, path_q })
    }

    pub fn path(&self) -> &str {
        self.path_q.split('?').next().unwrap_or("/")
    }

    fn query(&self) -> &str {
        self.path_q.split_once('?').map(|(_, q)| q).unwrap_or("")
    }

    /// Whether the URL carries a v3 signature, which may grant a chunked session (`POST`);
    /// a refused creation falls back to a single `PUT`.
    fn is_v3(&self) -> bool {
        self.query().split('&').any(|kv| kv.starts_with("v3="))
    }
}

/// Client options.
#[derive(Debug, Clone)]
pub struct Options {
    /// `None`: HTTP/3, falling back to HTTP/2 and HTTP/1.1.
    pub only: Option<Proto>,
    pub trust: Trust,
    /// Parallel chunk streams; `None` = the server's advice.
    pub streams: Option<usize>,
    pub policy: Policy,
    pub state: Option<PathBuf>,
    pub progress: bool,
    /// QUIC congestion control.
    pub congestion: super::Congestion,
    /// Which local address reaches the server (a change migrates the QUIC connection).
    pub local_probe: super::migrate::Probe,
}

/// What an upload or a download reports about its connection and time (the JSON report's
/// common fields).
#[derive(Debug, Default, Serialize)]
pub struct Transfer {
    pub protocol: String,
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
    pub streams: usize,
    pub retries: u64,
    pub reconnects: u64,
    /// Reconnections that resumed with 0-RTT.
    pub zero_rtt: u64,
    /// Moves to a new socket after the local address changed (connection migration).
    pub migrations: u64,
}

/// What happened, for the summary line.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub transfer: Transfer,
    pub chunk_size: u64,
    pub chunks_resumed: u64,
    pub server: serde_json::Value,
}

/// Holds the current connection and replaces it when it breaks.
pub struct Connector {
    target: Target,
    trust: Trust,
    only: Option<Proto>,
    state: tokio::sync::Mutex<(u64, Option<Arc<Client>>)>,
    last_good: Mutex<Option<Proto>>,
    h3: tokio::sync::Mutex<Option<Arc<super::H3Context>>>,
    pub reconnects: AtomicU64,
    /// Connections that resumed with 0-RTT.
    pub zero_rtt: AtomicU64,
    verbose: bool,
    congestion: super::Congestion,
    probe: super::migrate::Probe,
    /// Times the QUIC endpoint moved to a new socket because the local address changed.
    pub migrations: Arc<AtomicU64>,
}

impl Connector {
    pub fn new(target: Target, trust: Trust, only: Option<Proto>, verbose: bool) -> Connector {
        Connector {
            target,
            trust,
            only,
            state: tokio::sync::Mutex::new((0, None)),
            last_good: Mutex::new(None),
            h3: tokio::sync::Mutex::new(None),
            reconnects: AtomicU64::new(0),
            zero_rtt: AtomicU64::new(0),
            verbose,
            congestion: super::DEFAULT_CONGESTION,
            probe: super::migrate::Probe::default(),
            migrations: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How the local address towards the server is found (tests change it at will).
    pub fn with_probe(mut self, probe: super::migrate::Probe) -> Connector {
        self.probe = probe;
        self
    }

    /// QUIC congestion control for the connections this connector makes.
    pub fn with_congestion(mut self, congestion: super::Congestion) -> Connector {
        self.congestion = congestion;
        self
    }

    /// The figures of a transfer of `bytes` over `streams` that began at `started`.
    pub(crate) fn transfer(
        &self,
        proto: Option<Proto>,
        bytes: u64,
        started: std::time::Instant,
        streams: usize,
        retries: &AtomicU64,
    ) -> Transfer {
        let seconds = started.elapsed().as_secs_f64();
        Transfer {
            protocol: proto.map(|p| p.label().to_string()).unwrap_or_default(),
            bytes,
            seconds,
            mb_per_s: bytes as f64 / 1e6 / seconds.max(1e-9),
            streams,
            retries: retries.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            zero_rtt: self.zero_rtt.load(Ordering::Relaxed),
            migrations: self.migrations.load(Ordering::Relaxed),
        }
    }

    /// A connector as `opts` say.
    pub fn for_options(target: &Target, opts: &Options) -> Connector {
        Connector::new(
            target.clone(),
            opts.trust.clone(),
            opts.only,
            opts.policy.verbose,
        )
        .with_congestion(opts.congestion)
        .with_probe(opts.local_probe.clone())
    }

    /// The current connection (connecting if there is none) and its generation.
    pub async fn get(&self) -> anyhow::Result<(u64, Arc<Client>)> {
        let mut st = self.state.lock().await;
        if let Some(c) = &st.1 {
            return Ok((st.0, c.clone()));
        }
        let c = Arc::new(self.connect().await?);
        st.0 += 1;
        if st.0 > 1 {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        st.1 = Some(c.clone());
        Ok((st.0, c))
    }

    /// Closes the connection cleanly (QUIC: CONNECTION_CLOSE, so the server does not wait
    /// for an idle timeout), waiting briefly for it to be sent.
    pub async fn close(&self) {
        let current = self.state.lock().await.1.take();
        if let Some(q) = current.as_ref().and_then(|c| c.quic()) {
            q.close(0u32.into(), b"done");
        }
        let ctx = self.h3.lock().await.clone();
        if let Some(ctx) = ctx {
            let _ =
                tokio::time::timeout(Duration::from_millis(500), ctx.endpoint().wait_idle()).await;
        }
    }

    /// Drops connection `generation` (a request on it failed at the transport level).
    pub async fn broken(&self, generation: u64) {
        let mut st = self.state.lock().await;
        if st.0 == generation {
            st.1 = None;
        }
    }

    fn order(&self) -> Vec<Proto> {
        if let Some(p) = self.only {
            return vec![p];
        }
        let mut order = vec![Proto::H3, Proto::H2, Proto::H1];
        if let Ok(g) = self.last_good.lock() {
            if let Some(p) = *g {
                order.retain(|x| *x != p);
                order.insert(0, p);
            }
        }
        order
    }

    async fn connect(&self) -> anyhow::Result<Client> {
        let mut errors = Vec::new();
        for proto in self.order() {
            let result = if proto == Proto::H3 {
                let attempt = async {
                    let ctx = {
                        let mut g = self.h3.lock().await;
                        match &*g {
                            Some(c) => c.clone(),
                            None => {
                                let mut c = super::H3Context::new(
                                    &self.trust,
                                    self.target.addr.is_ipv6(),
                                    self.congestion,
                                )?;
                                c.watcher = Some(super::migrate::watch(
                                    c.endpoint.clone(),
                                    self.target.addr,
                                    self.probe.clone(),
                                    self.migrations.clone(),
                                    self.verbose,
                                ));
                                let c = Arc::new(c);
                                *g = Some(c.clone());
                                c
                            }
                        }
                    };
                    let c = Client::connect_h3(&ctx, self.target.addr, &self.target.host).await?;
                    if c.zero_rtt {
                        self.zero_rtt.fetch_add(1, Ordering::Relaxed);
                        if self.verbose {
                            eprintln!("xferd: resumed the QUIC session with 0-RTT");
                        }
                    }
                    Ok::<_, anyhow::Error>(c)
                };
                match tokio::time::timeout(H3_CONNECT_TIMEOUT, attempt).await {
                    Ok(r) => r,
                    Err(_) => Err(anyhow::anyhow!(
                        "no QUIC handshake within {H3_CONNECT_TIMEOUT:?} (UDP blocked?)"
                    )),
                }
            } else {
                Client::connect_with(proto, self.target.addr, &self.target.host, &self.trust).await
            };
            match result {
                Ok(c) => {
                    if self.verbose {
                        eprintln!(
                            "xferd: connected to {} over {}",
                            self.target.addr,
                            proto.label()
                        );
                    }
                    if let Ok(mut g) = self.last_good.lock() {
                        *g = Some(proto);
                    }
                    return Ok(c);
                }
                Err(e) => {
                    let e = explain_connect_error(e);
                    if self.verbose {
                        eprintln!("xferd: {} connection failed: {e:#}", proto.label());
                    }
                    errors.push(format!("{}: {e:#}", proto.label()));
                }
            }
        }
        bail!(
            "cannot connect to {}: {}",
            self.target.addr,
            errors.join("; ")
        )
    }
}

/// Adds advice to certificate errors.
fn explain_connect_error(e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("certificate") || text.contains("UnknownIssuer") {
        e.context("the server's certificate is not trusted (use --ca FILE for a self-signed server, or --insecure)")
    } else {
        e
    }
}

/// One response, read whole (acknowledgements are small).
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    fn message(&self) -> String {
        let j = self.json();
        let header = self
            .headers
            .get("xferd-error")
            .and_then(|v| v.to_str().ok());
        match (j["error"].as_str(), j["message"].as_str(), header) {
            (Some(code), Some(m), _) => format!("{m} ({code})"),
            // An HTTP/2 upload refused early is answered with headers only.
            (_, _, Some(code)) if self.body.is_empty() => code.to_string(),
            _ => String::from_utf8_lossy(&self.body).trim().to_string(),
        }
    }
}

/// A request to send (rebuilt for every attempt: bodies are streams).
pub(crate) type Make<'a> =
    dyn Fn() -> anyhow::Result<(Request<()>, Option<BodyStream>)> + Send + Sync + 'a;

/// Sends a request with retries, reconnects and the breaker. Returns the final answer for
/// a success or a status that is not worth retrying.
pub(crate) async fn send(
    conn: &Connector,
    guard: &Guard,
    retries: &AtomicU64,
    what: &str,
    make: &Make<'_>,
) -> anyhow::Result<Answer> {
    let policy = guard.policy();
    let mut attempt = 0;
    loop {
        attempt += 1;
        guard.admit().await;
        let failure = match conn.get().await {
            // A certificate the client does not trust will not become trusted by retrying.
            Err(e) if format!("{e:#}").contains("not trusted") => return Err(e),
            Err(e) => format!("{e:#}"),
            Ok((generation, client)) => {
                let (req, body) = make()?;
                match client.send(req, body).await {
                    Ok(resp) => {
                        let status = resp.status;
                        let headers = resp.headers.clone();
                        match resp.bytes().await {
                            Ok(body) => {
                                let a = Answer {
                                    status,
                                    headers,
                                    body,
                                };
                                if !retryable(status) {
                                    guard.record(false);
                                    return Ok(a);
                                }
                                format!("server answered {status}: {}", a.message())
                            }
                            // A refusal stays final even when its explanation is cut off.
                            Err(_) if status.is_client_error() && !retryable(status) => {
                                conn.broken(generation).await;
                                guard.record(false);
                                return Ok(Answer {
                                    status,
                                    headers,
                                    body: Bytes::new(),
                                });
                            }
                            Err(e) => {
                                conn.broken(generation).await;
                                format!("response cut off: {e:#}")
                            }
                        }
                    }
                    Err(e) => {
                        conn.broken(generation).await;
                        format!("{e:#}")
                    }
                }
            }
        };
        guard.record(true);
        if attempt >= policy.attempts {
            bail!("{what} failed after {attempt} attempts; last error: {failure}");
        }
        let wait = policy.delay(attempt);
        retries.fetch_add(1, Ordering::Relaxed);
        guard.say(format_args!(
            "{what}: {failure}; retry {attempt}/{} in {wait:?}",
            policy.attempts - 1
        ));
        tokio::time::sleep(wait).await;
    }
}

/// The resume record kept beside the source file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub target: String,
    pub size: u64,
    pub mtime: u64,
    pub session_id: String,
    pub chunk_size: u64,
    pub total_chunks: u64,
    pub done: Vec<u64>,
}

impl State {
    fn load(path: &Path) -> Option<State> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        save_state(path, self)
    }
}

/// Writes a resume state file under a temporary name and renames it, so a crash leaves
/// the old or the new one.
pub(crate) fn save_state(path: &Path, state: &impl Serialize) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(state)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn mtime(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn progress_bar(total: u64, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Uploads `file` to `target` (see the module doc).
pub async fn upload(file: &Path, target: Target, opts: Options) -> anyhow::Result<Report> {
    let meta =
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    anyhow::ensure!(meta.is_file(), "{} is not a file", file.display());
    let f = Arc::new(
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
    );
    let started = Instant::now();
    let conn = Connector::for_options(&target, &opts);
    let guard = Guard::new(opts.policy.clone());
    let retries = AtomicU64::new(0);
    let chunked_report = if target.is_v3() {
        chunked(
            file,
            f.clone(),
            &meta,
            &target,
            &opts,
            &conn,
            &guard,
            &retries,
        )
        .await?
    } else {
        None
    };
    let mut report = match chunked_report {
        Some(r) => r,
        None => single(f, meta.len(), &target, &opts, &conn, &guard, &retries).await?,
    };
    let proto = conn.get().await.ok().map(|(_, c)| c.proto());
    report.transfer = conn.transfer(
        proto,
        meta.len(),
        started,
        report.transfer.streams,
        &retries,
    );
    conn.close().await;
    Ok(report)
}

pub(crate) fn refuse(what: &str, a: &Answer) -> anyhow::Error {
    let hint = match a.status.as_u16() {
        401 | 403 => " (the signed URL was refused: expired, or signed for another file or size)",
        404 if what.starts_with("download") => " (no such file)",
        404 | 410 => " (the upload session is gone: expired or cancelled)",
        409 => " (a file already exists at that path)",
        413 => " (too large for this server)",
        507 => " (the server's disk is full)",
        _ => "",
    };
    anyhow::anyhow!("{what}: {} {}{hint}", a.status, a.message())
}

async fn single(
    f: Arc<std::fs::File>,
    len: u64,
    target: &Target,
    opts: &Options,
    conn: &Connector,
    guard: &Guard,
    retries: &AtomicU64,
) -> anyhow::Result<Report> {
    let bar = progress_bar(len, opts.progress);
    let make = || {
        bar.set_position(0);
        let req = Request::builder()
            .method("PUT")
            .uri(target.path_q.as_str())
            .header("content-length", len)
            .body(())?;
        let b = bar.clone();
        let body: BodyStream = Box::pin(futures_util::StreamExt::inspect(
            super::upload::file_body(f.clone(), 0, len),
            move |c| {
                if let Ok(c) = c {
                    b.inc(c.len() as u64);
                }
            },
        ));
        Ok((req, Some(body)))
    };
    let a = send(conn, guard, retries, "PUT", &make).await?;
    bar.finish_and_clear();
    if !a.status.is_success() {
        return Err(refuse("upload refused", &a));
    }
    Ok(Report {
        transfer: Transfer {
            streams: 1,
            ..Transfer::default()
        },
        server: a.json(),
        ..Report::default()
    })
}

#[allow(clippy::too_many_arguments)]
async fn chunked(
    file: &Path,
    f: Arc<std::fs::File>,
    meta: &std::fs::Metadata,
    target: &Target,
    opts: &Options,
    conn: &Connector,
    guard: &Guard,
    retries: &AtomicU64,
) -> anyhow::Result<Option<Report>> {
    let len = meta.len();
    let rel = percent_encoding::percent_decode_str(target.path().trim_start_matches('/'))
        .decode_utf8()
        .context("the URL's path is not UTF-8")?
        .into_owned();
    let state_path = opts.state.clone().unwrap_or_else(|| {
        let mut p = file.as_os_str().to_owned();
        p.push(".xferd-upload.json");
        PathBuf::from(p)
    });
    let mut state = State::load(&state_path)
        .filter(|s| s.target == rel && s.size == len && s.mtime == mtime(meta));
    let mut advised_streams = 1u64;
    if let Some(s) = &state {
        // Is the session still there?
        let sid = s.session_id.clone();
        let make = || status_request(&sid);
        let a = send(conn, guard, retries, "checking the saved session", &make).await?;
        if a.status.is_success() {
            guard.say(format_args!(
                "resuming session {} from {}: {} of {} chunks done",
                s.session_id,
                state_path.display(),
                s.done.len(),
                s.total_chunks
            ));
            advised_streams = 4;
        } else {
            guard.say(format_args!(
                "saved session {} is gone ({}); starting again",
                s.session_id, a.status
            ));
            state = None;
        }
    }
    let resumed = state.as_ref().map(|s| s.done.len() as u64).unwrap_or(0);
    let mut state = match state {
        Some(s) => s,
        None => {
            let make = || {
                let req = Request::builder()
                    .method("POST")
                    .uri(format!("/chunked-upload?{}", target.query()))
                    .header("x-filename", rel.as_str())
                    .header("x-total-size", len)
                    .header("content-length", 0)
                    .body(())?;
                Ok((req, None))
            };
            let a = send(conn, guard, retries, "creating the upload", &make).await?;
            if matches!(a.status.as_u16(), 401 | 403) {
                guard.say(format_args!(
                    "the URL does not grant a chunked session ({}); uploading with one PUT",
                    a.status
                ));
                return Ok(None);
            }
            if !a.status.is_success() {
                return Err(refuse("creating the upload", &a));
            }
            let j = a.json();
            let s = State {
                target: rel.clone(),
                size: len,
                mtime: mtime(meta),
                session_id: j["session_id"]
                    .as_str()
                    .context("no session_id in the answer")?
                    .to_string(),
                chunk_size: j["chunk_size"].as_u64().context("no chunk_size")?.max(1),
                total_chunks: j["total_chunks"].as_u64().context("no total_chunks")?,
                done: Vec::new(),
            };
            advised_streams = j["parallel_streams"].as_u64().unwrap_or(4).max(1);
            guard.say(format_args!(
                "session {}: {} chunks of {} bytes; server advises {} streams",
                s.session_id, s.total_chunks, s.chunk_size, advised_streams
            ));
            s.save(&state_path)?;
            s
        }
    };
    let streams = opts
        .streams
        .unwrap_or(usize::try_from(advised_streams).unwrap_or(4))
        .clamp(1, 64);
    let chunk = state.chunk_size;
    let pieces = Pieces::new(len, chunk, state.total_chunks, &mut state.done);
    let bar = progress_bar(len, opts.progress);
    bar.set_position(pieces.done_bytes);
    let shared = Mutex::new(state);
    let last = Mutex::new(serde_json::Value::Null);
    let worker = |_: usize| async {
        loop {
            let Some((n, offset, size)) = pieces.next() else {
                return Ok::<_, anyhow::Error>(());
            };
            let sum = {
                let f = f.clone();
                tokio::task::spawn_blocking(move || chunk_sha256(&f, offset, size)).await??
            };
            let sid = shared
                .lock()
                .map(|s| s.session_id.clone())
                .unwrap_or_default();
            let make = || {
                let req = Request::builder()
                    .method("PUT")
                    .uri("/chunked-upload")
                    .header("x-upload-session-id", sid.as_str())
                    .header("x-chunk-number", n)
                    .header("content-length", size)
                    .header("upload-checksum", format!("sha256 {sum}"))
                    .body(())?;
                Ok((req, Some(super::upload::file_body(f.clone(), offset, size))))
            };
            let a = send(conn, guard, retries, &format!("chunk {n}"), &make).await?;
            if !a.status.is_success() {
                return Err(refuse(&format!("chunk {n} refused"), &a));
            }
            if let Some(hint) = a.headers.get("xferd-chunk-size") {
                guard.say(format_args!(
                    "chunk {n} stored; server hints chunk size {hint:?}"
                ));
            }
            bar.inc(size);
            let j = a.json();
            if j["completed"] == true {
                if let Ok(mut l) = last.lock() {
                    *l = j;
                }
            }
            if let Ok(mut s) = shared.lock() {
                s.done.push(n);
                s.save(&state_path)?;
            }
        }
    };
    futures_util::future::try_join_all((0..streams).map(worker)).await?;
    bar.finish_and_clear();
    let mut server = last.lock().map(|l| l.clone()).unwrap_or_default();
    if server["completed"] != true {
        // Every chunk was acknowledged before (a resumed run): ask for the final state.
        let sid = shared
            .lock()
            .map(|s| s.session_id.clone())
            .unwrap_or_default();
        let make = || status_request(&sid);
        let a = send(conn, guard, retries, "checking completion", &make).await?;
        server = a.json();
        anyhow::ensure!(
            server["completed"] == true,
            "every chunk was acknowledged but the server does not report the upload complete"
        );
    }
    let _ = std::fs::remove_file(&state_path);
    Ok(Some(Report {
        transfer: Transfer {
            streams,
            ..Transfer::default()
        },
        chunk_size: chunk,
        chunks_resumed: resumed,
        server,
    }))
}

/// The pieces (chunks, ranges) of a transfer still to move, handed out one at a time to
/// the transfer's workers.
pub(crate) struct Pieces {
    queue: Mutex<std::vec::IntoIter<u64>>,
    size: u64,
    len: u64,
    /// Bytes of the pieces already done (a resumed transfer).
    pub done_bytes: u64,
}

impl Pieces {
    /// `count` pieces of `size` bytes over `len` bytes; `done` (sorted and deduplicated
    /// here) are skipped.
    pub fn new(len: u64, size: u64, count: u64, done: &mut Vec<u64>) -> Pieces {
        done.sort_unstable();
        done.dedup();
        let size = size.max(1);
        let todo: Vec<u64> = (0..count)
            .filter(|n| done.binary_search(n).is_err())
            .collect();
        let done_bytes = done
            .iter()
            .map(|n| size.min(len.saturating_sub(n * size)))
            .sum();
        Pieces {
            queue: Mutex::new(todo.into_iter()),
            size,
            len,
            done_bytes,
        }
    }

    /// The next piece: (index, offset, length).
    pub fn next(&self) -> Option<(u64, u64, u64)> {
        let n = self.queue.lock().ok()?.next()?;
        let offset = n * self.size;
        Some((n, offset, self.size.min(self.len.saturating_sub(offset))))
    }
}

/// `GET /upload-status` for a session.
fn status_request(sid: &str) -> anyhow::Result<(Request<()>, Option<BodyStream>)> {
    let req = Request::builder()
        .method("GET")
        .uri(format!("/upload-status?session_id={sid}"))
        .body(())?;
    Ok((req, None))
}

/// Base64 SHA-256 of `size` bytes of `f` at `offset`.
fn chunk_sha256(f: &std::fs::File, offset: u64, size: u64) -> anyhow::Result<String> {
    use base64::Engine as _;
    use std::os::unix::fs::FileExt;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < size {
        let n = usize::try_from((size - pos).min(buf.len() as u64)).unwrap_or(buf.len());
        let Some(slice) = buf.get_mut(..n) else { break };
        f.read_exact_at(slice, offset + pos)
            .context("reading the source file")?;
        h.update(&*slice);
        pos += n as u64;
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(h.finalize()))
}

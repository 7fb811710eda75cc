//! The `xferd` command: `serve`, `sign`, `check-config`. Thin: everything lives in the library.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use xferd::config::{parse_duration, Config};
use xferd::core::auth::{message_for, Keys, Scheme};

mod logging;
mod reload;

#[derive(Parser)]
#[command(
    name = "xferd",
    version,
    about = "File-transfer server: signed uploads and range downloads over HTTP/1.1, HTTP/2 and HTTP/3"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded defaults without --config). HMAC File Server configs are
    /// accepted as they are; the flags below redirect what they name on another machine.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: OverrideArgs,
    },
    /// Call the admin API (`[admin]`): list, stat, delete, usage, sessions.
    Admin(xferd::admin::cli::AdminArgs),
    /// Mint a signed URL for a path.
    Sign {
        /// Config file to take the secret, listen address and prefix from.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Secret (overrides the config's).
        #[arg(long)]
        secret: Option<String>,
        #[arg(long, value_enum, default_value = "v3")]
        scheme: SchemeArg,
        /// Path without the prefix, e.g. `abc/photo.jpg` (not percent-encoded).
        #[arg(long, required_unless_present = "page")]
        path: Option<String>,
        /// Mint an upload-page link (`https://HOST/upload-page/#<token>`) for uploads under
        /// `--prefix`, each up to `--max-size`, until `--expires`.
        #[arg(long, requires = "prefix", conflicts_with = "path")]
        page: bool,
        /// Storage prefix of a page link's uploads (with `--page`).
        #[arg(long)]
        prefix: Option<String>,
        /// Largest upload through a page link, e.g. "2G" (default: the server's limit).
        #[arg(long)]
        max_size: Option<String>,
        /// Size in bytes (schemes v and v2).
        #[arg(long, default_value_t = 0)]
        size: u64,
        /// Content type (scheme v2).
        #[arg(long, default_value = "application/octet-stream")]
        content_type: String,
        /// HTTP method (scheme v3).
        #[arg(long, default_value = "PUT")]
        method: String,
        /// Validity (scheme v3): seconds or a duration like "1h".
        #[arg(long, default_value = "1h")]
        expires: String,
        /// Base URL; default `https://<listen>/<prefix>/`.
        #[arg(long)]
        base_url: Option<String>,
    },
    /// Validate a config file (xferd's or HMAC File Server's) and print the result.
    CheckConfig {
        file: PathBuf,
        /// Print every key: its value, its class (a: xferd key, b: HFS key mapped to an
        /// xferd key, c: HFS key accepted but not applied) and what xferd does with it, then
        /// the count per class.
        #[arg(long)]
        explain: bool,
    },
    /// Upload a file to a signed URL: HTTP/3 first (falling back to HTTP/2, HTTP/1.1),
    /// parallel checksummed chunk streams when the URL grants a session (v3 POST), retries
    /// with backoff, a circuit breaker, and resume after a restart.
    Upload {
        file: PathBuf,
        /// Signed URL (v3 POST: chunked session; v/v2/token/v3 PUT: one PUT).
        url: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run the link emulator between a client and a server (tests and benchmarks):
    /// prints the relay's address, then runs until killed or `--for` has passed.
    Relay {
        /// `udp` (datagrams: loss, migration) or `tcp` (streams).
        #[arg(value_parser = ["udp", "tcp"])]
        kind: String,
        /// Where clients connect (port 0 = a free one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// The server.
        #[arg(long)]
        to: SocketAddr,
        /// One-way delay in milliseconds (each direction).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Extra random delay, 0..jitter_ms.
        #[arg(long, default_value_t = 0)]
        jitter_ms: u64,
        /// Rate per direction, e.g. "50mbit", "6MB" (bytes/s), or 0 for unlimited.
        #[arg(long, default_value = "0")]
        rate: String,
        /// Percent of datagrams dropped (UDP).
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Start a blackout this many seconds after start (with --blackout-secs).
        #[arg(long)]
        blackout_at: Option<f64>,
        #[arg(long, default_value_t = 10.0)]
        blackout_secs: f64,
        /// Change the source address (UDP) / cut connections (TCP) at this second.
        #[arg(long)]
        change_at: Option<f64>,
        /// Stop after this many seconds.
        #[arg(long = "for", value_name = "SECS")]
        run_for: Option<f64>,
    },
    /// Run a packet-level link between TUN devices in two network namespaces (benchmarks
    /// where TCP and QUIC must cross the same emulated link; needs root). The devices must
    /// exist, addressed and up (benches/mobile.sh sets them up). Runs until killed or `--for`.
    Wire {
        /// Namespace of end A (a name under /run/netns or a path).
        #[arg(long)]
        netns_a: String,
        /// Namespace of end B.
        #[arg(long)]
        netns_b: String,
        /// TUN device name in A.
        #[arg(long, default_value = "xw0")]
        dev_a: String,
        /// TUN device name in B.
        #[arg(long, default_value = "xw0")]
        dev_b: String,
        /// One-way delay in milliseconds (each direction).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Rate per direction, e.g. "50mbit", "6MB" (bytes/s), or 0 for unlimited.
        #[arg(long, default_value = "0")]
        rate: String,
        /// Percent of packets dropped at random (each direction).
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Longest wait in the rate limiter's queue before a packet is dropped (ms).
        #[arg(long, default_value_t = 100)]
        queue_ms: u64,
        /// Start a blackout this many seconds after start (with --blackout-secs).
        #[arg(long)]
        blackout_at: Option<f64>,
        #[arg(long, default_value_t = 10.0)]
        blackout_secs: f64,
        /// Stop after this many seconds.
        #[arg(long = "for", value_name = "SECS")]
        run_for: Option<f64>,
    },
    /// Download a URL with parallel range requests, retries and resume.
    Download {
        url: String,
        /// Where to save it (default: the URL's file name in the current directory).
        file: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `serve` flags that take the place of the config's values.
#[derive(clap::Args)]
struct OverrideArgs {
    /// Store files here instead of the config's `server.storage_path`.
    #[arg(long, value_name = "DIR")]
    storage_path: Option<PathBuf>,
    /// Listen here instead of the config's `server.listen` (a separate metrics listener
    /// moves to this host, keeping its port, unless --metrics-listen is given).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Keep state (certificate, secret, sessions, and the files an HFS config names for
    /// features kept for later: pid file, log file, databases) here instead of
    /// `server.state_path`.
    #[arg(long, value_name = "DIR")]
    state_path: Option<PathBuf>,
    /// Serve /metrics here instead of the config's `metrics.listen` (or HFS's `metricsport`).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

impl OverrideArgs {
    fn overrides(self) -> xferd::config::Overrides {
        xferd::config::Overrides {
            storage_path: self.storage_path,
            listen: self.listen,
            state_path: self.state_path,
            metrics_listen: self.metrics_listen,
        }
    }
}

/// Options of the client subcommands.
#[derive(clap::Args)]
struct ClientArgs {
    /// Parallel streams on one connection (default: the server's advice; 4 for downloads).
    #[arg(long)]
    streams: Option<usize>,
    /// HTTP version: auto (3, then 2, then 1.1), 3, 2 or 1.1.
    #[arg(long, default_value = "auto")]
    http: String,
    /// PEM certificate to trust instead of the system roots (e.g. a self-signed server's).
    #[arg(long, conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// Do not verify the server's certificate (test servers only).
    #[arg(long)]
    insecure: bool,
    /// Attempts per request (the first included).
    #[arg(long, default_value_t = 10)]
    retries: u32,
    /// First retry delay in milliseconds (doubles per attempt, with jitter).
    #[arg(long, default_value_t = 250)]
    backoff_ms: u64,
    /// Keep the retry delay constant instead of doubling it.
    #[arg(long)]
    no_exponential_backoff: bool,
    /// Consecutive failures that pause every stream (0 = no circuit breaker).
    #[arg(long, default_value_t = 6)]
    breaker_threshold: u32,
    /// How long the circuit breaker pauses, in seconds.
    #[arg(long, default_value_t = 5)]
    breaker_pause: u64,
    /// Resume state file (default: beside the local file).
    #[arg(long)]
    state: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Say what was decided and why (retries, fallbacks, resume).
    #[arg(long, short)]
    verbose: bool,
    /// QUIC congestion control: bbr (default; random loss is not taken for congestion),
    /// cubic or new-reno.
    #[arg(long, value_enum, default_value_t = xferd::client::DEFAULT_CONGESTION)]
    congestion: xferd::client::Congestion,
}

impl ClientArgs {
    fn options(self) -> anyhow::Result<xferd::client::chunked::Options> {
        use std::io::IsTerminal;
        use xferd::client::{retry::Policy, trust::Trust, Proto};
        let only = match self.http.as_str() {
            "auto" => None,
            "3" => Some(Proto::H3),
            "2" => Some(Proto::H2),
            "1.1" | "1" => Some(Proto::H1),
            other => anyhow::bail!("--http must be auto, 3, 2 or 1.1, not {other}"),
        };
        let trust = match (self.ca, self.insecure) {
            (Some(ca), _) => Trust::Roots(xferd::tls::read_certs(&ca)?),
            (None, true) => Trust::Insecure,
            (None, false) => Trust::System,
        };
        Ok(xferd::client::chunked::Options {
            only,
            trust,
            streams: self.streams,
            policy: Policy {
                attempts: self.retries.max(1),
                base: std::time::Duration::from_millis(self.backoff_ms),
                exponential: !self.no_exponential_backoff,
                breaker: (self.breaker_threshold > 0).then(|| {
                    (
                        self.breaker_threshold,
                        std::time::Duration::from_secs(self.breaker_pause),
                    )
                }),
                verbose: self.verbose,
                ..Policy::default()
            },
            state: self.state,
            progress: !self.quiet && std::io::stderr().is_terminal(),
            congestion: self.congestion,
            local_probe: Default::default(),
        })
    }
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

#[derive(Clone, Copy, ValueEnum)]
enum SchemeArg {
    V,
    V2,
    Token,
    V3,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let format = log_format(&cli);
    logging::init(format);
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if format == xferd::config::LogFormat::Json => {
            // Every stderr line stays one JSON object.
            tracing::error!(error = format!("{e:#}"), "xferd: error");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("xferd: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `[log] format` of the config `serve` will run (read ahead, so that the warnings of
/// loading it are already in that format); text otherwise, and when the file is unreadable
/// (`run` reports that).
fn log_format(cli: &Cli) -> xferd::config::LogFormat {
    match &cli.command {
        Command::Serve {
            config: Some(p), ..
        } => Config::load(p)
            .map(|l| l.config.log.format)
            .unwrap_or_default(),
        _ => xferd::config::LogFormat::Text,
    }
}

fn load(config: Option<&PathBuf>) -> anyhow::Result<Config> {
    match config {
        None => Ok(Config::default()),
        Some(p) => {
            let loaded = Config::load(p)?;
            for w in &loaded.warnings {
                tracing::warn!("{w}");
            }
            Ok(loaded.config)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, overrides } => {
            let config_path = config;
            let mut config = load(config_path.as_ref())?;
            let overrides = overrides.overrides();
            config.apply_overrides(&overrides);
            config.prepare_paths()?;
            limit_malloc_arenas();
            raise_open_file_limit(config.server.max_connections);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                // File I/O runs on blocking threads; bounding them bounds memory too.
                .max_blocking_threads(64)
                .build()
                .context("starting the runtime")?;
            rt.block_on(serve(config, config_path, overrides))
        }
        Command::Upload { file, url, client } => {
            let opts = client.options()?;
            let report = client_runtime()?.block_on(async {
                let target = xferd::client::chunked::Target::parse(&url).await?;
                xferd::client::chunked::upload(&file, target, opts).await
            })?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Relay {
            kind,
            listen,
            to,
            delay_ms,
            jitter_ms,
            rate,
            loss,
            blackout_at,
            blackout_secs,
            change_at,
            run_for,
        } => {
            let rate = parse_rate(&rate)?;
            let link = xferd::relay::Link {
                delay: std::time::Duration::from_millis(delay_ms),
                jitter: std::time::Duration::from_millis(jitter_ms),
                rate,
                loss: (loss / 100.0).clamp(0.0, 1.0),
            };
            client_runtime()?.block_on(async move {
                use std::time::Duration;
                let relay = if kind == "udp" {
                    xferd::relay::udp(listen, to, link).await?
                } else {
                    xferd::relay::tcp(listen, to, link).await?
                };
                println!("{}", relay.addr);
                let start = tokio::time::Instant::now();
                let at = |s: f64| start + Duration::from_secs_f64(s.max(0.0));
                let mut events: Vec<(tokio::time::Instant, &str)> = Vec::new();
                if let Some(b) = blackout_at {
                    events.push((at(b), "blackout on"));
                    events.push((at(b + blackout_secs), "blackout off"));
                }
                if let Some(c) = change_at {
                    events.push((at(c), "change"));
                }
                if let Some(f) = run_for {
                    events.push((at(f), "stop"));
                }
                events.sort_by_key(|e| e.0);
                for (when, what) in events {
                    tokio::time::sleep_until(when).await;
                    let c = &relay.controls.counters;
                    eprintln!(
                        "relay t={:.1}s {what} (forwarded {}, dropped {})",
                        start.elapsed().as_secs_f64(),
                        c.forwarded.load(std::sync::atomic::Ordering::Relaxed),
                        c.dropped.load(std::sync::atomic::Ordering::Relaxed)
                    );
                    match what {
                        "blackout on" => relay.blackout(true),
                        "blackout off" => relay.blackout(false),
                        "change" => relay.change(),
                        _ => return Ok::<_, anyhow::Error>(()),
                    }
                }
                std::future::pending::<()>().await;
                Ok(())
            })
        }
        Command::Wire {
            netns_a,
            netns_b,
            dev_a,
            dev_b,
            delay_ms,
            rate,
            loss,
            queue_ms,
            blackout_at,
            blackout_secs,
            run_for,
        } => {
            use std::time::{Duration, Instant};
            use xferd::relay::wire;
            let link = wire::WireLink {
                delay: Duration::from_millis(delay_ms),
                rate: parse_rate(&rate)?,
                loss: (loss / 100.0).clamp(0.0, 1.0),
                queue: Duration::from_millis(queue_ms),
            };
            let a = wire::End {
                netns: netns_a,
                dev: dev_a,
            };
            let b = wire::End {
                netns: netns_b,
                dev: dev_b,
            };
            let w = wire::start(&a, &b, link).with_context(|| "starting the wire")?;
            println!("wire up: {link:?}");
            let start = Instant::now();
            let report = |what: &str| {
                eprintln!(
                    "wire t={:.1}s {what}\n  a->b: {}\n  b->a: {}",
                    start.elapsed().as_secs_f64(),
                    w.stats[0].summary(),
                    w.stats[1].summary()
                )
            };
            let mut events: Vec<(f64, &str)> = Vec::new();
            if let Some(b) = blackout_at {
                events.push((b, "blackout on"));
                events.push((b + blackout_secs, "blackout off"));
            }
            events.push((run_for.unwrap_or(f64::MAX / 4.0), "stop"));
            events.sort_by(|x, y| x.0.total_cmp(&y.0));
            // SIGTERM/SIGINT end the wire with a report.
            client_runtime()?.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let mut term = signal(SignalKind::terminate())?;
                let mut int = signal(SignalKind::interrupt())?;
                for (at, what) in events {
                    let due = start + Duration::from_secs_f64(at.clamp(0.0, 1e9));
                    tokio::select! {
                        _ = tokio::time::sleep_until(due.into()) => {}
                        _ = term.recv() => break,
                        _ = int.recv() => break,
                    }
                    report(what);
                    match what {
                        "blackout on" => w.blackout(true),
                        "blackout off" => w.blackout(false),
                        _ => break,
                    }
                }
                Ok::<_, anyhow::Error>(())
            })?;
            report("stop");
            w.stop();
            Ok(())
        }
        Command::Download { url, file, client } => {
            let opts = client.options()?;
            let report = client_runtime()?.block_on(async {
                let target = xferd::client::chunked::Target::parse(&url).await?;
                let file = match file {
                    Some(f) => f,
                    None => {
                        let name = target.path().rsplit('/').next().unwrap_or("");
                        let name = percent_encoding::percent_decode_str(name)
                            .decode_utf8_lossy()
                            .into_owned();
                        anyhow::ensure!(
                            !name.is_empty() && name != "." && name != "..",
                            "the URL has no file name; give FILE"
                        );
                        PathBuf::from(name)
                    }
                };
                xferd::client::download::download(target, &file, opts).await
            })?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Admin(args) => {
            for v in client_runtime()?.block_on(xferd::admin::cli::run(&args))? {
                println!("{v}");
            }
            Ok(())
        }
        Command::CheckConfig { file, explain } => {
            let loaded = Config::load(&file)?;
            for w in &loaded.warnings {
                println!("warning: {w}");
            }
            if explain {
                print!("{}", xferd::config::hfs::explain(&loaded.report));
            }
            println!("{}: OK", file.display());
            Ok(())
        }
        Command::Sign {
            config,
            secret,
            scheme,
            path,
            size,
            content_type,
            method,
            expires,
            base_url,
            page,
            prefix,
            max_size,
        } => {
            let cfg = load(config.as_ref())?;
            let secret = match secret {
                Some(s) => s,
                None => xferd::server::resolve_secret(&cfg)?.0,
            };
            if page {
                let max_size = max_size.as_deref().map(xferd::config::parse_size);
                let req = xferd::sign_page::PageLink {
                    secret: &secret,
                    prefix: prefix.as_deref().unwrap_or_default(),
                    validity: parse_duration(&expires).map_err(anyhow::Error::msg)?,
                    max_size: max_size.transpose().map_err(anyhow::Error::msg)?,
                    base_url: base_url.as_deref(),
                };
                let url = xferd::sign_page::mint(&cfg, &req, SystemTime::now());
                println!("{}", url.map_err(anyhow::Error::msg)?);
                return Ok(());
            }
            let path = path.unwrap_or_default();
            let rel = xferd::core::path::validate(&path).context("invalid --path")?;
            let scheme = match scheme {
                SchemeArg::V => Scheme::V,
                SchemeArg::V2 => Scheme::V2,
                SchemeArg::Token => Scheme::Token,
                SchemeArg::V3 => Scheme::V3,
            };
            let validity = parse_duration(&expires).map_err(anyhow::Error::msg)?;
            let max = cfg.security.max_url_lifetime;
            anyhow::ensure!(
                scheme != Scheme::V3 || validity <= max,
                "--expires {expires} is longer than security.max_url_lifetime ({}s): the \
                 server would refuse the URL; mint a shorter one or raise the limit in the config",
                max.as_secs()
            );
            let exp = (SystemTime::now() + validity)
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs();
            let method = method.to_ascii_uppercase();
            let msg = message_for(scheme, &method, rel.as_str(), size, &content_type, exp);
            let mac = Keys::new(&secret, &[], false).sign(&msg);
            let base = base_url.unwrap_or_else(|| {
                let prefix = cfg.normalized_prefix();
                let prefix = if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}/")
                };
                format!("https://{}/{prefix}", cfg.server.listen)
            });
            let base = if base.ends_with('/') {
                base
            } else {
                format!("{base}/")
            };
            let encoded: Vec<String> = rel
                .segments()
                .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
                .collect();
            let mut url = format!("{base}{}?{}={mac}", encoded.join("/"), scheme.param());
            if scheme == Scheme::V3 {
                url.push_str(&format!("&expires={exp}"));
            }
            println!("{url}");
            Ok(())
        }
    }
}

/// Characters escaped in a path segment (RFC 3986 pchar complement, plus `%`).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    overrides: xferd::config::Overrides,
) -> anyhow::Result<()> {
    // Handlers first: a SIGTERM that arrives while the server starts (a supervisor that
    // gives up early, a test that stops it at its first line) shuts it down cleanly
    // instead of killing it with the default action. SIGHUP likewise: reload, never die.
    let signals = shutdown_signals();
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let server = xferd::server::start(config).await?;
    let port = server.addr.port();
    println!(
        "xferd listening on https://{0} (HTTP/1.1, HTTP/2 over TCP; HTTP/3 over UDP {0})",
        server.addr
    );
    if let Some(p) = server.plain_addr {
        println!("plaintext HTTP/1.1 + h2c on http://{p}");
    }
    println!(
        "certificate: {}   UDP buffers granted: recv {} / send {} bytes",
        server.cert_path.display(),
        server.udp_buffers.0,
        server.udp_buffers.1
    );
    // The secret itself is never printed (stdout ends up in journald): only where it is.
    match (&server.secret_file, server.secret_generated) {
        (Some(f), true) => println!(
            "generated a secret: stored in {} (mode 0600, not shown here); give that file's \
             content to Prosody/ejabberd",
            f.display()
        ),
        (Some(f), false) => println!("secret: stored in {}", f.display()),
        (None, _) => println!("secret: configured (security.secret)"),
    }
    let config_arg = config_path
        .as_ref()
        .map(|p| format!(" --config {}", shell_quote(&p.display().to_string())))
        .unwrap_or_default();
    println!(
        "try:  URL=$(xferd sign{config_arg} --path demo/hello.txt)  &&  curl -k -T README.md \
         \"$URL\"  &&  curl -k https://localhost:{port}/demo/hello.txt"
    );
    let stop = wait_for_signal(signals);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(()) = reload::next_hangup(&mut hangups) => {
                reload::reload(&server.core, config_path.as_deref(), &overrides);
            }
        }
    }
    println!("shutting down: finishing in-flight transfers");
    server.shutdown().await;
    Ok(())
}

/// `text` as one shell word (single-quoted unless it is plainly safe).
fn shell_quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// glibc gives every thread that allocates its own malloc arena (up to 8 per core); with
/// buffers allocated on one thread and freed on another, that multiplies resident memory.
/// Four arenas keep allocation fast on small machines and memory bounded.
fn limit_malloc_arenas() {
    // SAFETY: mallopt only changes allocator tuning; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// Raises the soft limit on open descriptors to the hard one, as Go programs (HMAC File
/// Server among them) do at start: systemd's default soft limit is 1,024, below what
/// `max_connections` connections need (one descriptor each, two once a request has made a
/// readings probe, plus files being transferred). Warns when even the hard limit is short.
fn raise_open_file_limit(max_connections: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the plain struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    let wanted = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(256);
    if lim.rlim_cur < wanted {
        tracing::warn!(
            limit = lim.rlim_cur,
            wanted,
            max_connections,
            "open-file limit below what server.max_connections may need: connections past it \
             fail to be accepted (raise LimitNOFILE or ulimit -n)"
        );
    }
}

type Signals = Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>;

/// SIGTERM and SIGINT streams (`None` if they cannot be installed: the server still runs;
/// only signal handling is lost).
fn shutdown_signals() -> Signals {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => Some((term, int)),
        _ => None,
    }
}

async fn wait_for_signal(signals: Signals) {
    let Some((mut term, mut int)) = signals else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

/// A link rate: "50mbit" (megabits per second), a size per second such as "6MB", or 0.
fn parse_rate(rate: &str) -> anyhow::Result<u64> {
    Ok(if let Some(mbit) = rate.strip_suffix("mbit") {
        (mbit.parse::<f64>().context("bad --rate")? * 1e6 / 8.0) as u64
    } else {
        xferd::config::parse_size(rate).map_err(anyhow::Error::msg)?
    })
}

//! `xferd admin list|stat|delete|usage|sessions`: calls the admin API (see [`super`]) and
//! prints its JSON answer. The token comes from a file (`--token-file`, first line) or the
//! `XFERD_ADMIN_TOKEN` environment variable, never from the command line (where other users
//! could read it in the process list).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::time::Duration;

/// Longest one admin call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer read (a page of `admin.max_page` entries fits easily).
pub const MAX_ANSWER: usize = 16 << 20;

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The admin listener, e.g. `http://127.0.0.1:8444`.
    #[arg(long, default_value = "http://127.0.0.1:8444", global = true)]
    pub url: String,
    /// File holding the bearer token (else `XFERD_ADMIN_TOKEN`).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// List stored files (one page; `--all` follows every page).
    List {
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        /// Follow `next` until the last page (one JSON answer per page).
        #[arg(long)]
        all: bool,
    },
    /// Size and modification time of a file.
    Stat { path: String },
    /// Delete a file.
    Delete { path: String },
    /// Files and bytes under a prefix.
    Usage {
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Resumable uploads in progress and their offsets.
    Sessions,
}

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("admin API at {url}: {message}")]
    Call { url: String, message: String },
    #[error("admin API answered {status}: {body}")]
    Refused { status: u16, body: String },
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn path_enc(s: &str) -> String {
    s.split('/').map(enc).collect::<Vec<_>>().join("/")
}

/// The token: `--token-file`'s first line, else `XFERD_ADMIN_TOKEN`.
pub fn token(args: &AdminArgs) -> Result<String, CliError> {
    let t = match &args.token_file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| CliError::Usage(format!("reading {}: {e}", p.display())))?
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        None => std::env::var("XFERD_ADMIN_TOKEN").unwrap_or_default(),
    };
    if t.is_empty() {
        return Err(CliError::Usage(
            "no admin token: pass --token-file or set XFERD_ADMIN_TOKEN".into(),
        ));
    }
    Ok(t)
}

/// One request to the admin API; the answer's body when its status is 2xx.
pub async fn call(
    base: &str,
    token: &str,
    method: http::Method,
    path_q: &str,
) -> Result<serde_json::Value, CliError> {
    let fail = |m: String| CliError::Call {
        url: base.to_string(),
        message: m,
    };
    let uri: http::Uri = format!("{}{path_q}", base.trim_end_matches('/'))
        .parse()
        .map_err(|e| fail(format!("bad URL: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(fail(
            "only http:// (the admin API listens on loopback)".into(),
        ));
    }
    let host = uri.host().unwrap_or("127.0.0.1").to_string();
    let port = uri.port_u16().unwrap_or(80);
    let job = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .header(http::header::HOST, format!("{host}:{port}"))
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail(e.to_string()))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        let text = String::from_utf8_lossy(&body).into_owned();
        if !status.is_success() {
            return Err(CliError::Refused {
                status: status.as_u16(),
                body: text,
            });
        }
        serde_json::from_str(&text).map_err(|e| fail(format!("answer is not JSON: {e}")))
    };
    tokio::time::timeout(CALL_TIMEOUT, job)
        .await
        .map_err(|_| fail("timed out".into()))?
}

/// Runs one `xferd admin` command; the JSON answers, one per line.
pub async fn run(args: &AdminArgs) -> Result<Vec<serde_json::Value>, CliError> {
    use http::Method;
    let token = token(args)?;
    let url = &args.url;
    let one = |v| Ok(vec![v]);
    match &args.command {
        AdminCommand::List {
            prefix,
            after,
            limit,
            all,
        } => {
            let mut out = Vec::new();
            let mut after = after.clone();
            loop {
                let mut q = format!("/files?prefix={}", enc(prefix));
                if let Some(a) = &after {
                    q.push_str(&format!("&after={}", enc(a)));
                }
                if let Some(l) = limit {
                    q.push_str(&format!("&limit={l}"));
                }
                let v = call(url, &token, Method::GET, &q).await?;
                let next = v.get("next").and_then(|n| n.as_str()).map(str::to_string);
                out.push(v);
                match next {
                    Some(n) if *all => after = Some(n),
                    _ => return Ok(out),
                }
            }
        }
        AdminCommand::Stat { path } => one(call(
            url,
            &token,
            Method::GET,
            &format!("/files/{}", path_enc(path)),
        )
        .await?),
        AdminCommand::Delete { path } => one(call(
            url,
            &token,
            Method::DELETE,
            &format!("/files/{}", path_enc(path)),
        )
        .await?),
        AdminCommand::Usage { prefix } => one(call(
            url,
            &token,
            Method::GET,
            &format!("/usage?prefix={}", enc(prefix)),
        )
        .await?),
        AdminCommand::Sessions => one(call(url, &token, Method::GET, "/sessions").await?),
    }
}

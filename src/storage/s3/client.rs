//! A small S3 client: SigV4-signed HTTP/1.1 requests over hyper's connection API, plain
//! TCP (`allow_http`) or rustls, path-style addressing (`endpoint/bucket/key`), and a pool
//! of idle connections (a connection is reused once its previous answer has been read).
//!
//! Timeouts bound what a stalled store can hold, never the length of a transfer: a connect
//! timeout, a timeout for the answer's head (sending the request body included, so it grows
//! with the body: [`MIN_SEND_RATE`]), and an idle timeout between two frames of an answer's
//! body. A download paced by a slow client is therefore never cut for taking long.
//!
//! Every request is counted by operation ([`Op`]): [`Client::counts`], and an optional
//! observer (the server's `xferd_s3_requests_total{op}`).

use super::sigv4::{self, Credentials, EMPTY_SHA256};
use super::xml;
use crate::storage::store::{ByteStream, StoreError};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connecting (DNS, TCP, TLS) may take this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The answer's head must arrive within this (plus the time to send the body).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The slowest upload to the store allowed for (bytes/s) when sizing the head timeout.
pub const MIN_SEND_RATE: u64 = 256 << 10;
/// Longest silence between two frames of an answer's body.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle connections kept.
const MAX_IDLE: usize = 32;
/// Largest XML answer read (lists of 1,000 keys are about 300 KB).
const MAX_XML: usize = 4 << 20;

/// The S3 operations xferd uses (the label of the request counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    HeadBucket,
    HeadObject,
    GetObject,
    PutObject,
    CreateMultipartUpload,
    UploadPart,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    DeleteObject,
    ListObjectsV2,
    ListMultipartUploads,
    CopyObject,
    UploadPartCopy,
}

impl Op {
    pub const ALL: [Op; 13] = [
        Op::HeadBucket,
        Op::HeadObject,
        Op::GetObject,
        Op::PutObject,
        Op::CreateMultipartUpload,
        Op::UploadPart,
        Op::CompleteMultipartUpload,
        Op::AbortMultipartUpload,
        Op::DeleteObject,
        Op::ListObjectsV2,
        Op::ListMultipartUploads,
        Op::CopyObject,
        Op::UploadPartCopy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::HeadBucket => "HeadBucket",
            Op::HeadObject => "HeadObject",
            Op::GetObject => "GetObject",
            Op::PutObject => "PutObject",
            Op::CreateMultipartUpload => "CreateMultipartUpload",
            Op::UploadPart => "UploadPart",
            Op::CompleteMultipartUpload => "CompleteMultipartUpload",
            Op::AbortMultipartUpload => "AbortMultipartUpload",
            Op::DeleteObject => "DeleteObject",
            Op::ListObjectsV2 => "ListObjectsV2",
            Op::ListMultipartUploads => "ListMultipartUploads",
            Op::CopyObject => "CopyObject",
            Op::UploadPartCopy => "UploadPartCopy",
        }
    }

    fn index(self) -> usize {
        Op::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// Called once per request sent (with its operation).
pub type Observer = Arc<dyn Fn(Op) + Send + Sync>;

/// Where the store is and who we are.
#[derive(Clone)]
pub struct Endpoint {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub region: String,
    pub bucket: String,
    pub credentials: Credentials,
}

impl Endpoint {
    /// Parses `http(s)://host[:port]` (no path); plain http only when `allow_http`.
    pub fn parse(url: &str, allow_http: bool) -> Result<(bool, String, u16), String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if allow_http => false,
            Some("http") => {
                return Err(format!(
                    "`{url}` is plain http: set storage.s3.allow_http = true to allow it"
                ))
            }
            _ => return Err(format!("`{url}` must start with https:// (or http://)")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("`{url}` has no host"))?;
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(format!(
                "`{url}` must not have a path (the bucket is storage.s3.bucket)"
            ));
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok((https, host, port))
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

type Sender = SendRequest<Full<Bytes>>;

/// The client (cheap to clone).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    ep: Endpoint,
    host_header: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    idle: Mutex<Vec<Sender>>,
    counts: [AtomicU64; Op::ALL.len()],
    observer: Option<Observer>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ep = &self.inner.ep;
        f.debug_struct("S3Client")
            .field("endpoint", &self.inner.host_header)
            .field("https", &ep.https)
            .field("bucket", &ep.bucket)
            .field("region", &ep.region)
            .field("credentials", &ep.credentials)
            .finish()
    }
}

/// One request: the object key is the full one (prefix included), `None` for the bucket.
pub struct Call<'a> {
    pub op: Op,
    pub method: Method,
    pub key: Option<&'a str>,
    pub query: Vec<(&'static str, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Hex SHA-256 of the body (`None`: computed here for small bodies, else unsigned).
    pub body_sha256: Option<String>,
}

impl<'a> Call<'a> {
    pub fn new(op: Op, method: Method, key: Option<&'a str>) -> Call<'a> {
        Call {
            op,
            method,
            key,
            query: Vec::new(),
            headers: Vec::new(),
            body: Bytes::new(),
            body_sha256: None,
        }
    }
    pub fn query(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.query.push((k, v.into()));
        self
    }
    pub fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_ascii_lowercase(), v.into()));
        self
    }
    pub fn body(mut self, body: Bytes, sha256: Option<String>) -> Self {
        self.body = body;
        self.body_sha256 = sha256;
        self
    }
}

/// An answer whose body has not been read yet.
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: hyper::body::Incoming,
    op: Op,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text (XML), bounded.
    pub async fn text(self) -> Result<String, StoreError> {
        let mut out = Vec::new();
        let mut stream = self.into_stream();
        use futures_util::StreamExt;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if out.len() + chunk.len() > MAX_XML {
                return Err(StoreError::Other(io::Error::other(
                    "S3 answer larger than expected",
                )));
            }
            out.extend_from_slice(&chunk);
        }
        String::from_utf8(out)
            .map_err(|_| StoreError::Other(io::Error::other("S3 answer is not UTF-8")))
    }

    /// Reads (and discards) the body so the connection can be reused.
    pub async fn drain(self) -> Result<(), StoreError> {
        self.text().await.map(|_| ())
    }

    /// The body as a stream, with the idle timeout between frames.
    pub fn into_stream(self) -> ByteStream {
        let op = self.op;
        Box::pin(futures_util::stream::unfold(
            Some(self.body),
            move |body| async move {
                let mut body = body?;
                loop {
                    match tokio::time::timeout(IDLE_TIMEOUT, body.frame()).await {
                        Err(_) => return Some((Err(timed_out(op, "body")), None)),
                        Ok(None) => return None,
                        Ok(Some(Err(e))) => return Some((Err(transient(op, &e)), None)),
                        Ok(Some(Ok(frame))) => {
                            if let Ok(data) = frame.into_data() {
                                if !data.is_empty() {
                                    return Some((Ok(data), Some(body)));
                                }
                            }
                        }
                    }
                }
            },
        ))
    }

    /// The error an unexpected status stands for (reads S3's `<Error>` body for its code).
    pub async fn error(self) -> StoreError {
        let (op, status) = (self.op, self.status);
        let text = self.text().await.unwrap_or_default();
        let code = xml::text(&text, "Code").unwrap_or_default();
        status_error(op, status, &code)
    }
}

/// Maps a status (and S3 error code) to a kind: 5xx, 429 and timeouts are transient (the
/// breaker counts them); 403 is a backend failure (credentials or policy, never the
/// client's); 404 is a missing object.
pub fn status_error(op: Op, status: StatusCode, code: &str) -> StoreError {
    let what = format!("S3 {} answered {status} {code}", op.name());
    match status.as_u16() {
        404 if code != "NoSuchBucket" => StoreError::NotFound,
        429 | 500..=599 => StoreError::Transient(io::Error::other(what)),
        403 => StoreError::Other(io::Error::new(io::ErrorKind::PermissionDenied, what)),
        _ => StoreError::Other(io::Error::other(what)),
    }
}

fn transient(op: Op, e: &dyn std::fmt::Display) -> StoreError {
    StoreError::Transient(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        format!("S3 {}: {e}", op.name()),
    ))
}

fn timed_out(op: Op, what: &str) -> StoreError {
    StoreError::Transient(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("S3 {}: timed out waiting for the {what}", op.name()),
    ))
}

impl Client {
    pub fn new(ep: Endpoint, observer: Option<Observer>) -> Result<Client, String> {
        let default_port = if ep.https { 443 } else { 80 };
        let host = if ep.host.contains(':') {
            format!("[{}]", ep.host)
        } else {
            ep.host.clone()
        };
        let host_header = if ep.port == default_port {
            host
        } else {
            format!("{host}:{}", ep.port)
        };
        let tls = if ep.https {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no system root certificates found for the S3 endpoint".into());
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = rustls::pki_types::ServerName::try_from(ep.host.clone())
                .map_err(|e| format!("S3 endpoint host `{}`: {e}", ep.host))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
        } else {
            None
        };
        Ok(Client {
            inner: Arc::new(Inner {
                ep,
                host_header,
                tls,
                idle: Mutex::new(Vec::new()),
                counts: Default::default(),
                observer,
            }),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.inner.ep.bucket
    }

    /// Requests sent so far, by operation.
    pub fn counts(&self) -> Vec<(Op, u64)> {
        Op::ALL
            .iter()
            .map(|op| (*op, self.inner.counts[op.index()].load(Ordering::Relaxed)))
            .collect()
    }

    /// Requests sent so far, all operations.
    pub fn total(&self) -> u64 {
        self.counts().iter().map(|(_, n)| n).sum()
    }

    /// Signs and sends `call`; the answer's head, whatever its status.
    pub async fn send(&self, call: Call<'_>) -> Result<Response, StoreError> {
        let inner = &self.inner;
        let op = call.op;
        inner.counts[op.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(obs) = &inner.observer {
            obs(op);
        }
        let raw_path = match call.key {
            Some(k) => format!("/{}/{k}", inner.ep.bucket),
            None => format!("/{}", inner.ep.bucket),
        };
        let path = sigv4::encode_path(&raw_path);
        let query = sigv4::canonical_query(&call.query);
        let sha = match call.body_sha256 {
            Some(s) => s,
            None if call.body.is_empty() => EMPTY_SHA256.to_string(),
            None if call.body.len() <= 1 << 20 => {
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&call.body))
            }
            None => "UNSIGNED-PAYLOAD".to_string(),
        };
        let date = sigv4::amz_date(std::time::SystemTime::now());
        let mut headers = call.headers;
        headers.push(("host".into(), inner.host_header.clone()));
        headers.push(("x-amz-date".into(), date.clone()));
        headers.push(("x-amz-content-sha256".into(), sha.clone()));
        if let Some(tok) = &inner.ep.credentials.session_token {
            headers.push(("x-amz-security-token".into(), tok.clone()));
        }
        let auth = sigv4::authorization(
            &inner.ep.credentials,
            &inner.ep.region,
            &sigv4::Request {
                method: call.method.as_str(),
                path: &path,
                query: &query,
                headers: &headers,
                payload_sha256: &sha,
                amz_date: &date,
            },
        );
        let uri = if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        };
        let len = call.body.len() as u64;
        let mut builder = http::Request::builder().method(call.method).uri(uri);
        for (k, v) in &headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let req = builder
            .header("authorization", auth)
            .header("content-length", len.to_string())
            .body(Full::new(call.body))
            .map_err(|e| StoreError::Other(io::Error::other(format!("S3 request: {e}"))))?;
        let wait = HEAD_TIMEOUT + Duration::from_secs(len / MIN_SEND_RATE);
        let resp = match tokio::time::timeout(wait, self.exchange(op, req)).await {
            Err(_) => return Err(timed_out(op, "answer")),
            Ok(r) => r?,
        };
        let (parts, body) = resp.into_parts();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
            op,
        })
    }

    /// Sends on an idle connection if there is one (again on a new one if the idle one
    /// turned out closed before the request left), else on a new connection.
    async fn exchange(
        &self,
        op: Op,
        mut req: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, StoreError> {
        if let Some(mut sender) = self.take_idle() {
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.put_idle(sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => return Err(transient(op, &e.into_error())),
                },
            }
        }
        let mut sender = self.connect(op).await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| transient(op, &e))?;
        self.put_idle(sender);
        Ok(resp)
    }

    fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|s| !s.is_closed());
        let i = idle.iter().position(|s| s.is_ready())?;
        Some(idle.swap_remove(i))
    }

    /// Keeps a connection for later (it is ready again once this answer has been read).
    fn put_idle(&self, sender: Sender) {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|s| !s.is_closed());
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(sender);
    }

    async fn connect(&self, op: Op) -> Result<Sender, StoreError> {
        let ep = &self.inner.ep;
        let setup = async {
            let addrs: Vec<_> = tokio::net::lookup_host((ep.host.as_str(), ep.port))
                .await
                .map_err(|e| {
                    StoreError::Transient(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("cannot resolve the S3 endpoint host `{}`: {e}", ep.host),
                    ))
                })?
                .collect();
            let mut last = None;
            let mut tcp = None;
            for a in addrs {
                match tokio::net::TcpStream::connect(a).await {
                    Ok(s) => {
                        tcp = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let tcp = tcp.ok_or_else(|| {
                let why = last.map_or("no address".to_string(), |e| e.to_string());
                StoreError::Transient(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!(
                        "cannot connect to the S3 endpoint {}: {why}",
                        self.inner.host_header
                    ),
                ))
            })?;
            let _ = tcp.set_nodelay(true);
            let io: Box<dyn Io> = match &self.inner.tls {
                None => Box::new(tcp),
                Some((connector, name)) => Box::new(
                    connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| transient(op, &format!("TLS: {e}")))?,
                ),
            };
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(|e| transient(op, &e))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(sender)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, setup).await {
            Err(_) => Err(timed_out(op, "connection")),
            Ok(r) => r,
        }
    }
}

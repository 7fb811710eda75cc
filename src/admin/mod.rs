//! The admin API (`[admin]`): a separate plain-HTTP/1.1 listener on a loopback address.
//!
//! - Off unless a token is configured (`admin.token` or `admin.token_file`). Every route
//!   but `GET /health` needs `Authorization: Bearer <token>`; the comparison is constant
//!   time in content *and* length (both sides are hashed with SHA-256 and the digests
//!   compared with `subtle`), see [`token_matches`].
//! - Why plain HTTP: the address must be a loopback one (checked at start-up), so the token
//!   never crosses a network; remote operators use an SSH tunnel or a TLS proxy. No cookies,
//!   no HTML, no CDN assets: JSON only, so no browser can be tricked into a request that
//!   carries credentials (the bearer header is never sent automatically).
//! - Routes ([`routes`]): `GET /files?prefix=&after=&limit=` (paged through
//!   [`crate::storage::store::Store::list`]), `GET /files/<path>` (stat), `DELETE
//!   /files/<path>`, `GET /usage?prefix=`, `GET /sessions` (uploads in progress and their
//!   offsets, from the session records), `GET /health`. GET never changes state; only
//!   DELETE does. Everything goes through the storage contract and the session engine,
//!   never a filesystem walk.
//! - Errors are JSON `{"error": code, "message": ...}` with stable codes ([`AdminError`]).
//! - Bounded: at most [`MAX_CONNECTIONS`] connections, a header read timeout, a lifetime per
//!   connection, request bodies never read.
//!
//! [`cli`] is the client behind `xferd admin ...`.

pub mod cli;
pub mod routes;

use crate::core::Core;
use crate::metrics::Metrics;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Admin connections served at once (more wait in the kernel's backlog).
pub const MAX_CONNECTIONS: usize = 16;
/// Longest an admin connection lives.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

/// What the admin listener serves from.
pub struct Admin {
    pub core: Arc<Core>,
    /// SHA-256 of the token (the token itself is not kept).
    token_digest: [u8; 32],
    pub max_page: usize,
    pub metrics: Arc<Metrics>,
}

impl Admin {
    pub fn new(core: Arc<Core>, token: &str, max_page: usize, metrics: Arc<Metrics>) -> Admin {
        Admin {
            core,
            token_digest: Sha256::digest(token.as_bytes()).into(),
            max_page: max_page.max(1),
            metrics,
        }
    }

    /// Whether the request carries the token (`Authorization: Bearer <token>`).
    pub fn authorised(&self, headers: &http::HeaderMap) -> bool {
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
        match given {
            Some(t) => token_matches(t.as_bytes(), &self.token_digest),
            // Still spend the same work, so a missing header is not faster to answer.
            None => {
                let _ = token_matches(b"", &self.token_digest);
                false
            }
        }
    }
}

/// Constant time in the content and the length of `given`: the comparison is of
/// fixed-size digests (hashing time grows with the length of `given`, which the sender
/// knows already, never with how much of it matches).
pub fn token_matches(given: &[u8], expected_digest: &[u8; 32]) -> bool {
    let d: [u8; 32] = Sha256::digest(given).into();
    bool::from(d.ct_eq(expected_digest))
}

/// The admin API's errors, each with a stable code and its status.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("a valid admin bearer token is required")]
    Unauthorized,
    #[error("no such file")]
    NotFound,
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    #[error("no such admin route")]
    NoRoute,
    #[error("the path conflicts with stored files (a directory, or below a file)")]
    PathConflict,
    #[error("storage error")]
    Storage(String),
}

impl AdminError {
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::Unauthorized => "admin_unauthorized",
            AdminError::NotFound => "not_found",
            AdminError::BadRequest(_) => "bad_request",
            AdminError::MethodNotAllowed(_) => "method_not_allowed",
            AdminError::NoRoute => "no_route",
            AdminError::PathConflict => "path_conflict",
            AdminError::Storage(_) => "storage_error",
        }
    }
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::NotFound | AdminError::NoRoute => StatusCode::NOT_FOUND,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::PathConflict => StatusCode::CONFLICT,
            AdminError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
    fn response(&self) -> Response<Full<Bytes>> {
        if let AdminError::Storage(e) = self {
            tracing::error!(error = %e, "admin API storage failure");
        }
        let body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        let mut r = json(self.status(), &body);
        let h = r.headers_mut();
        match self {
            AdminError::Unauthorized => {
                h.insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer realm=\"xferd-admin\""),
                );
            }
            AdminError::MethodNotAllowed(allow) => {
                h.insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
            }
            _ => {}
        }
        r
    }
}

impl From<crate::storage::store::StoreError> for AdminError {
    fn from(e: crate::storage::store::StoreError) -> Self {
        match e {
            crate::storage::store::StoreError::NotFound => AdminError::NotFound,
            crate::storage::store::StoreError::PathConflict(_) => AdminError::PathConflict,
            other => AdminError::Storage(other.to_string()),
        }
    }
}

/// A JSON response (`no-store`: admin answers are never cached).
pub fn json(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    h.insert(
        "x-content-type-options",
        http::HeaderValue::from_static("nosniff"),
    );
    r
}

/// Answers one admin request (auth, route, JSON), counting it.
pub async fn handle(admin: &Admin, req: &http::request::Parts) -> Response<Full<Bytes>> {
    let route = match routes::route_name(req.uri.path()) {
        "stat" if req.method == http::Method::DELETE => "delete",
        r => r,
    };
    let result = if route == "health" {
        // Unauthenticated (for probes); it tells nothing but "ok".
        routes::dispatch(admin, req).await
    } else if !admin.authorised(&req.headers) {
        tracing::warn!(
            path = req.uri.path(),
            "admin API: refused (bad or missing token)"
        );
        Err(AdminError::Unauthorized)
    } else {
        routes::dispatch(admin, req).await
    };
    let resp = match result {
        Ok(r) => r,
        Err(e) => e.response(),
    };
    let label = match resp.status().as_u16() {
        401 => "unauthorized",
        s if s >= 500 => "server_error",
        s if s >= 400 => "client_error",
        _ => "ok",
    };
    admin.metrics.admin_request(route, label);
    resp
}

/// Resolves once shutdown is signalled (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Serves the admin API on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stopped(&mut shutdown) => return,
        };
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let admin = admin.clone();
                async move {
                    // The body is never read: no admin route takes one.
                    let (parts, _body) = req.into_parts();
                    Ok::<_, Infallible>(handle(&admin, &parts).await)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(64 << 10)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        let d: [u8; 32] = Sha256::digest(b"0123456789abcdef").into();
        assert!(token_matches(b"0123456789abcdef", &d));
        assert!(!token_matches(b"0123456789abcdeF", &d));
        assert!(!token_matches(b"0123456789abcde", &d));
        assert!(!token_matches(b"0123456789abcdef0", &d));
        assert!(!token_matches(b"", &d));
    }
}

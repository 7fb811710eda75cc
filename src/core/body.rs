//! Body types shared by the core and both front ends: a request body is a plain stream of
//! `Bytes` (h3 bodies are not `http_body::Body`), a response body is empty, in memory, or a
//! stream of known length.

use bytes::Bytes;
use futures_util::Stream;
use std::pin::Pin;

/// A transport-level failure while reading a request body (reset, disconnect, timeout).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(pub String);

/// Where a transport puts a request's trailer fields when the body has ended (HTTP/1.1
/// chunked trailers, HTTP/2 and HTTP/3 trailing HEADERS).
pub type Trailers = std::sync::Arc<std::sync::Mutex<Option<http::HeaderMap>>>;

/// A request or response body as a stream of chunks.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send>>;

/// A response body.
pub enum Body {
    Empty,
    Full(Bytes),
    /// A stream whose total length is `len` (also sent as `Content-Length`).
    Stream {
        stream: BodyStream,
        len: u64,
    },
}

impl Body {
    pub fn json(value: &serde_json::Value) -> Body {
        Body::Full(Bytes::from(value.to_string()))
    }
    /// The exact length of the body, when known.
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Full(b) => b.len() as u64,
            Body::Stream { len, .. } => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An empty request body (for requests without content).
pub fn empty_stream() -> BodyStream {
    Box::pin(futures_util::stream::empty())
}

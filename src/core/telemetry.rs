//! What the core reports about transfers, as plain events. The core does not know
//! Prometheus; [`crate::metrics`] implements [`Telemetry`] and renders `/metrics`.

use super::readings::Estimate;
use std::time::Duration;

/// Which HTTP version carried a request (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    H1,
    H2,
    H3,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::H1, Protocol::H2, Protocol::H3];

    pub fn label(self) -> &'static str {
        match self {
            Protocol::H1 => "h1",
            Protocol::H2 => "h2",
            Protocol::H3 => "h3",
        }
    }

    /// Position in [`Protocol::ALL`] (for series resolved once, see `crate::metrics`).
    pub fn index(self) -> usize {
        match self {
            Protocol::H1 => 0,
            Protocol::H2 => 1,
            Protocol::H3 => 2,
        }
    }
}

/// The direction of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Upload,
    Download,
}

/// Receives the core's events. Every method must be cheap and must not block.
pub trait Telemetry: Send + Sync {
    /// A whole upload (PUT, form upload, or a resumable upload's completion) or download.
    fn transfer(&self, dir: Direction, protocol: Protocol, bytes: u64, elapsed: Duration);
    /// One resumable chunk (a tus PATCH, an IETF append, an HFS chunk) was stored.
    fn chunk(&self, protocol: Protocol, bytes: u64, elapsed: Duration);
    /// A request failed with a stable error code.
    fn error(&self, dir: Direction, protocol: Protocol, code: &'static str);
    fn range_request(&self, protocol: Protocol);
    /// A transfer's I/O buffer size was chosen; `changed` when it differs from before.
    fn buffer_size(&self, protocol: Protocol, size: usize, changed: bool);
    /// A chunk size was advised to a client.
    fn chunk_advised(&self, protocol: Protocol, size: u64);
    /// A connection's latest estimate.
    fn network(&self, protocol: Protocol, estimate: &Estimate);
    /// A storage operation was retried / the circuit breaker opened or closed.
    fn storage_retry(&self, op: &'static str);
    fn breaker_open(&self, open: bool);
    /// Files expired by a sweep, and their bytes.
    fn expired(&self, _files: u64, _bytes: u64) {}
    /// The text exposition for `/metrics`, or `None` when metrics are off here.
    fn render(&self) -> Option<String>;
    /// A virus scan ended (`[scan]`; see [`super::scan`]).
    fn scan(&self, _outcome: super::scan::Outcome) {}
    /// An upload of `bytes` was linked to the stored copy of identical content instead of
    /// stored (`[deduplication]`; see [`super::dedup`]).
    fn deduplicated(&self, _bytes: u64) {}
    /// A request was answered: which part of the server, which kind of client, which
    /// protocol (fixed label sets, see [`Route`] and [`Agent`]).
    fn request(&self, _route: Route, _agent: Agent, _protocol: Protocol) {}
    /// A request arrived in 0-RTT early data, before its connection's handshake completed,
    /// and was served at once, held until the handshake, or refused (425).
    fn early_data(&self, _outcome: EarlyData) {}
}

/// What became of a request read from 0-RTT early data (RFC 8470; see
/// [`crate::core::Core::handle`]). A metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EarlyData {
    /// A safe method (GET, HEAD, OPTIONS), served at once.
    Served,
    /// Any other method, held until the handshake completed, then served as usual.
    Held,
    /// Held, but the connection was lost (a replay never completes its handshake) or the
    /// hold timed out: 425 Too Early.
    Refused,
}

impl EarlyData {
    pub const ALL: [EarlyData; 3] = [EarlyData::Served, EarlyData::Held, EarlyData::Refused];

    pub fn label(self) -> &'static str {
        match self {
            EarlyData::Served => "served",
            EarlyData::Held => "held",
            EarlyData::Refused => "refused",
        }
    }
}

/// Which part of the server a request used (a metrics label from a fixed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// The upload page's HTML, CSS and script.
    Page,
    Tus,
    Ietf,
    /// HFS's chunked API (`/chunked-upload`, `/upload-status`).
    Hfs,
    /// Multipart form uploads (`POST /upload`).
    Form,
    /// Single signed `PUT`s (XEP-0363).
    Put,
    /// `GET`/`HEAD` of stored files.
    Download,
    /// `/health`, `/metrics`, `OPTIONS` and anything else.
    Other,
}

impl Route {
    pub const ALL: [Route; 8] = [
        Route::Page,
        Route::Tus,
        Route::Ietf,
        Route::Hfs,
        Route::Form,
        Route::Put,
        Route::Download,
        Route::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Route::Page => "page",
            Route::Tus => "tus",
            Route::Ietf => "ietf",
            Route::Hfs => "hfs",
            Route::Form => "form",
            Route::Put => "put",
            Route::Download => "download",
            Route::Other => "other",
        }
    }

    /// Position in [`Route::ALL`].
    pub fn index(self) -> usize {
        match self {
            Route::Page => 0,
            Route::Tus => 1,
            Route::Ietf => 2,
            Route::Hfs => 3,
            Route::Form => 4,
            Route::Put => 5,
            Route::Download => 6,
            Route::Other => 7,
        }
    }

    /// The route of a request, given the tus and IETF collection paths.
    pub fn of(head: &http::request::Parts, tus_path: &str, ietf_path: &str) -> Route {
        use http::Method;
        let path = head.uri.path();
        let h = &head.headers;
        let under = |base: &str| !base.is_empty() && path.starts_with(base);
        match &head.method {
            _ if super::page::is_page(path) => Route::Page,
            _ if under(tus_path) => Route::Tus,
            _ if under(ietf_path) => Route::Ietf,
            _ if path == "/chunked-upload" || path == "/upload-status" => Route::Hfs,
            &Method::POST if path == "/upload" => Route::Form,
            &Method::GET | &Method::HEAD if path == "/health" || path == "/metrics" => Route::Other,
            &Method::GET | &Method::HEAD => Route::Download,
            &Method::POST if h.contains_key("tus-resumable") => Route::Tus,
            &Method::POST | &Method::PUT if super::resumable::ietf::is_creation(h) => Route::Ietf,
            &Method::PUT => Route::Put,
            _ => Route::Other,
        }
    }
}

/// The family of the client that sent a request, from its `User-Agent` (a metrics label
/// from a fixed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Agent {
    /// A web browser (`Mozilla/...`), including browser-based XMPP clients.
    Browser,
    /// A native XMPP client (Conversations, Gajim, Dino, Monal, ...).
    Xmpp,
    Curl,
    /// xferd's own client (`xferd/...`).
    Xferd,
    Other,
}

/// The longest `User-Agent` value [`Agent::of`] keeps for its next call.
const MAX_KEPT_AGENT: usize = 512;

/// Lower-case `User-Agent` fragments of native XMPP clients.
const XMPP_CLIENTS: &[&str] = &[
    "conversations",
    "cheogram",
    "monocles",
    "blabber",
    "quicksy",
    "gajim",
    "dino",
    "monal",
    "siskin",
    "beagle",
    "psi+",
    "psi/",
    "profanity",
    "poezio",
    "movim",
    "pidgin",
    "xabber",
    "yaxim",
    "snikket",
    "kaidan",
    "smack",
];

impl Agent {
    pub const ALL: [Agent; 5] = [
        Agent::Browser,
        Agent::Xmpp,
        Agent::Curl,
        Agent::Xferd,
        Agent::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Agent::Browser => "browser",
            Agent::Xmpp => "xmpp_client",
            Agent::Curl => "curl",
            Agent::Xferd => "xferd_client",
            Agent::Other => "other",
        }
    }

    /// Position in [`Agent::ALL`].
    pub fn index(self) -> usize {
        match self {
            Agent::Browser => 0,
            Agent::Xmpp => 1,
            Agent::Curl => 2,
            Agent::Xferd => 3,
            Agent::Other => 4,
        }
    }

    /// The family of a `User-Agent` value (`None`: no header, or not visible ASCII).
    pub fn of(user_agent: Option<&str>) -> Agent {
        let Some(ua) = user_agent else {
            return Agent::Other;
        };
        // A client sends the same value on every request, and the substring searches below
        // were 2% of a 4 KiB GET's CPU: the last value classified on this thread is kept,
        // so a repeat costs one comparison.
        thread_local! {
            static LAST: std::cell::RefCell<(String, Agent)> =
                const { std::cell::RefCell::new((String::new(), Agent::Other)) };
        }
        LAST.with(|last| {
            let Ok(mut last) = last.try_borrow_mut() else {
                return Agent::classify(ua);
            };
            if !last.0.is_empty() && last.0 == ua {
                return last.1;
            }
            let agent = Agent::classify(ua);
            if ua.len() <= MAX_KEPT_AGENT {
                last.0.clear();
                last.0.push_str(ua);
                last.1 = agent;
            }
            agent
        })
    }

    fn classify(ua: &str) -> Agent {
        // Compared without case and without a lower-cased copy (this runs per request).
        let ua = ua.trim().as_bytes();
        let starts = |p: &str| {
            ua.get(..p.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(p.as_bytes()))
        };
        let contains = |c: &str| {
            // (`windows(0)` would panic; the fragments are never empty.)
            !c.is_empty()
                && ua
                    .windows(c.len())
                    .any(|w| w.eq_ignore_ascii_case(c.as_bytes()))
        };
        if starts("xferd/") || starts("xferd ") {
            Agent::Xferd
        } else if starts("curl/") {
            Agent::Curl
        } else if XMPP_CLIENTS.iter().any(|c| contains(c)) {
            Agent::Xmpp
        } else if starts("mozilla/") {
            Agent::Browser
        } else {
            Agent::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_families() {
        let cases = [
            (None, Agent::Other),
            (Some("curl/7.88.1"), Agent::Curl),
            (Some("xferd/0.1.0"), Agent::Xferd),
            (Some("Conversations/2.16.9 (F-Droid)"), Agent::Xmpp),
            (Some("Gajim/1.9"), Agent::Xmpp),
            (Some("Dino/0.4"), Agent::Xmpp),
            (
                Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/148.0.0.0 Safari/537.36"),
                Agent::Browser,
            ),
            (Some("Mozilla/5.0 (iPhone) Monal/6.4"), Agent::Xmpp),
            (Some("python-requests/2.31"), Agent::Other),
            (Some(""), Agent::Other),
            (Some("  CURL/8.0"), Agent::Curl),
            (Some("XFERD 0.1"), Agent::Xferd),
            (Some("SomeApp GAJIM-compatible"), Agent::Xmpp),
            (Some("xferd"), Agent::Other),
        ];
        for (ua, want) in cases {
            assert_eq!(Agent::of(ua), want, "{ua:?}");
            // The second call is answered by the kept value: the same family.
            assert_eq!(Agent::of(ua), want, "{ua:?} repeated");
        }
        // Interleaved values each get their own family, never the kept one's.
        for (ua, want) in cases.iter().rev().chain(cases.iter()) {
            assert_eq!(Agent::of(*ua), *want, "{ua:?} interleaved");
        }
        let long = format!("Gajim/1.9 {}", "x".repeat(MAX_KEPT_AGENT));
        assert_eq!(Agent::of(Some(&long)), Agent::Xmpp);
        assert_eq!(Agent::of(Some("curl/8")), Agent::Curl);
        assert_eq!(Agent::of(Some(&long)), Agent::Xmpp);
    }

    #[test]
    fn indexes_are_positions_in_all() {
        for (i, p) in Protocol::ALL.iter().enumerate() {
            assert_eq!(p.index(), i, "{p:?}");
        }
        for (i, r) in Route::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        for (i, a) in Agent::ALL.iter().enumerate() {
            assert_eq!(a.index(), i, "{a:?}");
        }
    }

    #[test]
    fn routes() {
        let r = |m: &str, p: &str, hdr: Option<(&str, &str)>| {
            let mut b = http::Request::builder().method(m).uri(p);
            if let Some((k, v)) = hdr {
                b = b.header(k, v);
            }
            let (head, ()) = b.body(()).unwrap().into_parts();
            Route::of(&head, "/files/", "/uploads/")
        };
        assert_eq!(r("GET", "/upload-page/", None), Route::Page);
        assert_eq!(r("GET", "/upload-page/app.js", None), Route::Page);
        assert_eq!(r("POST", "/files/", None), Route::Tus);
        assert_eq!(r("PATCH", "/files/0123", None), Route::Tus);
        assert_eq!(
            r("POST", "/a/b", Some(("tus-resumable", "1.0.0"))),
            Route::Tus
        );
        assert_eq!(r("HEAD", "/uploads/x", None), Route::Ietf);
        assert_eq!(r("GET", "/chunked-upload", None), Route::Hfs);
        assert_eq!(r("POST", "/upload", None), Route::Form);
        assert_eq!(r("PUT", "/a/b.txt", None), Route::Put);
        assert_eq!(r("GET", "/a/b.webm", None), Route::Download);
        assert_eq!(r("GET", "/health", None), Route::Other);
        assert_eq!(r("OPTIONS", "/a", None), Route::Other);
    }
}

/// Reports nothing (for tests of core parts that need a `Telemetry`).
#[derive(Debug, Default)]
pub struct Silent;

impl Telemetry for Silent {
    fn transfer(&self, _: Direction, _: Protocol, _: u64, _: Duration) {}
    fn chunk(&self, _: Protocol, _: u64, _: Duration) {}
    fn error(&self, _: Direction, _: Protocol, _: &'static str) {}
    fn range_request(&self, _: Protocol) {}
    fn buffer_size(&self, _: Protocol, _: usize, _: bool) {}
    fn chunk_advised(&self, _: Protocol, _: u64) {}
    fn network(&self, _: Protocol, _: &Estimate) {}
    fn storage_retry(&self, _: &'static str) {}
    fn breaker_open(&self, _: bool) {}
    fn render(&self) -> Option<String> {
        None
    }
}

//! Virus scanners behind the core's [`crate::core::scan::Scanner`] trait. One so far:
//! [`clamd::Clamd`], ClamAV's daemon over its Unix or TCP socket with `INSTREAM` (the bytes
//! are streamed to it, so clamd needs no access to xferd's storage).

pub mod clamd;

pub use clamd::{Clamd, ClamdAddr};

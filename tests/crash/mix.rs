//! The upload mix of the crash loops (`tests/crash.rs` on the fs backend, `tests/crash_s3.rs`
//! on s3): the ledger of what the server acknowledged, and the clients that drive PUT over
//! h1/h2/h3, multipart POST and the three resumable protocols until a kill cuts them.

use super::wire::v3; // an hour of validity, not common's 10 minutes
use super::wire::*;
use crate::common::*;
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use xferd::client::{Client, Proto};
use xferd::core::auth::Scheme;

#[derive(Default)]
pub(crate) struct Ledger {
    /// Every final name an upload was attempted under: (SHA-256, length) of its full bytes.
    pub(crate) attempted: HashMap<String, (String, u64)>,
    /// Acknowledged complete uploads.
    /// Acknowledged complete uploads (with how they were acknowledged).
    pub(crate) done: HashMap<String, (String, u64, String)>,
    pub(crate) sessions: HashMap<u64, Sess>,
    pub(crate) next_sid: u64,
    pub(crate) acked_uploads: u64,
    pub(crate) acked_bytes: u64,
    pub(crate) bytes_verified: u64,
    /// How many checks each acknowledged upload passed; distinct uploads verified.
    pub(crate) checked: HashMap<String, u32>,
    pub(crate) uploads_verified: u64,
    pub(crate) violations: Vec<String>,
}

pub(crate) type Shared = Arc<Mutex<Ledger>>;

pub(crate) fn attempt(l: &Shared, rel: &str, data: &[u8]) {
    l.lock()
        .unwrap()
        .attempted
        .insert(rel.to_string(), (sha(data), data.len() as u64));
}

pub(crate) fn ack_done(l: &Shared, rel: &str, data: &[u8], how: String) {
    let mut g = l.lock().unwrap();
    g.done
        .insert(rel.to_string(), (sha(data), data.len() as u64, how));
    g.acked_uploads += 1;
    g.acked_bytes += data.len() as u64;
}

/// Drives session `sid` from the server's offset for at most `pieces` pieces (all when
/// `None`); records acknowledgements and checks the offset against the ledger. `Ok(true)`
/// when every byte is in, `Ok(false)` when the session is gone or not yet complete, else
/// what went wrong.
pub(crate) async fn advance(
    c: &Client,
    l: &Shared,
    sid: u64,
    pieces: Option<usize>,
    rng: &mut rand::rngs::StdRng,
) -> Result<bool, String> {
    let Some(s) = l.lock().unwrap().sessions.get(&sid).cloned() else {
        return Ok(false);
    };
    let data = content(s.seed, s.total);
    let Some((status, mut off)) = query(c, &s).await else {
        return Err("offset query: no response".into());
    };
    if status == 404 || status == 410 {
        // Gone: only a completed upload may go (its file is then checked like any other;
        // a session lost without its file shows as an acknowledged upload missing).
        let mut g = l.lock().unwrap();
        g.sessions.remove(&sid);
        g.done.insert(
            s.rel.clone(),
            (
                sha(&data),
                s.total,
                format!("{:?} session gone ({status})", s.kind),
            ),
        );
        return Ok(false);
    }
    if (400..500).contains(&status) {
        // The client asks for the offset of a session the server created: no 4xx but
        // "gone" is ever right (a 409 here hid a completion cut by a kill, 8d3293e).
        l.lock().unwrap().violations.push(format!(
            "{:?} session {} ({}): offset query answered {status}",
            s.kind, s.loc, s.rel
        ));
    }
    if !(200..300).contains(&status) {
        return Err(format!("offset query: {status}"));
    }
    if off < s.acked {
        l.lock().unwrap().violations.push(format!(
            "{:?} session {} ({}): offset {off} below the acknowledged {}",
            s.kind, s.loc, s.rel, s.acked
        ));
        return Err(format!("offset {off} below the acknowledged {}", s.acked));
    }
    if off >= s.total {
        // Every byte is in: the upload is complete, or completes on this query (tus, IETF)
        // or on a repeated last chunk (HFS); the file is then checked like any other.
        if s.kind == Kind::Hfs {
            let last = (s.total - 1) / s.chunk * s.chunk;
            let _ = append(c, &s, &data, last, s.total).await;
        }
        let mut g = l.lock().unwrap();
        g.sessions.remove(&sid);
        g.done.insert(
            s.rel.clone(),
            (sha(&data), s.total, format!("{:?} offset at total", s.kind)),
        );
        return Ok(true);
    }
    if s.kind == Kind::Hfs {
        off = off / s.chunk * s.chunk;
    }
    let mut sent = 0usize;
    while off < s.total && pieces.is_none_or(|p| sent < p) {
        let end = piece_end(&s, off, rng);
        let (at, complete) = append(c, &s, &data, off, end)
            .await
            .map_err(|e| format!("from offset {off} (acknowledged {}): {e}", s.acked))?;
        sent += 1;
        let mut g = l.lock().unwrap();
        if let Some(e) = g.sessions.get_mut(&sid) {
            e.acked = e.acked.max(at);
        }
        if complete {
            g.sessions.remove(&sid);
            g.done.insert(
                s.rel.clone(),
                (sha(&data), s.total, format!("{:?} completed", s.kind)),
            );
            g.acked_uploads += 1;
            g.acked_bytes += s.total;
            return Ok(true);
        }
        off = at;
    }
    Ok(off >= s.total)
}

/// Creates a resumable session and registers it once the server acknowledged it.
pub(crate) async fn create(
    c: &Client,
    l: &Shared,
    kind: Kind,
    rel: &str,
    seed: u64,
    total: u64,
) -> Option<u64> {
    attempt(l, rel, &content(seed, total));
    let t = total.to_string();
    // HFS: the chunk size the server chose (the minimum part size on s3); else unused.
    let mut chunk = 1;
    let loc = match kind {
        Kind::Tus => {
            let r = try_req(
                c,
                "POST",
                &v3("POST", rel),
                &[TUS, ("upload-length", &t)],
                None,
            )
            .await?;
            (r.status == 201).then_some(())?;
            r.header("location")?.to_string()
        }
        Kind::Ietf => {
            let h = [
                ("upload-complete", "?0"),
                ("upload-length", t.as_str()),
                ("content-length", "0"),
            ];
            let r = try_req(c, "POST", &v3("POST", rel), &h, Some(paced(Bytes::new()))).await?;
            (r.status == 201).then_some(())?;
            r.header("location")?.to_string()
        }
        Kind::Hfs => {
            let url = format!(
                "/chunked-upload?{}",
                v3("POST", rel).split_once('?').unwrap().1
            );
            let h = [("x-filename", rel), ("x-total-size", t.as_str())];
            let r = try_req(c, "POST", &url, &h, None).await?;
            (r.status == 201).then_some(())?;
            chunk = r.json()["chunk_size"].as_u64().filter(|c| *c > 0)?;
            r.json()["session_id"].as_str()?.to_string()
        }
    };
    let mut g = l.lock().unwrap();
    let sid = g.next_sid;
    g.next_sid += 1;
    g.sessions.insert(
        sid,
        Sess {
            kind,
            loc,
            rel: rel.to_string(),
            seed,
            total,
            chunk,
            acked: 0,
            busy: true,
        },
    );
    Some(sid)
}

pub(crate) fn release(l: &Shared, sid: u64) {
    if let Some(s) = l.lock().unwrap().sessions.get_mut(&sid) {
        s.busy = false;
    }
}

/// One client of the mix: random operations (uploads of 1 to `max_len` bytes) until its
/// task is aborted (at the kill).
pub(crate) async fn worker(
    addr: std::net::SocketAddr,
    roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    l: Shared,
    name: String,
    seed: u64,
    max_len: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut clients: HashMap<u8, Client> = HashMap::new();
    for n in 0u64.. {
        let proto = Proto::ALL[rng.random_range(0..3)];
        let key = proto as u8;
        let c = match clients.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                match Client::connect(proto, addr, "localhost", &roots).await {
                    Ok(c) => e.insert(c),
                    Err(_) => return,
                }
            }
        };
        let c = &*c;
        let total = rng.random_range(1..=max_len);
        let dseed = rng.random::<u64>();
        let rel = format!("{name}-{n}.bin");
        match rng.random_range(0..7) {
            0 | 1 => {
                let data = content(dseed, total);
                attempt(&l, &rel, &data);
                let len = total.to_string();
                let r = try_req(
                    c,
                    "PUT",
                    &signed_v(&rel, total),
                    &[("content-length", &len)],
                    Some(paced(data.clone())),
                )
                .await;
                match r {
                    Some(r) if r.status == 201 => {
                        ack_done(&l, &rel, &data, format!("PUT {}", label(proto)))
                    }
                    Some(_) => {}
                    None => return,
                }
            }
            2 => {
                let data = content(dseed, total);
                let fname = format!("{}-{n}-form.bin", name.replace('/', "-"));
                let rel = format!("uploads/{fname}");
                attempt(&l, &rel, &data);
                let b = "CrashBoundary9";
                let mut form = format!("--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{fname}\"\r\nContent-Type: application/octet-stream\r\n\r\n").into_bytes();
                form.extend_from_slice(&data);
                form.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
                let (len, ct) = (
                    form.len().to_string(),
                    format!("multipart/form-data; boundary={b}"),
                );
                let url = signed("", Scheme::V3, "POST", "upload", 0, "", now_unix() + 3600);
                let r = try_req(
                    c,
                    "POST",
                    &url,
                    &[("content-type", &ct), ("content-length", &len)],
                    Some(paced(Bytes::from(form))),
                )
                .await;
                match r {
                    Some(r) if r.status == 201 => {
                        ack_done(&l, &rel, &data, format!("POST form {}", label(proto)))
                    }
                    Some(_) => {}
                    None => return,
                }
            }
            3..=5 => {
                let kind = [Kind::Tus, Kind::Ietf, Kind::Hfs][rng.random_range(0..3)];
                let Some(sid) = create(c, &l, kind, &rel, dseed, total).await else {
                    return;
                };
                let pieces = rng.random_range(1..=4);
                let _ = advance(c, &l, sid, Some(pieces), &mut rng).await;
                release(&l, sid);
            }
            _ => {
                // Continue a session left by an earlier client or cycle.
                let sid = {
                    let mut g = l.lock().unwrap();
                    let free: Vec<u64> = g
                        .sessions
                        .iter()
                        .filter(|(_, s)| !s.busy)
                        .map(|(k, _)| *k)
                        .collect();
                    if free.is_empty() {
                        continue;
                    }
                    let sid = free[rng.random_range(0..free.len())];
                    g.sessions.get_mut(&sid).unwrap().busy = true;
                    sid
                };
                let pieces = rng.random_range(1..=3);
                let _ = advance(c, &l, sid, Some(pieces), &mut rng).await;
                release(&l, sid);
            }
        }
    }
}

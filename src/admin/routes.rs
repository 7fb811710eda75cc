//! The admin API's routes (see [`super`]): JSON over the storage contract and the session
//! engine. Paths in `/files/<path>` are percent-decoded once and validated like upload paths.

use super::{json, Admin, AdminError};
use crate::storage::key::Key;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use std::time::SystemTime;

type Answer = Result<Response<Full<Bytes>>, AdminError>;

/// The route's label in metrics (a fixed set: [`crate::metrics::ADMIN_ROUTES`]).
pub fn route_name(path: &str) -> &'static str {
    match path {
        "/health" => "health",
        "/files" => "files",
        "/usage" => "usage",
        "/sessions" => "sessions",
        p if p.starts_with("/files/") => "stat",
        _ => "other",
    }
}

/// The query parameter `name`, percent-decoded (`+` is a space, as in forms).
fn param(query: Option<&str>, name: &str) -> Result<Option<String>, AdminError> {
    let Some(q) = query else { return Ok(None) };
    let mut found = None;
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != name {
            continue;
        }
        if found.is_some() {
            return Err(AdminError::BadRequest(format!("`{name}` given twice")));
        }
        let v = v.replace('+', " ");
        let v = percent_encoding::percent_decode_str(&v)
            .decode_utf8()
            .map_err(|_| AdminError::BadRequest(format!("`{name}` is not UTF-8")))?;
        found = Some(v.into_owned());
    }
    Ok(found)
}

fn unix(t: SystemTime) -> u64 {
    crate::core::unix_secs(t)
}

/// A prefix as [`crate::storage::store::Store::list`] takes it: no leading `/`, no `..`.
fn prefix_of(query: Option<&str>) -> Result<String, AdminError> {
    let p = param(query, "prefix")?.unwrap_or_default();
    let p = p.trim_start_matches('/').to_string();
    if p.split('/').any(|s| s == "..") || p.contains('\0') {
        return Err(AdminError::BadRequest("bad prefix".into()));
    }
    Ok(p)
}

fn file_key(path: &str) -> Result<Key, AdminError> {
    crate::core::path::resolve(path, "files").map_err(|e| AdminError::BadRequest(e.to_string()))
}

pub async fn dispatch(admin: &Admin, req: &http::request::Parts) -> Answer {
    let path = req.uri.path();
    let q = req.uri.query();
    let m = &req.method;
    match route_name(path) {
        "health" => match *m {
            Method::GET | Method::HEAD => {
                Ok(json(StatusCode::OK, &serde_json::json!({ "status": "ok" })))
            }
            _ => Err(AdminError::MethodNotAllowed("GET, HEAD")),
        },
        "files" => match *m {
            Method::GET => list(admin, q).await,
            _ => Err(AdminError::MethodNotAllowed("GET")),
        },
        "stat" => match *m {
            Method::GET | Method::HEAD => stat(admin, path).await,
            Method::DELETE => delete(admin, path).await,
            _ => Err(AdminError::MethodNotAllowed("GET, HEAD, DELETE")),
        },
        "usage" => match *m {
            Method::GET => usage(admin, q).await,
            _ => Err(AdminError::MethodNotAllowed("GET")),
        },
        "sessions" => match *m {
            Method::GET => sessions(admin).await,
            _ => Err(AdminError::MethodNotAllowed("GET")),
        },
        _ => Err(AdminError::NoRoute),
    }
}

/// `GET /files?prefix=&after=&limit=`: one page, in key order; `next` is the `after` of
/// the next page (absent on the last one).
async fn list(admin: &Admin, q: Option<&str>) -> Answer {
    let prefix = prefix_of(q)?;
    let after = match param(q, "after")? {
        Some(a) if !a.is_empty() => {
            Some(Key::parse(&a).map_err(|e| AdminError::BadRequest(format!("after: {e}")))?)
        }
        _ => None,
    };
    let limit = match param(q, "limit")? {
        None => admin.max_page,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| AdminError::BadRequest("limit must be a positive integer".into()))?
            .min(admin.max_page),
    };
    let page = admin
        .core
        .storage
        .list(&prefix, after.as_ref(), limit)
        .await?;
    let next = (page.len() == limit)
        .then(|| page.last().map(|l| l.key.as_str().to_string()))
        .flatten();
    let files: Vec<_> = page
        .iter()
        .map(|l| {
            serde_json::json!({
                "path": l.key.as_str(),
                "size": l.meta.len,
                "modified": unix(l.meta.modified),
            })
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "prefix": prefix, "files": files, "next": next }),
    ))
}

/// `GET /files/<path>`.
async fn stat(admin: &Admin, path: &str) -> Answer {
    let key = file_key(path)?;
    let meta = admin
        .core
        .storage
        .stat(&key)
        .await?
        .ok_or(AdminError::NotFound)?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "path": key.as_str(),
            "size": meta.len,
            "modified": unix(meta.modified),
        }),
    ))
}

/// `DELETE /files/<path>`: 200 with what was removed, 404 when nothing was there.
async fn delete(admin: &Admin, path: &str) -> Answer {
    let key = file_key(path)?;
    if !admin.core.storage.delete(&key).await? {
        return Err(AdminError::NotFound);
    }
    tracing::info!(path = %key, "deleted through the admin API");
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "deleted": key.as_str() }),
    ))
}

/// `GET /usage?prefix=`: files and bytes under a prefix, summed page by page (memory: one
/// page).
async fn usage(admin: &Admin, q: Option<&str>) -> Answer {
    let prefix = prefix_of(q)?;
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut after: Option<Key> = None;
    loop {
        let page = admin
            .core
            .storage
            .list(&prefix, after.as_ref(), admin.max_page)
            .await?;
        files += page.len() as u64;
        bytes = page
            .iter()
            .fold(bytes, |sum, l| sum.saturating_add(l.meta.len));
        if page.len() < admin.max_page {
            break;
        }
        after = page.last().map(|l| l.key.clone());
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "prefix": prefix, "files": files, "bytes": bytes }),
    ))
}

/// `GET /sessions`: resumable uploads in progress and their offsets.
async fn sessions(admin: &Admin) -> Answer {
    let now = crate::core::unix_secs(SystemTime::now());
    let all = admin
        .core
        .engine
        .in_progress(now)
        .await
        .map_err(|e| AdminError::Storage(e.to_string()))?;
    let list: Vec<_> = all
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id,
                "protocol": format!("{:?}", s.origin).to_ascii_lowercase(),
                "target": s.target,
                "offset": s.offset(),
                "received": s.received.covered(),
                "length": s.length,
                "created": s.created,
                "expires": s.expires,
            })
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "sessions": list }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_decode_and_refuse_repeats() {
        let q = Some("prefix=a%2Fb&limit=5&x");
        assert_eq!(param(q, "prefix").unwrap().as_deref(), Some("a/b"));
        assert_eq!(param(q, "limit").unwrap().as_deref(), Some("5"));
        assert_eq!(param(q, "after").unwrap(), None);
        assert!(param(Some("a=1&a=2"), "a").is_err());
        assert!(prefix_of(Some("prefix=../x")).is_err());
        assert_eq!(prefix_of(Some("prefix=/x/")).unwrap(), "x/");
    }

    #[test]
    fn routes_have_fixed_labels() {
        for p in ["/health", "/files", "/files/a", "/usage", "/sessions", "/x"] {
            assert!(crate::metrics::ADMIN_ROUTES.contains(&route_name(p)));
        }
    }
}

//! Deduplication (`[deduplication]`; HFS `[server] deduplication_enabled` with
//! `[deduplication] enabled`): uploads with the same SHA-256 share one stored copy.
//!
//! Rules:
//! - Identity is the SHA-256 of the whole upload (known when its body ends, before the
//!   commit) and its length; the bytes are not compared again (SHA-256 equality is the
//!   standard of content addressing). The name plays no part: HFS links only when hash
//!   *and* basename match, and then its link fails (EEXIST), so it saves nothing.
//! - The body is received and hashed as without deduplication (the client's upload is not
//!   saved, only the storage); at the commit the backend links the new name to the stored
//!   copy and drops the staged bytes ([`crate::storage::cas`] on the filesystem).
//! - Only a backend that declares [`Capabilities::dedup`] shares copies (the filesystem,
//!   by hard links); the configuration refuses `[deduplication] enabled` with S3 (no links:
//!   a reference scheme would need a name-to-object index of its own, and a server-side copy
//!   stores the bytes again).
//! - Quotas count logical bytes (each name its full length, what users see), so deleting
//!   one name frees its quota whether or not its copy is shared.
//! - The saved bytes are counted (`xferd_dedup_saved_bytes_total`, with the uploads linked,
//!   `xferd_dedup_linked_total`).

use super::error::CoreError;
use super::telemetry::Telemetry;
use crate::storage::key::Key;
use crate::storage::store::{Capabilities, PartStore, Staged, StoreError};

/// Whether uploads to a backend with `caps` are deduplicated when `enabled` is configured.
pub fn applies(enabled: bool, caps: &Capabilities) -> bool {
    enabled && caps.dedup
}

/// Commits a finished single-shot upload of `len` bytes whose digest is `sha256` (`PUT`,
/// the form upload): where deduplication applies, sharing the stored copy of identical
/// content (under the breaker, as [`super::upload::commit`], which it is otherwise) and
/// reporting the bytes saved.
pub async fn commit(
    core: &super::Core,
    staged: Box<dyn Staged>,
    sha256: [u8; 32],
    len: u64,
) -> Result<(), CoreError> {
    if !applies(core.settings.dedup, &core.storage.capabilities()) {
        return super::upload::commit(core, staged).await;
    }
    let job = async {
        staged
            .commit_dedup(sha256, len)
            .await
            .map_err(CoreError::from)
    };
    let saved = core.resilience.run_once("commit", job).await?;
    report(core.telemetry(), saved);
    Ok(())
}

/// Completes a resumable upload (see [`PartStore::complete_dedup`]); reports the bytes saved.
pub async fn complete(
    parts: &dyn PartStore,
    telemetry: &dyn Telemetry,
    id: &str,
    len: u64,
    key: &Key,
    sha256: [u8; 32],
) -> Result<(), StoreError> {
    let saved = parts.complete_dedup(id, len, key, sha256).await?;
    report(telemetry, saved);
    Ok(())
}

fn report(telemetry: &dyn Telemetry, saved: u64) {
    if saved > 0 {
        telemetry.deduplicated(saved);
        tracing::debug!(bytes = saved, "deduplicated: linked to the stored copy");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_backend_that_declares_it_deduplicates() {
        let caps = |dedup| Capabilities {
            random_write: true,
            concat: true,
            free_space: true,
            min_part_size: 0,
            dedup,
        };
        assert!(applies(true, &caps(true)));
        assert!(!applies(false, &caps(true)));
        assert!(!applies(true, &caps(false)));
    }
}

//! `clb upgrade --check`: is there a newer image than the one the next boot tries? Compares the
//! digest the registry now gives for the image reference (by default the one the active slot
//! was staged from) with the active and booted slots' digests. Reads only: no lock, no writes.

use clb_ondisk::SlotName;

use crate::error::{ClbError, Result};
use crate::registry::Registry;
use crate::store::StateStore;

#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    /// The reference checked.
    pub image: String,
    /// The platform image digest the registry gives for it now.
    pub digest: String,
    /// The slot the next boot tries, and its digest (`null` when nothing is installed).
    pub active: Option<SlotName>,
    pub active_digest: Option<String>,
    /// The slot running now (`null` offline).
    pub booted: Option<SlotName>,
    pub booted_digest: Option<String>,
    /// The registry's digest differs from the active slot's: `clb upgrade` would stage it.
    pub update_available: bool,
}

pub async fn check(
    store: &StateStore,
    registry: &Registry,
    image: Option<&str>,
    booted: Option<SlotName>,
) -> Result<CheckReport> {
    let state = store.read_bootstate()?;
    let active = state.as_ref().map(|s| s.active);
    let active_manifest = match active {
        Some(slot) => store.read_slot(slot)?,
        None => None,
    };
    let image = match (image, &active_manifest) {
        (Some(i), _) => i.to_string(),
        (None, Some(m)) => m.image.clone(),
        (None, None) => {
            return Err(ClbError::State(
                "nothing installed to compare with: give -d IMAGE".into(),
            ));
        }
    };
    let reference = Registry::parse_reference(&image)?;
    let resolved = registry.resolve(&reference).await?;
    let booted_digest = match booted {
        Some(slot) => store.read_slot(slot)?.map(|m| m.digest),
        None => None,
    };
    let active_digest = active_manifest.map(|m| m.digest);
    Ok(CheckReport {
        update_available: active_digest.as_deref() != Some(resolved.manifest_digest.as_str()),
        image,
        digest: resolved.manifest_digest,
        active,
        active_digest,
        booted,
        booted_digest,
    })
}

//! `clb deploy`: a blank disk (or image) becomes a clb host. The default GPT layout is written
//! by the stage engine's layout (`crate::partitions`, one partitioning implementation for
//! deploy and cloud-config), then slot `a` is installed through the same verified staging path
//! as an upgrade and the boot state is set.

use crate::error::{ClbError, Result};
use crate::progress::Progress;
use crate::registry::Registry;
use crate::store::StateStore;
use crate::upgrade::{self, UpgradeReport, UpgradeRequest};

/// Installs slot `a` into an empty state; refuses a state that already holds a system.
pub async fn install(
    store: &StateStore,
    registry: &Registry,
    req: &UpgradeRequest,
    progress: &Progress,
) -> Result<UpgradeReport> {
    if store.read_bootstate()?.is_some() {
        return Err(ClbError::State(format!(
            "{} already holds a system; use clb upgrade",
            store.root().display()
        )));
    }
    upgrade::upgrade(store, registry, req, None, progress).await
}

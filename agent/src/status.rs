//! `clb status`: one JSON object for machines, a short table for people.

use std::collections::BTreeMap;

use clb_ondisk::SlotName;
use serde::Serialize;

use crate::error::Result;
use crate::store::StateStore;

#[derive(Debug, Serialize)]
pub struct Status {
    pub state_dir: String,
    /// Slot the next boot tries (`null` when nothing is installed).
    pub active: Option<SlotName>,
    /// Slot running now (`null` offline).
    pub booted: Option<SlotName>,
    pub fallback: Option<SlotName>,
    /// Boots left before falling back; `null` once the active slot is marked good.
    pub tries_left: Option<u32>,
    pub max_tries: Option<u32>,
    pub good: bool,
    /// The last boot fell back because `failed_slot` did not reach "boot good".
    pub rolled_back: bool,
    pub failed_slot: Option<SlotName>,
    pub slots: BTreeMap<String, SlotStatus>,
}

#[derive(Debug, Serialize)]
pub struct SlotStatus {
    pub image: String,
    pub digest: String,
    pub layers: Vec<String>,
    pub verified: bool,
    pub verified_with: Option<String>,
    pub staged_at: String,
    pub complete: bool,
    /// Kernel the slot boots (`null` when its image has no /boot/vmlinuz).
    pub kernel_version: Option<String>,
}

pub fn status(store: &StateStore, booted: Option<SlotName>) -> Result<Status> {
    let state = store.read_bootstate()?;
    let mut slots = BTreeMap::new();
    for m in store.slots()? {
        let complete = m.layer_digests().all(|d| store.has_layer(d));
        let layers = m.layer_digests().map(str::to_string).collect();
        slots.insert(
            m.slot.as_str().to_string(),
            SlotStatus {
                complete,
                layers,
                verified: m.verified.is_some(),
                verified_with: m.verified.map(|v| v.key),
                image: m.image,
                digest: m.digest,
                staged_at: m.staged_at,
                kernel_version: m.boot.and_then(|b| b.kernel_version),
            },
        );
    }
    Ok(Status {
        state_dir: store.root().display().to_string(),
        active: state.as_ref().map(|s| s.active),
        booted,
        fallback: state.as_ref().and_then(|s| s.fallback),
        tries_left: state.as_ref().filter(|s| !s.good).map(|s| s.tries_left),
        max_tries: state.as_ref().map(|s| s.max_tries),
        good: state.as_ref().is_some_and(|s| s.good),
        rolled_back: state.as_ref().is_some_and(|s| s.rolled_back),
        failed_slot: state.as_ref().and_then(|s| s.failed),
        slots,
    })
}

impl Status {
    pub fn human(&self) -> String {
        let opt = |s: Option<SlotName>| s.map_or("-".to_string(), |s| s.to_string());
        let mut out = String::new();
        out.push_str(&format!("state:     {}\n", self.state_dir));
        out.push_str(&format!(
            "active:    {}{}\n",
            opt(self.active),
            match (self.good, self.tries_left) {
                (true, _) => " (good)".to_string(),
                (false, Some(t)) => format!(" (on trial, {t} tries left)"),
                (false, None) => String::new(),
            }
        ));
        out.push_str(&format!("booted:    {}\n", opt(self.booted)));
        out.push_str(&format!("fallback:  {}\n", opt(self.fallback)));
        if self.rolled_back {
            out.push_str(&format!(
                "ROLLED BACK: slot {} did not reach boot-good\n",
                opt(self.failed_slot)
            ));
        }
        for (name, s) in &self.slots {
            out.push_str(&format!(
                "\nslot {name}: {}\n  digest:  {}\n  layers:  {}{}\n  verified: {}\n  staged:  {}\n",
                s.image,
                s.digest,
                s.layers.len(),
                if s.complete { "" } else { " (INCOMPLETE)" },
                s.verified_with.as_deref().unwrap_or("no (--no-verify)"),
                s.staged_at
            ));
        }
        out
    }
}

//! `clb status`: one JSON object for machines, a short table for people.
//!
//! The JSON document is a versioned contract (`apiVersion`/`kind`): the D-Bus API and the
//! fleet operator expose the same document. Its JSON Schema is generated from these types
//! ([`schema`]) and committed as `docs/status.schema.json`; a test keeps the two equal.

use std::collections::BTreeMap;

use clb_ondisk::SlotName;
use schemars::JsonSchema;
use serde::Serialize;

use crate::error::Result;
use crate::store::StateStore;

/// The `apiVersion` of the status document; a change that removes or retypes a field gets a
/// new version.
pub const API_VERSION: &str = "clb.dev/v1";
/// The `kind` of the status document.
pub const KIND: &str = "HostStatus";

/// The state of a clb host: its slots, which one boots next, and how the last boots went.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(title = "clb HostStatus", extend("$id" = "https://clb.dev/schemas/host-status-v1.json"))]
pub struct Status {
    /// Always `clb.dev/v1` for this version of the document.
    #[serde(rename = "apiVersion")]
    #[schemars(extend("const" = API_VERSION))]
    pub api_version: &'static str,
    /// Always `HostStatus`.
    #[schemars(extend("const" = KIND))]
    pub kind: &'static str,
    /// The state partition's mount point or the `--state-dir` directory.
    pub state_dir: String,
    /// Slot the next boot tries (`null` when nothing is installed).
    #[schemars(schema_with = "optional_slot_schema")]
    pub active: Option<SlotName>,
    /// Slot running now (`null` offline).
    #[schemars(schema_with = "optional_slot_schema")]
    pub booted: Option<SlotName>,
    /// Slot the boot falls back to when the active one fails (`null`: none).
    #[schemars(schema_with = "optional_slot_schema")]
    pub fallback: Option<SlotName>,
    /// Boots left before falling back: every boot spends one, good slot or not, and
    /// `clb mark-good` refills them (`null` when nothing is installed).
    pub tries_left: Option<u32>,
    /// Boots in a row a slot gets without mark-good (`null` when nothing is installed).
    pub max_tries: Option<u32>,
    /// The active slot was marked good.
    pub good: bool,
    /// The last boot fell back because `failed_slot` did not reach "boot good".
    pub rolled_back: bool,
    /// The slot that failed to boot when `rolled_back`.
    #[schemars(schema_with = "optional_slot_schema")]
    pub failed_slot: Option<SlotName>,
    /// The installed slots by name (`a`, `b`, `recovery`).
    pub slots: BTreeMap<String, SlotStatus>,
    /// A verified download waiting for `clb upgrade --apply` (`null`: none).
    pub download: Option<DownloadStatus>,
}

/// What `clb upgrade --download-only` fetched and nothing staged yet.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DownloadStatus {
    pub image: String,
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: String,
    /// When it was downloaded (RFC 3339, UTC).
    pub downloaded_at: String,
    /// Every layer it needs is still in the store (`--apply` can stage it offline).
    pub complete: bool,
}

/// A signer that verified a slot's image.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SignerStatus {
    /// Its name in the policy, else its key file or identity.
    pub name: String,
    /// `key` or `keyless`.
    pub kind: String,
    /// `bundle` (cosign v3 referrer) or `sig` (legacy `.sig` tag).
    pub format: String,
    /// The certificate's identity (keyless).
    pub identity: Option<String>,
    /// The certificate's OIDC issuer (keyless).
    pub issuer: Option<String>,
    /// sha256 of the key's SubjectPublicKeyInfo DER (key).
    pub key_fingerprint: Option<String>,
    /// A transparency log entry was verified.
    pub logged: bool,
}

impl SlotStatus {
    /// `release, qa (policy registry.example.com/os)`, or why it was not verified.
    fn verified_text(&self) -> String {
        let Some(first) = &self.verified_with else {
            return "no (--no-verify or an insecure-accept-anything policy)".to_string();
        };
        let names = if self.signers.is_empty() {
            first.clone()
        } else {
            let names: Vec<&str> = self.signers.iter().map(|s| s.name.as_str()).collect();
            names.join(", ")
        };
        match &self.policy_scope {
            Some(scope) => format!("{names} (policy {scope})"),
            None => names,
        }
    }
}

impl From<clb_ondisk::VerifiedSigner> for SignerStatus {
    fn from(s: clb_ondisk::VerifiedSigner) -> Self {
        Self {
            name: s.name,
            kind: s.kind,
            format: s.format,
            identity: s.identity,
            issuer: s.issuer,
            key_fingerprint: s.key_fingerprint,
            logged: s.logged,
        }
    }
}

/// One installed slot.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SlotStatus {
    /// The image reference it was staged from, as given.
    pub image: String,
    /// The manifest digest that was verified and staged.
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: String,
    /// Layer digests, bottom first.
    pub layers: Vec<String>,
    /// A signature was verified before staging.
    pub verified: bool,
    /// Which key verified it (`null` with `--no-verify`).
    pub verified_with: Option<String>,
    /// The trust policy entry that applied: `default` or a scope (`null`: not verified, or
    /// staged before trust policies).
    pub policy_scope: Option<String>,
    /// Every signer of that entry that verified it.
    pub signers: Vec<SignerStatus>,
    /// When it was staged (RFC 3339, UTC).
    pub staged_at: String,
    /// Every layer it needs is in the store.
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
                verified_with: m.verified.as_ref().map(|v| v.key.clone()),
                policy_scope: m.verified.as_ref().and_then(|v| v.policy_scope.clone()),
                signers: m
                    .verified
                    .map(|v| v.signers.into_iter().map(SignerStatus::from).collect())
                    .unwrap_or_default(),
                image: m.image,
                digest: m.digest,
                staged_at: m.staged_at,
                kernel_version: m.boot.and_then(|b| b.kernel_version),
            },
        );
    }
    Ok(Status {
        api_version: API_VERSION,
        kind: KIND,
        state_dir: store.root().display().to_string(),
        active: state.as_ref().map(|s| s.active),
        booted,
        fallback: state.as_ref().and_then(|s| s.fallback),
        tries_left: state.as_ref().map(|s| s.tries_left),
        max_tries: state.as_ref().map(|s| s.max_tries),
        good: state.as_ref().is_some_and(|s| s.good),
        rolled_back: state.as_ref().is_some_and(|s| s.rolled_back),
        failed_slot: state.as_ref().and_then(|s| s.failed),
        slots,
        download: store.read_download()?.map(|d| DownloadStatus {
            complete: d.layers.iter().all(|l| store.has_layer(&l.digest)),
            image: d.image,
            digest: d.digest,
            downloaded_at: d.downloaded_at,
        }),
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
                (true, Some(t)) => format!(" (good, {t} boots left unless marked good again)"),
                (true, None) => " (good)".to_string(),
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
                s.verified_text(),
                s.staged_at
            ));
        }
        if let Some(d) = &self.download {
            out.push_str(&format!(
                "\ndownloaded: {}\n  digest:  {}\n  at:      {}{}\n",
                d.image,
                d.digest,
                d.downloaded_at,
                if d.complete {
                    " (`clb upgrade --apply` stages it)"
                } else {
                    " (INCOMPLETE: download it again)"
                }
            ));
        }
        out
    }
}

/// `a`, `b`, `recovery` or `null`.
fn optional_slot_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["string", "null"],
        "enum": ["a", "b", "recovery", null]
    })
}

/// The JSON Schema of `clb status --json` (committed as `docs/status.schema.json`).
pub fn schema() -> schemars::Schema {
    schemars::schema_for!(Status)
}

//! Slot manifests: what a slot boots, bottom layer first, and where it came from.

use serde::{Deserialize, Serialize};

/// The slots clb manages. `a` and `b` alternate; `recovery` lives on `COS_RECOVERY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum SlotName {
    A,
    B,
    Recovery,
}

impl SlotName {
    pub const ALL: [SlotName; 3] = [SlotName::A, SlotName::B, SlotName::Recovery];

    pub fn as_str(self) -> &'static str {
        match self {
            SlotName::A => "a",
            SlotName::B => "b",
            SlotName::Recovery => "recovery",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "a" => Some(SlotName::A),
            "b" => Some(SlotName::B),
            "recovery" => Some(SlotName::Recovery),
            _ => None,
        }
    }
    /// The A/B partner of a slot (recovery has none).
    pub fn other(self) -> Option<Self> {
        match self {
            SlotName::A => Some(SlotName::B),
            SlotName::B => Some(SlotName::A),
            SlotName::Recovery => None,
        }
    }
}

impl std::fmt::Display for SlotName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Current schema version of [`SlotManifest`].
pub const SLOT_SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotManifest {
    pub schema: u32,
    pub slot: SlotName,
    /// Image reference as the user gave it (`registry/repo:tag`).
    pub image: String,
    /// Digest of the image manifest that was verified and staged.
    pub digest: String,
    /// Layers bottom to top.
    pub layers: Vec<LayerRecord>,
    /// Present when a cosign signature was verified before staging.
    pub verified: Option<Verification>,
    /// RFC 3339 UTC time the slot was staged.
    pub staged_at: String,
    /// The kernel and initrd this slot boots, copied to `boot/<slot>/` on the state
    /// partition (absent when the image carries no `/boot/vmlinuz*`).
    #[serde(default)]
    pub boot: Option<BootFiles>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootFiles {
    /// Kernel version from the file name (`vmlinuz-<version>`), when it has one.
    pub kernel_version: Option<String>,
    /// sha256 of `boot/<slot>/vmlinuz`.
    pub kernel: String,
    /// sha256 of `boot/<slot>/initrd`, when the image has one.
    pub initrd: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// sha256 of the SquashFS file in the store (`layers/sha256-<hex>.squashfs`).
    pub digest: String,
    /// Digest of the registry blob it came from (equal to `digest` for native layers).
    pub source_digest: String,
    /// Media type of the registry blob.
    pub media_type: String,
    /// Size of the SquashFS file in bytes.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// The first signer that verified it: a key file (or label), or a keyless identity.
    pub key: String,
    /// sha256 of that key's SubjectPublicKeyInfo DER ("" for a keyless signer).
    pub key_fingerprint: String,
    /// The trust policy entry that applied (`default` or a scope); absent in slots staged
    /// before policies existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_scope: Option<String>,
    /// Every signer that verified it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signers: Vec<VerifiedSigner>,
}

/// One signer of the policy entry that verified the image, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedSigner {
    /// The signer's name in the policy (else its key path or identity).
    pub name: String,
    /// `key` or `keyless`.
    pub kind: String,
    /// `bundle` (cosign v3, found as a referrer) or `sig` (the legacy `.sig` tag).
    pub format: String,
    /// The certificate's identity and issuer (keyless).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// sha256 of the key's SPKI DER (key signers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// A transparency log entry was verified with it.
    pub logged: bool,
}

impl SlotManifest {
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain owned strings and numbers cannot fail.
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
    pub fn layer_digests(&self) -> impl Iterator<Item = &str> {
        self.layers.iter().map(|l| l.digest.as_str())
    }
}

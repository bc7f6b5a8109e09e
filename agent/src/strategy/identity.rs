//! The default FleetLock client id: an application-specific id derived from
//! `/etc/machine-id`, the way systemd's `sd_id128_get_machine_app_specific()` does it (and
//! Zincati, with its own application id). machine-id(5) asks that the raw id not leave the
//! host; the derived one is stable per host, unique to clb, and can be recomputed with
//! `systemd-id128 machine-id --app-specific=7b91c3205ea34d7cb8fe0dccce5dc3e2`.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::StrategyError;

/// clb's application id (a random v4 id, fixed forever: changing it changes every host's
/// client id and strands the slots they hold).
pub const APP_ID: [u8; 16] = [
    0x7b, 0x91, 0xc3, 0x20, 0x5e, 0xa3, 0x4d, 0x7c, 0xb8, 0xfe, 0x0d, 0xcc, 0xce, 0x5d, 0xc3, 0xe2,
];

/// Reads a machine id file and derives the client id from it.
pub fn client_id_from_file(path: &Path) -> Result<String, StrategyError> {
    let err = |reason: String| StrategyError::MachineId {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    client_id_from_machine_id(&text).map_err(err)
}

/// `machine_id`: 32 hex digits (a trailing newline is fine). Returns 32 lowercase hex digits.
pub fn client_id_from_machine_id(machine_id: &str) -> Result<String, String> {
    let text = machine_id.trim();
    let bytes = hex::decode(text).map_err(|_| format!("{text:?} is not 32 hex digits"))?;
    let key: [u8; 16] = bytes
        .try_into()
        .map_err(|_| format!("{text:?} is not 32 hex digits"))?;
    if key == [0; 16] {
        return Err("the machine id is all zeros (not initialized)".to_owned());
    }
    let mac = hmac_sha256(&key, &APP_ID);
    let mut id = [0u8; 16];
    id.copy_from_slice(&mac[..16]);
    // Marked as a random (v4) UUID, as systemd does.
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    Ok(hex::encode(id))
}

/// HMAC-SHA256 (RFC 2104) for a key no longer than the 64-byte block.
fn hmac_sha256(key: &[u8; 16], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

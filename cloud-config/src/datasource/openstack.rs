//! OpenStack's `meta_data.json`, which the metadata service and the config drive share.

use super::Found;

/// The hostname and keys of an OpenStack `meta_data.json` (service and config drive alike).
pub(crate) fn meta(meta: &serde_json::Value) -> Result<Found, String> {
    let object = meta
        .as_object()
        .ok_or_else(|| "meta_data.json is not a JSON object".to_string())?;
    let hostname = object
        .get("hostname")
        .or_else(|| object.get("name"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let ssh_keys = match object.get("public_keys") {
        None => Vec::new(),
        Some(serde_json::Value::Object(keys)) => keys
            .values()
            .filter_map(|k| k.as_str())
            .map(|k| k.trim().to_string())
            .collect(),
        Some(_) => return Err("meta_data.json public_keys is not an object".to_string()),
    };
    Ok(Found {
        hostname,
        ssh_keys,
        ..Found::default()
    })
}

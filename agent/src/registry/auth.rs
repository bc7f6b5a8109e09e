//! Registry credentials: `--creds`, then `REGISTRY_AUTH_FILE` (containers-auth.json), then
//! `~/.docker/config.json`. Credentials are never logged: only where they came from.

use std::path::{Path, PathBuf};

use base64::Engine;
use oci_client::secrets::RegistryAuth;

use crate::error::{ClbError, Result};

/// Where credentials come from, as chosen on the command line.
#[derive(Debug, Clone, Default)]
pub struct CredentialSource {
    /// `user:password` from `--creds`.
    pub creds: Option<String>,
    /// Explicit auth file; otherwise `REGISTRY_AUTH_FILE` and `~/.docker/config.json`.
    pub auth_file: Option<PathBuf>,
}

impl CredentialSource {
    /// The credentials for `registry` (`host[:port]`), anonymous when none are configured.
    pub fn for_registry(&self, registry: &str) -> Result<RegistryAuth> {
        if let Some(creds) = &self.creds {
            let (user, pass) = creds
                .split_once(':')
                .ok_or_else(|| ClbError::Invalid("--creds must be USER:PASSWORD".to_string()))?;
            tracing::debug!(registry, "using credentials from --creds");
            return Ok(RegistryAuth::Basic(user.to_string(), pass.to_string()));
        }
        for file in self.candidate_files() {
            if let Some(auth) = lookup_auth_file(&file, registry)? {
                tracing::debug!(registry, file = %file.display(), "using credentials from auth file");
                return Ok(auth);
            }
        }
        Ok(RegistryAuth::Anonymous)
    }

    fn candidate_files(&self) -> Vec<PathBuf> {
        if let Some(f) = &self.auth_file {
            return vec![f.clone()];
        }
        let mut files = Vec::new();
        if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
            files.push(PathBuf::from(f));
        }
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
            files.push(PathBuf::from(dir).join("config.json"));
        } else if let Some(home) = std::env::var_os("HOME") {
            files.push(PathBuf::from(home).join(".docker/config.json"));
        }
        files
    }
}

/// Reads `{"auths": {"<registry>": {"auth": base64("user:pass")}}}` (docker and containers
/// share this shape). A missing file is not an error; a malformed one is.
fn lookup_auth_file(path: &Path, registry: &str) -> Result<Option<RegistryAuth>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ClbError::io(format!("reading {}", path.display()))(e)),
    };
    let doc: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ClbError::Invalid(format!("auth file {} is not JSON: {e}", path.display())))?;
    let Some(auths) = doc.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let entry = auths
        .iter()
        .find(|(key, _)| registry_matches(key, registry));
    let Some((_, entry)) = entry else {
        return Ok(None);
    };
    if let Some(token) = entry.get("identitytoken").and_then(|t| t.as_str()) {
        return Ok(Some(RegistryAuth::Bearer(token.to_string())));
    }
    let Some(encoded) = entry.get("auth").and_then(|a| a.as_str()) else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or_else(|| {
            ClbError::Invalid(format!(
                "auth file {}: entry for {registry} is not base64 user:password",
                path.display()
            ))
        })?;
    let (user, pass) = decoded.split_once(':').ok_or_else(|| {
        ClbError::Invalid(format!(
            "auth file {}: entry for {registry} is not user:password",
            path.display()
        ))
    })?;
    Ok(Some(RegistryAuth::Basic(
        user.to_string(),
        pass.to_string(),
    )))
}

/// Docker writes keys as `host`, `https://host` or `https://host/v1/`.
fn registry_matches(key: &str, registry: &str) -> bool {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let key = key.split('/').next().unwrap_or(key);
    key == registry
        || (registry == "docker.io" && (key == "index.docker.io" || key == "registry-1.docker.io"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("u:p:w");
        std::fs::write(
            &f,
            format!(r#"{{"auths":{{"https://127.0.0.1:5000/v1/":{{"auth":"{auth}"}}}}}}"#),
        )
        .unwrap();
        let src = CredentialSource {
            creds: None,
            auth_file: Some(f.clone()),
        };
        match src.for_registry("127.0.0.1:5000").unwrap() {
            RegistryAuth::Basic(u, p) => assert_eq!((u.as_str(), p.as_str()), ("u", "p:w")),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            src.for_registry("other:1").unwrap(),
            RegistryAuth::Anonymous
        ));
        std::fs::write(&f, "{").unwrap();
        assert!(matches!(src.for_registry("x"), Err(ClbError::Invalid(_))));
    }
}

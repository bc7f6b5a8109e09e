//! Choosing an image from a multi-arch index.

use std::fmt;

use crate::error::{ClbError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on, in OCI's names.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Self {
            os: "linux".to_string(),
            architecture: architecture.to_string(),
            variant: None,
        }
    }

    /// `os/arch[/variant]`, as docker and skopeo spell it.
    pub fn parse(text: &str) -> Result<Self> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(ClbError::Invalid(format!(
                "platform {text:?}: expected OS/ARCH[/VARIANT]"
            ))),
        }
    }

    /// The digest of the index entry for this platform. A variant, when asked for, must
    /// match; when not asked for, the first entry of the right OS and architecture wins.
    pub fn pick(&self, index: &serde_json::Value) -> Option<String> {
        let entries = index.get("manifests")?.as_array()?;
        entries.iter().find_map(|entry| {
            let p = entry.get("platform")?;
            let field = |k: &str| p.get(k).and_then(|v| v.as_str());
            let matches = field("os") == Some(self.os.as_str())
                && field("architecture") == Some(self.architecture.as_str())
                && self
                    .variant
                    .as_deref()
                    .is_none_or(|v| field("variant") == Some(v));
            if matches {
                entry.get("digest")?.as_str().map(str::to_string)
            } else {
                None
            }
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn picks_platform_from_index() {
        let index = serde_json::json!({"manifests": [
            {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}}
        ]});
        assert_eq!(
            Platform::parse("linux/amd64")
                .unwrap()
                .pick(&index)
                .unwrap(),
            "sha256:amd"
        );
        assert_eq!(
            Platform::parse("linux/arm64/v8")
                .unwrap()
                .pick(&index)
                .unwrap(),
            "sha256:arm"
        );
        assert!(
            Platform::parse("linux/arm64/v7")
                .unwrap()
                .pick(&index)
                .is_none()
        );
        assert!(Platform::parse("linux").is_err());
    }
}

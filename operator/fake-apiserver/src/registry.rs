//! The resources the server knows: built in, given by the test, or served by a
//! CustomResourceDefinition created through the API.

use serde_json::Value;

/// A resource the server knows: how its URLs, `kind` and scope look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    /// The plural used in URLs (`nodes`, `nodeupdates`).
    pub resource: String,
    pub kind: String,
    pub namespaced: bool,
    /// Whether `/status` is a separate subresource: then writes to the main resource keep the
    /// stored status and writes to `/status` keep everything else.
    pub status_subresource: bool,
    /// Served by a CustomResourceDefinition: then, as on a real server, strategic merge
    /// patches are refused (415), since custom resources carry no patch strategies.
    pub custom: bool,
}

impl ResourceInfo {
    pub fn new(group: &str, version: &str, resource: &str, kind: &str, namespaced: bool) -> Self {
        ResourceInfo {
            group: group.into(),
            version: version.into(),
            resource: resource.into(),
            kind: kind.into(),
            namespaced,
            status_subresource: true,
            custom: false,
        }
    }

    /// A custom resource (status subresource on, as the clb.dev CRDs have it).
    pub fn custom(
        group: &str,
        version: &str,
        resource: &str,
        kind: &str,
        namespaced: bool,
    ) -> Self {
        ResourceInfo {
            custom: true,
            ..Self::new(group, version, resource, kind, namespaced)
        }
    }

    fn without_status(mut self) -> Self {
        self.status_subresource = false;
        self
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `nodeupdates.clb.dev`, as the real server names a resource in its messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

/// The resources every test gets: the ones the operator and the bridge touch.
pub fn builtin_resources() -> Vec<ResourceInfo> {
    vec![
        ResourceInfo::new("", "v1", "namespaces", "Namespace", false),
        ResourceInfo::new("", "v1", "nodes", "Node", false),
        ResourceInfo::new("", "v1", "pods", "Pod", true),
        ResourceInfo::new("", "v1", "events", "Event", true).without_status(),
        ResourceInfo::new("", "v1", "configmaps", "ConfigMap", true).without_status(),
        ResourceInfo::new("events.k8s.io", "v1", "events", "Event", true).without_status(),
        ResourceInfo::new("coordination.k8s.io", "v1", "leases", "Lease", true).without_status(),
        ResourceInfo::new(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
        ),
        ResourceInfo::new("apps", "v1", "daemonsets", "DaemonSet", true),
        ResourceInfo::new(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
        ),
        ResourceInfo::custom("clb.dev", "v1alpha1", "rollouts", "Rollout", false),
        ResourceInfo::custom("clb.dev", "v1alpha1", "nodeupdates", "NodeUpdate", false),
    ]
}

/// The resources a CustomResourceDefinition serves (each served version), so a CRD created
/// through the API becomes usable, as it does on a real server once it is Established.
pub fn crd_resources(crd: &Value) -> Vec<ResourceInfo> {
    let spec = crd.get("spec");
    let s = |p: &str| {
        spec.and_then(|s| s.pointer(p))
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let (group, plural, kind) = (s("/group"), s("/names/plural"), s("/names/kind"));
    let namespaced = s("/scope") != "Cluster";
    spec.and_then(|s| s.get("versions"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(true))
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .map(|version| {
            let mut info = ResourceInfo::custom(group, version, plural, kind, namespaced);
            info.status_subresource = spec
                .and_then(|s| s.get("versions"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|v| v.get("name").and_then(Value::as_str) == Some(version))
                .is_some_and(|v| v.pointer("/subresources/status").is_some());
            info
        })
        .collect()
}

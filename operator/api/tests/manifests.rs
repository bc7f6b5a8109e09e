//! The deployment manifests in `packaging/kubernetes/`, checked offline (no API server, no
//! kubeconform here) as `kubectl apply -f packaging/kubernetes/` would meet them:
//!
//! - the directory holds only YAML object lists, applied in an order that works (namespace,
//!   then CRDs, then each ServiceAccount before the workload that uses it);
//! - every document is a known built-in kind and reads into its k8s-openapi type without
//!   losing anything (serialized back it is the same JSON), so a misspelt or misplaced field
//!   fails; its meaning does not depend on YAML 1.1 versus 1.2 (kubectl reads YAML 1.1);
//! - RBAC is least privilege, as data: the exact permissions of each role (a new permission
//!   needs a change here), no wildcard, every role bound to the service account that uses it;
//! - the operator's Deployment and the node bridge's DaemonSet are what the two programs
//!   expect (replicas, arguments, downward API, the D-Bus socket, tolerations) and hardened;
//! - the ValidatingAdmissionPolicy that keeps each bridge to its own node's NodeUpdate: its
//!   CEL expressions evaluated with the `cel` interpreter that kube's `cel` feature brings
//!   (kube-cel's Kubernetes functions registered), against hand-made admission requests. What
//!   this cannot show is the API server's own type check and cost estimate of the policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use clb_operator_api::{
    GROUP, NodeUpdate, QUARANTINED_TAINT_EFFECT, QUARANTINED_TAINT_KEY, VERSION, crds, crds_path,
};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    Container, Namespace, PodSpec, PodTemplateSpec, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::core::cel::cel::{Context, Program, Value as CelValue};
use kube::core::cel::{KubeCelExt, Validator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const NAMESPACE: &str = "clb-system";
const OPERATOR: &str = "clb-operator";
const BRIDGE: &str = "clb-node-bridge";
const BUS_SOCKET: &str = "/run/dbus/system_bus_socket";
const HOST_LABEL: (&str, &str) = ("clb.dev/host", "true");

/// One document of one manifest file.
struct Manifest {
    file: String,
    doc: Value,
}

impl Manifest {
    fn api_version(&self) -> &str {
        self.doc["apiVersion"].as_str().unwrap_or("")
    }
    fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or("")
    }
    fn name(&self) -> &str {
        self.doc["metadata"]["name"].as_str().unwrap_or("")
    }
    fn namespace(&self) -> Option<&str> {
        self.doc["metadata"]["namespace"].as_str()
    }
    fn what(&self) -> String {
        format!("{}: {} {}", self.file, self.kind(), self.name())
    }
    fn typed<K: DeserializeOwned>(&self) -> K {
        serde_json::from_value(self.doc.clone())
            .unwrap_or_else(|err| panic!("{}: {err}", self.what()))
    }
}

fn directory() -> PathBuf {
    crds_path().parent().unwrap().to_path_buf()
}

/// The file names in `packaging/kubernetes/`, in the order kubectl applies them (it walks the
/// directory in lexical order).
fn file_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// YAML as kubectl reads it: YAML 1.1 (booleans `yes`/`on`/…, octal `0644`), duplicate keys
/// refused. `yaml12`: YAML 1.2 core instead.
fn parse(text: &str, yaml12: bool) -> Vec<Value> {
    let options = serde_saphyr::options! {
        legacy_octal_numbers: !yaml12,
        strict_booleans: yaml12,
    };
    serde_saphyr::from_multiple_with_options(text, options).unwrap()
}

/// Every document of every manifest file, in apply order.
fn manifests() -> Vec<Manifest> {
    let mut all = Vec::new();
    for file in file_names() {
        let text = std::fs::read_to_string(directory().join(&file)).unwrap();
        for doc in parse(&text, false) {
            all.push(Manifest {
                file: file.clone(),
                doc,
            });
        }
    }
    all
}

/// The one document of kind `K` named `name`.
fn find<K: k8s_openapi::Resource + DeserializeOwned>(all: &[Manifest], name: &str) -> K {
    let found: Vec<&Manifest> = all
        .iter()
        .filter(|m| m.api_version() == K::API_VERSION && m.kind() == K::KIND && m.name() == name)
        .collect();
    assert_eq!(found.len(), 1, "expected one {} {name}", K::KIND);
    found[0].typed()
}

/// Every document of kind `K`.
fn all_of<K: k8s_openapi::Resource + DeserializeOwned>(all: &[Manifest]) -> Vec<(String, K)> {
    all.iter()
        .filter(|m| m.api_version() == K::API_VERSION && m.kind() == K::KIND)
        .map(|m| (m.what(), m.typed()))
        .collect()
}

#[test]
fn the_directory_holds_only_object_lists_in_a_working_order() {
    let names = file_names();
    for name in &names {
        let path = directory().join(name);
        assert!(
            path.is_file(),
            "{name}: kubectl -f DIR wants only files here"
        );
        assert!(
            name.ends_with(".yaml"),
            "{name}: only *.yaml files belong in packaging/kubernetes/"
        );
        assert!(
            !name.starts_with("kustomization"),
            "{name}: kubectl apply -f DIR would try to apply it as an object"
        );
    }
    // The namespace first, then the CRDs, then the rest (which may refer to both).
    assert_eq!(names[0], "00-namespace.yaml");
    assert_eq!(names[1], "crds.yaml");

    let all = manifests();
    for (index, manifest) in all.iter().enumerate() {
        assert!(
            manifest.doc.is_object(),
            "{}: document {index} is empty or not an object",
            manifest.file
        );
        let earlier = &all[..index];
        if let Some(namespace) = manifest.namespace() {
            assert!(
                earlier
                    .iter()
                    .any(|m| m.kind() == "Namespace" && m.name() == namespace),
                "{}: namespace {namespace} is not created before it",
                manifest.what()
            );
        }
        let service_account = manifest.doc["spec"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .filter(|_| manifest.kind() == "Deployment" || manifest.kind() == "DaemonSet");
        if let Some(service_account) = service_account {
            assert!(
                earlier.iter().any(|m| m.kind() == "ServiceAccount"
                    && m.name() == service_account
                    && m.namespace() == manifest.namespace()),
                "{}: ServiceAccount {service_account} is not created before it",
                manifest.what()
            );
        }
    }
}

/// Reads `doc` into `K` and writes it back: what the typed struct makes of the document.
fn round_trip<K: DeserializeOwned + Serialize>(doc: &Value) -> Result<Value, String> {
    let typed: K = serde_json::from_value(doc.clone()).map_err(|err| err.to_string())?;
    serde_json::to_value(&typed).map_err(|err| err.to_string())
}

type RoundTrip = fn(&Value) -> Result<Value, String>;

/// A built-in kind the manifests may use: apiVersion, kind, namespaced, its round trip.
struct Kind {
    api_version: &'static str,
    kind: &'static str,
    namespaced: bool,
    round_trip: RoundTrip,
}

trait Scope {
    const NAMESPACED: bool;
}
impl Scope for NamespaceResourceScope {
    const NAMESPACED: bool = true;
}
impl Scope for ClusterResourceScope {
    const NAMESPACED: bool = false;
}

fn kind<K>() -> Kind
where
    K: k8s_openapi::Resource + DeserializeOwned + Serialize,
    K::Scope: Scope,
{
    Kind {
        api_version: K::API_VERSION,
        kind: K::KIND,
        namespaced: K::Scope::NAMESPACED,
        round_trip: round_trip::<K>,
    }
}

/// Every kind the manifests may hold. Custom resources (a Rollout) do not belong in the
/// install manifests; crds.yaml itself is checked by tests/crds.rs as well as here.
fn known_kinds() -> Vec<Kind> {
    vec![
        kind::<Namespace>(),
        kind::<ServiceAccount>(),
        kind::<Service>(),
        kind::<Deployment>(),
        kind::<DaemonSet>(),
        kind::<PodDisruptionBudget>(),
        kind::<ClusterRole>(),
        kind::<ClusterRoleBinding>(),
        kind::<Role>(),
        kind::<RoleBinding>(),
        kind::<ValidatingAdmissionPolicy>(),
        kind::<ValidatingAdmissionPolicyBinding>(),
        kind::<CustomResourceDefinition>(),
    ]
}

/// Where `back` (the document read into its type and written out) differs from `original`.
fn differences(original: &Value, back: &Value, at: &str, found: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(original), Value::Object(back)) => {
            for (key, value) in original {
                let path = format!("{at}.{key}");
                match back.get(key) {
                    Some(read) => differences(value, read, &path, found),
                    None if value.is_null() => found.push(format!("{path}: null (leave it out)")),
                    None => found.push(format!(
                        "{path}: not a field of the type here (misspelt or misplaced?)"
                    )),
                }
            }
            for key in back.keys().filter(|key| !original.contains_key(*key)) {
                found.push(format!("{at}.{key}: added by the type"));
            }
        }
        (Value::Array(original), Value::Array(back)) if original.len() == back.len() => {
            for (index, (value, read)) in original.iter().zip(back).enumerate() {
                differences(value, read, &format!("{at}[{index}]"), found);
            }
        }
        _ if original == back => {}
        _ => found.push(format!("{at}: {original} reads back as {back}")),
    }
}

#[test]
fn every_document_is_a_known_kind_and_reads_back_whole() {
    let kinds = known_kinds();
    let all = manifests();
    assert!(all.len() > 10, "only {} documents", all.len());
    let mut problems = Vec::new();
    for manifest in &all {
        let Some(kind) = kinds
            .iter()
            .find(|k| k.api_version == manifest.api_version() && k.kind == manifest.kind())
        else {
            problems.push(format!(
                "{}: unknown apiVersion/kind {}/{}",
                manifest.what(),
                manifest.api_version(),
                manifest.kind()
            ));
            continue;
        };
        assert!(!manifest.name().is_empty(), "{}: no name", manifest.file);
        assert!(
            is_dns_subdomain(manifest.name()),
            "{}: not a valid object name",
            manifest.what()
        );
        match (kind.namespaced, manifest.namespace()) {
            (true, Some(NAMESPACE)) | (false, None) => {}
            (true, other) => problems.push(format!(
                "{}: namespaced, must be in {NAMESPACE}, is in {other:?}",
                manifest.what()
            )),
            (false, Some(namespace)) => problems.push(format!(
                "{}: cluster-scoped, yet names namespace {namespace}",
                manifest.what()
            )),
        }
        match (kind.round_trip)(&manifest.doc) {
            Err(err) => problems.push(format!("{}: {err}", manifest.what())),
            Ok(back) => {
                let mut found = Vec::new();
                differences(&manifest.doc, &back, "", &mut found);
                problems.extend(found.iter().map(|d| format!("{}: {d}", manifest.what())));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");

    // Whole files too: no `---` between two objects lost, nothing but objects.
    let crd_documents: Vec<&Manifest> = all.iter().filter(|m| m.file == "crds.yaml").collect();
    assert_eq!(crd_documents.len(), crds().len());
    for (manifest, crd) in crd_documents.iter().zip(crds()) {
        assert_eq!(manifest.doc, serde_json::to_value(crd).unwrap());
    }
}

/// A DNS-1123 subdomain, what most object names must be.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[test]
fn the_yaml_means_the_same_in_yaml_1_1_and_1_2() {
    // kubectl reads YAML 1.1, where an unquoted `on`, `yes` or `0644` is not a string.
    for file in file_names() {
        let text = std::fs::read_to_string(directory().join(&file)).unwrap();
        assert_eq!(
            parse(&text, false),
            parse(&text, true),
            "{file}: a value means something else in YAML 1.1 (kubectl) than in YAML 1.2: quote it"
        );
    }
}

// --- RBAC -----------------------------------------------------------------------------------

/// A role's permissions, one `group/resource verb` per entry (`core` for the "" group).
fn permissions(rules: &[PolicyRule], what: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for rule in rules {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "{what}: unexpected resourceNames or nonResourceURLs in {rule:?}"
        );
        let groups = rule.api_groups.clone().unwrap_or_default();
        let resources = rule.resources.clone().unwrap_or_default();
        assert!(
            !groups.is_empty() && !resources.is_empty() && !rule.verbs.is_empty(),
            "{what}: an empty rule {rule:?}"
        );
        for entry in groups.iter().chain(&resources).chain(&rule.verbs) {
            assert!(!entry.contains('*'), "{what}: wildcard in {rule:?}");
        }
        for group in &groups {
            for resource in &resources {
                for verb in &rule.verbs {
                    let group = if group.is_empty() { "core" } else { group };
                    assert!(
                        found.insert(format!("{group}/{resource} {verb}")),
                        "{what}: {group}/{resource} {verb} granted twice"
                    );
                }
            }
        }
    }
    found
}

fn expected(rules: &[(&str, &str, &[&str])]) -> BTreeSet<String> {
    rules
        .iter()
        .flat_map(|(group, resource, verbs)| {
            verbs
                .iter()
                .map(move |verb| format!("{group}/{resource} {verb}"))
        })
        .collect()
}

/// The operator's cluster-wide permissions, exactly.
const OPERATOR_RULES: &[(&str, &str, &[&str])] = &[
    ("clb.dev", "rollouts", &["get", "list", "watch"]),
    ("clb.dev", "rollouts/status", &["get", "patch", "update"]),
    // No create: the controller never creates a NodeUpdate.
    ("clb.dev", "nodeupdates", &["get", "list", "watch", "patch"]),
    ("core", "nodes", &["get", "list", "watch", "patch"]),
    ("core", "pods", &["get", "list", "watch"]),
    ("core", "pods/eviction", &["create"]),
    ("core", "events", &["create", "patch"]),
    ("events.k8s.io", "events", &["create", "patch"]),
];

/// The operator's permissions in its own namespace: its leader-election Lease.
const OPERATOR_NAMESPACED_RULES: &[(&str, &str, &[&str])] = &[(
    "coordination.k8s.io",
    "leases",
    &["get", "list", "watch", "create", "update", "patch"],
)];

/// The bridge's permissions, exactly (narrowed to its own node by the admission policy).
const BRIDGE_RULES: &[(&str, &str, &[&str])] = &[
    (
        "clb.dev",
        "nodeupdates",
        &["get", "list", "watch", "create", "patch"],
    ),
    ("clb.dev", "nodeupdates/status", &["get", "patch"]),
];

#[test]
fn rbac_is_least_privilege() {
    let all = manifests();

    let cluster_roles = all_of::<ClusterRole>(&all);
    let roles = all_of::<Role>(&all);
    let mut found = BTreeMap::new();
    for (what, role) in &cluster_roles {
        assert!(role.aggregation_rule.is_none(), "{what}: aggregation");
        let name = role.metadata.name.clone().unwrap();
        found.insert(
            format!("ClusterRole {name}"),
            permissions(role.rules.as_deref().unwrap_or_default(), what),
        );
    }
    for (what, role) in &roles {
        let name = role.metadata.name.clone().unwrap();
        let namespace = role.metadata.namespace.clone().unwrap();
        found.insert(
            format!("Role {namespace}/{name}"),
            permissions(role.rules.as_deref().unwrap_or_default(), what),
        );
    }
    let want = BTreeMap::from([
        (format!("ClusterRole {OPERATOR}"), expected(OPERATOR_RULES)),
        (
            format!("Role {NAMESPACE}/clb-operator-leader-election"),
            expected(OPERATOR_NAMESPACED_RULES),
        ),
        (format!("ClusterRole {BRIDGE}"), expected(BRIDGE_RULES)),
    ]);
    assert_eq!(
        found, want,
        "the roles differ from the least-privilege list in this test"
    );

    // Said once more in words: the bridge writes nothing but NodeUpdates.
    for permission in &found[&format!("ClusterRole {BRIDGE}")] {
        let (resource, verb) = permission.split_once(' ').unwrap();
        if !["get", "list", "watch"].contains(&verb) {
            assert!(
                resource.starts_with("clb.dev/nodeupdates"),
                "the bridge may {verb} {resource}"
            );
        }
    }
    // The resources named are the CRDs' (with a status subresource for `/status`).
    for crd in crds() {
        let plural = &crd.spec.names.plural;
        assert!(
            found
                .values()
                .flatten()
                .any(|p| p.starts_with(&format!("{GROUP}/{plural} "))),
            "no role mentions {plural}"
        );
    }

    // Every role is bound, once, to the service account that uses it, and every binding to a
    // role and service account these manifests create.
    let service_accounts: BTreeSet<(String, String)> = all_of::<ServiceAccount>(&all)
        .into_iter()
        .map(|(_, sa)| {
            (
                sa.metadata.namespace.unwrap(),
                sa.metadata.name.unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        service_accounts,
        BTreeSet::from([
            (NAMESPACE.to_string(), OPERATOR.to_string()),
            (NAMESPACE.to_string(), BRIDGE.to_string()),
        ])
    );
    let mut bound = BTreeMap::new();
    let mut bind = |what: &str, role: String, subjects: &[k8s_openapi::api::rbac::v1::Subject]| {
        assert_eq!(subjects.len(), 1, "{what}: one subject");
        let subject = &subjects[0];
        assert_eq!(subject.kind, "ServiceAccount", "{what}");
        let account = (
            subject.namespace.clone().expect("subject namespace"),
            subject.name.clone(),
        );
        assert!(
            service_accounts.contains(&account),
            "{what}: binds {account:?}, which these manifests do not create"
        );
        assert!(
            bound.insert(role.clone(), account).is_none(),
            "{role} bound twice"
        );
    };
    for (what, binding) in all_of::<ClusterRoleBinding>(&all) {
        assert_eq!(binding.role_ref.kind, "ClusterRole", "{what}");
        assert_eq!(binding.role_ref.api_group, "rbac.authorization.k8s.io");
        let role = format!("ClusterRole {}", binding.role_ref.name);
        bind(&what, role, binding.subjects.as_deref().unwrap_or_default());
    }
    for (what, binding) in all_of::<RoleBinding>(&all) {
        assert_eq!(
            binding.role_ref.kind, "Role",
            "{what}: a RoleBinding of a ClusterRole"
        );
        assert_eq!(binding.role_ref.api_group, "rbac.authorization.k8s.io");
        let namespace = binding.metadata.namespace.clone().unwrap();
        let role = format!("Role {namespace}/{}", binding.role_ref.name);
        bind(&what, role, binding.subjects.as_deref().unwrap_or_default());
    }
    let operator = (NAMESPACE.to_string(), OPERATOR.to_string());
    let bridge = (NAMESPACE.to_string(), BRIDGE.to_string());
    assert_eq!(
        bound,
        BTreeMap::from([
            (format!("ClusterRole {OPERATOR}"), operator.clone()),
            (
                format!("Role {NAMESPACE}/clb-operator-leader-election"),
                operator
            ),
            (format!("ClusterRole {BRIDGE}"), bridge),
        ])
    );

    // No wildcard anywhere in the manifests (a "*" value grants or matches everything).
    fn wildcards(value: &Value, at: &str, found: &mut Vec<String>) {
        match value {
            Value::String(text) if text == "*" => found.push(at.to_string()),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .for_each(|(i, item)| wildcards(item, &format!("{at}[{i}]"), found)),
            Value::Object(map) => map
                .iter()
                .for_each(|(key, item)| wildcards(item, &format!("{at}.{key}"), found)),
            _ => {}
        }
    }
    let mut stars = Vec::new();
    for manifest in &all {
        wildcards(&manifest.doc, &manifest.what(), &mut stars);
    }
    assert!(stars.is_empty(), "wildcards: {stars:?}");
}

// --- Workloads ------------------------------------------------------------------------------

/// A container's `--flag value` and `--flag=value` arguments.
fn flags(container: &Container) -> BTreeMap<String, String> {
    let args = container.args.clone().unwrap_or_default();
    let mut found = BTreeMap::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        assert!(arg.starts_with("--"), "positional argument {arg}");
        let (flag, value) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), value.to_string()),
            None => {
                let value = args.next().unwrap_or_else(|| panic!("{arg} has no value"));
                (arg, value)
            }
        };
        assert!(found.insert(flag.clone(), value).is_none(), "{flag} twice");
    }
    found
}

/// A container's env variables set from the downward API: name → fieldPath.
fn downward_env(container: &Container) -> BTreeMap<String, String> {
    container
        .env
        .iter()
        .flatten()
        .filter_map(|env| {
            let field = env.value_from.as_ref()?.field_ref.as_ref()?;
            Some((env.name.clone(), field.field_path.clone()))
        })
        .collect()
}

/// Every `$(NAME)` in a container's command and args names one of its env variables (the
/// kubelet leaves an unknown one as it is: the program would get the literal text).
fn assert_references_defined(container: &Container) {
    let defined: BTreeSet<&str> = container
        .env
        .iter()
        .flatten()
        .map(|env| env.name.as_str())
        .collect();
    for arg in container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
    {
        let mut rest = arg.as_str();
        while let Some(start) = rest.find("$(") {
            let end = rest[start..].find(')').expect("unclosed $(") + start;
            let name = &rest[start + 2..end];
            assert!(
                defined.contains(name),
                "{}: $({name}) is no env variable of the container",
                container.name
            );
            rest = &rest[end..];
        }
    }
}

/// The pod's only container.
fn only_container(pod: &PodSpec) -> &Container {
    assert_eq!(pod.containers.len(), 1);
    assert!(pod.init_containers.is_none());
    &pod.containers[0]
}

/// What both workloads share: hardened, resources bounded, an image with a version.
fn assert_hardened(what: &str, template: &PodTemplateSpec, root: bool) {
    let pod = template.spec.as_ref().unwrap();
    let container = only_container(pod);
    assert!(pod.host_network.is_none() && pod.host_pid.is_none() && pod.host_ipc.is_none());
    let pod_security = pod.security_context.clone().unwrap_or_default();
    let security = container.security_context.clone().unwrap_or_default();
    let seccomp = security
        .seccomp_profile
        .or(pod_security.seccomp_profile)
        .unwrap_or_else(|| panic!("{what}: no seccomp profile"));
    assert_eq!(seccomp.type_, "RuntimeDefault", "{what}");
    assert_eq!(security.allow_privilege_escalation, Some(false), "{what}");
    assert_eq!(security.read_only_root_filesystem, Some(true), "{what}");
    assert_ne!(security.privileged, Some(true), "{what}");
    let capabilities = security.capabilities.unwrap_or_default();
    assert_eq!(capabilities.drop, Some(vec!["ALL".to_string()]), "{what}");
    assert!(capabilities.add.is_none(), "{what}: capabilities added");
    let non_root = security.run_as_non_root.or(pod_security.run_as_non_root);
    let user = security.run_as_user.or(pod_security.run_as_user);
    if root {
        assert_eq!(user, Some(0), "{what}: runs as root");
        assert_ne!(non_root, Some(true), "{what}");
    } else {
        assert_eq!(non_root, Some(true), "{what}: runAsNonRoot");
        assert!(user.is_some_and(|uid| uid > 0), "{what}: a non-root uid");
    }

    let resources = container.resources.clone().unwrap_or_default();
    for (which, quantities) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        let quantities = quantities.clone().unwrap_or_default();
        for resource in ["cpu", "memory"] {
            assert!(
                quantities.contains_key(resource),
                "{what}: no {resource} in {which}"
            );
        }
    }

    let image = container.image.clone().unwrap();
    let (_, tag) = image.rsplit_once(':').unwrap();
    assert!(
        tag.chars().next().unwrap().is_ascii_digit(),
        "{what}: {image} is not a versioned image"
    );
    assert_references_defined(container);
}

/// `selector` (matchLabels only) selects pods labelled `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    !selector.is_empty()
        && selector
            .iter()
            .all(|(key, value)| labels.and_then(|labels| labels.get(key)) == Some(value))
}

#[test]
fn the_operator_deployment_runs_as_the_operator_expects() {
    let all = manifests();
    let deployment: Deployment = find(&all, OPERATOR);
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(
        spec.replicas,
        Some(2),
        "two replicas (leader election picks one)"
    );
    let pod_labels = spec.template.metadata.as_ref().unwrap().labels.as_ref();
    let own = spec.selector.match_labels.clone().unwrap_or_default();
    assert!(
        selects(&own, pod_labels),
        "the selector selects the template"
    );
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(OPERATOR));
    assert_hardened("operator", &spec.template, false);

    let container = only_container(pod);
    assert_eq!(
        container.image.as_deref(),
        Some("ghcr.io/clb-project/clb-operator:0.1.0")
    );
    assert_eq!(
        flags(container),
        BTreeMap::from([
            ("--namespace".into(), "$(POD_NAMESPACE)".into()),
            ("--identity".into(), "$(POD_NAME)".into()),
            ("--metrics-address".into(), "0.0.0.0:8080".into()),
        ])
    );
    assert_eq!(
        downward_env(container),
        BTreeMap::from([
            ("POD_NAMESPACE".into(), "metadata.namespace".into()),
            ("POD_NAME".into(), "metadata.name".into()),
        ])
    );

    // /healthz and /metrics on 8080: both probes, and the Service.
    let port_number = |port: &IntOrString| -> i32 {
        match port {
            IntOrString::Int(number) => *number,
            IntOrString::String(name) => {
                container
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name))
                    .unwrap_or_else(|| panic!("no container port named {name}"))
                    .container_port
            }
        }
    };
    for (which, probe) in [
        ("liveness", &container.liveness_probe),
        ("readiness", &container.readiness_probe),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("no {which} probe"));
        assert_eq!(get.path.as_deref(), Some("/healthz"), "{which}");
        assert_eq!(port_number(&get.port), 8080, "{which}");
    }
    let service: Service = find(&all, "clb-operator-metrics");
    let service_spec = service.spec.unwrap();
    assert!(selects(service_spec.selector.as_ref().unwrap(), pod_labels));
    let ports = service_spec.ports.unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, 8080);
    assert_eq!(port_number(ports[0].target_port.as_ref().unwrap()), 8080);

    // Replicas spread over nodes, and a drain leaves one.
    let anti = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .expect("preferred pod anti-affinity");
    assert_eq!(anti.len(), 1);
    let term = &anti[0].pod_affinity_term;
    assert_eq!(term.topology_key, "kubernetes.io/hostname");
    let anti_selector = term.label_selector.as_ref().unwrap();
    assert!(selects(
        anti_selector.match_labels.as_ref().unwrap(),
        pod_labels
    ));
    let budget: PodDisruptionBudget = find(&all, OPERATOR);
    let budget = budget.spec.unwrap();
    assert_eq!(budget.min_available, Some(IntOrString::Int(1)));
    assert!(budget.max_unavailable.is_none());
    assert!(selects(
        budget.selector.unwrap().match_labels.as_ref().unwrap(),
        pod_labels
    ));
}

#[test]
fn the_bridge_daemonset_reaches_the_host_agent() {
    let all = manifests();
    let daemon_set: DaemonSet = find(&all, BRIDGE);
    let spec = daemon_set.spec.as_ref().unwrap();
    let pod_labels = spec.template.metadata.as_ref().unwrap().labels.as_ref();
    assert!(selects(
        spec.selector.match_labels.as_ref().unwrap(),
        pod_labels
    ));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(BRIDGE));
    assert_ne!(pod.automount_service_account_token, Some(false));
    assert_hardened("bridge", &spec.template, true);
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );

    let strategy = spec.update_strategy.as_ref().unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(
        strategy.rolling_update.as_ref().unwrap().max_unavailable,
        Some(IntOrString::String("10%".into()))
    );

    // Only on clb hosts, and on them also when cordoned, quarantined or not ready.
    assert_eq!(
        pod.node_selector,
        Some(BTreeMap::from([(
            HOST_LABEL.0.to_string(),
            HOST_LABEL.1.to_string()
        )]))
    );
    let tolerated: BTreeSet<(String, String)> = pod
        .tolerations
        .iter()
        .flatten()
        .map(|t| {
            assert_eq!(t.operator.as_deref(), Some("Exists"), "{t:?}");
            assert!(t.toleration_seconds.is_none(), "{t:?}: for ever");
            (t.key.clone().unwrap(), t.effect.clone().unwrap())
        })
        .collect();
    let pair = |key: &str, effect: &str| (key.to_string(), effect.to_string());
    assert_eq!(
        tolerated,
        BTreeSet::from([
            pair(QUARANTINED_TAINT_KEY, QUARANTINED_TAINT_EFFECT),
            pair("node.kubernetes.io/unschedulable", "NoSchedule"),
            pair("node.kubernetes.io/not-ready", "NoExecute"),
            pair("node.kubernetes.io/unreachable", "NoExecute"),
        ])
    );

    let container = only_container(pod);
    assert_eq!(
        container.image.as_deref(),
        Some("ghcr.io/clb-project/clb-node-bridge:0.1.0")
    );
    assert_eq!(
        flags(container),
        BTreeMap::from([
            ("--node-name".into(), "$(NODE_NAME)".into()),
            ("--bus-address".into(), format!("unix:path={BUS_SOCKET}")),
        ])
    );
    assert_eq!(
        downward_env(container),
        BTreeMap::from([("NODE_NAME".into(), "spec.nodeName".into())])
    );

    // The host's D-Bus directory (a new socket after a restart of the host's dbus-daemon is
    // seen, which a mount of the socket file would not), read-only, at the same path, so the
    // bus address names the socket inside it; nothing else of the host.
    let bus_dir = std::path::Path::new(BUS_SOCKET)
        .parent()
        .and_then(|p| p.to_str())
        .expect("the socket's directory");
    let volumes = pod.volumes.clone().unwrap_or_default();
    assert_eq!(volumes.len(), 1, "one volume: the bus directory");
    let host_path = volumes[0].host_path.as_ref().expect("a hostPath volume");
    assert_eq!(host_path.path, bus_dir);
    assert_eq!(host_path.type_.as_deref(), Some("Directory"));
    let mounts = container.volume_mounts.clone().unwrap_or_default();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].name, volumes[0].name);
    assert_eq!(mounts[0].mount_path, bus_dir);
    assert_eq!(mounts[0].read_only, Some(true));
    assert!(mounts[0].sub_path.is_none());
}

// --- The admission policy -------------------------------------------------------------------

/// A JSON value as CEL sees it (integers as int, as the API server gives them).
fn cel_value(value: &Value) -> CelValue {
    match value {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(int) => CelValue::Int(int),
            None => CelValue::Float(n.as_f64().unwrap()),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(items) => items.iter().map(cel_value).collect::<Vec<_>>().into(),
        Value::Object(map) => map
            .iter()
            .map(|(key, item)| (key.clone(), cel_value(item)))
            .collect::<HashMap<String, CelValue>>()
            .into(),
    }
}

/// What the policy does with a request.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// The policy does not apply (resource, operation or match condition).
    NotMatched,
    Allowed,
    /// Refused, with the messages of the validations that failed.
    Denied(Vec<String>),
}

/// One admission request, as the API server would put it to the policy.
struct Request<'a> {
    user: &'a str,
    /// `authentication.kubernetes.io/node-name` in the user's extra; None: no extra at all.
    node: Option<&'a str>,
    operation: &'a str,
    sub_resource: &'a str,
    object: Value,
    old_object: Option<Value>,
}

/// Evaluates `policy` (with `failurePolicy`) against `request` as the API server would:
/// match constraints, then match conditions, then every validation.
fn admit(policy: &ValidatingAdmissionPolicy, request: &Request) -> Verdict {
    let spec = policy.spec.as_ref().unwrap();
    let rules = spec
        .match_constraints
        .as_ref()
        .and_then(|m| m.resource_rules.as_ref())
        .unwrap();
    let resource = if request.sub_resource.is_empty() {
        "nodeupdates".to_string()
    } else {
        format!("nodeupdates/{}", request.sub_resource)
    };
    let has = |list: &Option<Vec<String>>, item: &str| {
        list.as_ref()
            .is_some_and(|list| list.iter().any(|x| x == item))
    };
    if !rules.iter().any(|rule| {
        has(&rule.api_groups, GROUP)
            && has(&rule.api_versions, VERSION)
            && has(&rule.operations, request.operation)
            && has(&rule.resources, &resource)
    }) {
        return Verdict::NotMatched;
    }

    let mut user_info = json!({
        "username": request.user,
        "uid": "0b7c1a4e-0000-4000-8000-000000000001",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:clb-system", "system:authenticated"],
    });
    if let Some(node) = request.node {
        user_info["extra"] = json!({
            "authentication.kubernetes.io/credential-id": ["JTI=5f2c7f65-0000-4000-8000-000000000002"],
            "authentication.kubernetes.io/node-name": [node],
            "authentication.kubernetes.io/node-uid": ["7d0d6a1e-0000-4000-8000-000000000003"],
            "authentication.kubernetes.io/pod-name": ["clb-node-bridge-x7k2p"],
            "authentication.kubernetes.io/pod-uid": ["e3a1f0c2-0000-4000-8000-000000000004"],
        });
    }
    let name = request.object["metadata"]["name"].clone();
    let admission_request = json!({
        "uid": "5e3c9a7b-0000-4000-8000-000000000005",
        "kind": {"group": GROUP, "version": VERSION, "kind": "NodeUpdate"},
        "resource": {"group": GROUP, "version": VERSION, "resource": "nodeupdates"},
        "subResource": request.sub_resource,
        "requestKind": {"group": GROUP, "version": VERSION, "kind": "NodeUpdate"},
        "requestResource": {"group": GROUP, "version": VERSION, "resource": "nodeupdates"},
        "requestSubResource": request.sub_resource,
        "name": name,
        "operation": request.operation,
        "userInfo": user_info,
        "dryRun": false,
    });
    let mut context = Context::default();
    context.register_all();
    context.add_variable_from_value("object", cel_value(&request.object));
    context.add_variable_from_value(
        "oldObject",
        cel_value(request.old_object.as_ref().unwrap_or(&Value::Null)),
    );
    context.add_variable_from_value("request", cel_value(&admission_request));
    // Cluster-scoped: no namespace object; the policy has no params.
    context.add_variable_from_value("namespaceObject", CelValue::Null);

    let fail_closed = spec.failure_policy.as_deref() == Some("Fail");
    let evaluate = |expression: &str| -> Result<bool, String> {
        let program = Program::compile(expression).map_err(|err| format!("{err}"))?;
        match program.execute(&context) {
            Ok(CelValue::Bool(value)) => Ok(value),
            Ok(other) => Err(format!("not a bool: {other:?}")),
            Err(err) => Err(format!("{err}")),
        }
    };
    for condition in spec.match_conditions.iter().flatten() {
        match evaluate(&condition.expression) {
            Ok(true) => {}
            Ok(false) => return Verdict::NotMatched,
            Err(err) if fail_closed => {
                return Verdict::Denied(vec![format!("{}: {err}", condition.name)]);
            }
            Err(_) => return Verdict::NotMatched,
        }
    }
    let mut denied = Vec::new();
    for validation in spec.validations.iter().flatten() {
        match evaluate(&validation.expression) {
            Ok(true) => {}
            Ok(false) => denied.push(validation.message.clone().unwrap_or_default()),
            Err(err) if fail_closed => denied.push(format!("error: {err}")),
            Err(_) => {}
        }
    }
    if denied.is_empty() {
        Verdict::Allowed
    } else {
        Verdict::Denied(denied)
    }
}

#[test]
fn the_admission_policy_keeps_each_bridge_to_its_own_node() {
    let all = manifests();
    let policy: ValidatingAdmissionPolicy = find(&all, "clb-node-bridge-own-node");
    let spec = policy.spec.as_ref().unwrap();
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
    assert!(spec.param_kind.is_none(), "no params");
    let binding: ValidatingAdmissionPolicyBinding = find(&all, "clb-node-bridge-own-node");
    let binding = binding.spec.unwrap();
    assert_eq!(
        binding.policy_name.as_deref(),
        policy.metadata.name.as_deref()
    );
    assert_eq!(binding.validation_actions, Some(vec!["Deny".to_string()]));
    assert!(binding.param_ref.is_none() && binding.match_resources.is_none());
    let rules = spec
        .match_constraints
        .as_ref()
        .unwrap()
        .resource_rules
        .clone()
        .unwrap();
    for rule in &rules {
        assert_eq!(rule.scope.as_deref(), Some("Cluster"));
        assert!(rule.resource_names.is_none());
    }
    // Every validation says why.
    for validation in spec.validations.iter().flatten() {
        assert!(validation.message.as_ref().is_some_and(|m| m.len() > 20));
        assert_eq!(validation.reason.as_deref(), Some("Forbidden"));
    }
    // The bridge's user is the service account of the DaemonSet.
    let daemon_set: DaemonSet = find(&all, BRIDGE);
    let account = daemon_set
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .service_account_name;
    let bridge_user = format!("system:serviceaccount:{NAMESPACE}:{}", account.unwrap());
    let operator_user = format!("system:serviceaccount:{NAMESPACE}:{OPERATOR}");

    let digest = format!("sha256:{}", "ab".repeat(32));
    let node_update = |name: &str, spec: Value| {
        json!({
            "apiVersion": "clb.dev/v1alpha1", "kind": "NodeUpdate",
            "metadata": {"name": name, "resourceVersion": "12", "uid": "9a0c0b54-0000-4000-8000-000000000006"},
            "spec": spec,
        })
    };
    let created = |name: &str| node_update(name, json!({"nodeName": name}));
    let claimed = |name: &str| {
        node_update(
            name,
            json!({
                "nodeName": name, "rollout": "os-v2",
                "request": {"id": 3, "action": "Stage", "image": format!("registry.example/os:v2@{digest}"), "digest": digest}
            }),
        )
    };
    let with_status = |mut object: Value, phase: &str| {
        object["status"] = json!({"phase": phase, "markedGood": true, "rolledBack": false,
            "request": {"id": 3, "action": "Stage", "state": "Running", "message": ""}});
        object
    };
    let with_spec = |mut object: Value, path: &str, value: Value| {
        if value.is_null() {
            object["spec"].as_object_mut().unwrap().remove(path);
        } else {
            object["spec"][path] = value;
        }
        object
    };
    let bridge = |node, operation, sub_resource, object, old_object| Request {
        user: &bridge_user,
        node: Some(node),
        operation,
        sub_resource,
        object,
        old_object,
    };

    let allowed = [
        (
            "the bridge creates its node's NodeUpdate (apply of spec.nodeName)",
            bridge("node-1", "CREATE", "", created("node-1"), None),
        ),
        (
            "the bridge re-applies spec.nodeName while a rollout holds the node",
            bridge(
                "node-1",
                "UPDATE",
                "",
                claimed("node-1"),
                Some(claimed("node-1")),
            ),
        ),
        (
            "the bridge reports its node's status",
            bridge(
                "node-1",
                "UPDATE",
                "status",
                with_status(claimed("node-1"), "Busy"),
                Some(with_status(claimed("node-1"), "Staged")),
            ),
        ),
        (
            "the bridge's first status report, before any rollout",
            bridge(
                "node-1",
                "UPDATE",
                "status",
                with_status(created("node-1"), "Idle"),
                Some(created("node-1")),
            ),
        ),
        (
            "the bridge changes a label of its node's NodeUpdate",
            bridge(
                "node-1",
                "UPDATE",
                "",
                {
                    let mut o = claimed("node-1");
                    o["metadata"]["labels"] = json!({"team": "a"});
                    o
                },
                Some(claimed("node-1")),
            ),
        ),
    ];
    // The requests' objects are NodeUpdates the CRD accepts (its types and CEL rules), so each
    // case turns on the policy alone.
    let crd = crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == "NodeUpdate");
    let crd = serde_json::to_value(crd.unwrap()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let assert_valid = |what: &str, request: &Request| {
        for object in std::iter::once(&request.object).chain(&request.old_object) {
            let _: NodeUpdate = serde_json::from_value(object.clone())
                .unwrap_or_else(|err| panic!("{what}: not a NodeUpdate: {err}"));
        }
        if let Err(errors) =
            Validator::new().validate(schema, &request.object, request.old_object.as_ref())
        {
            panic!("{what}: the CRD refuses it: {errors:?}");
        }
    };

    for (what, request) in &allowed {
        assert_valid(what, request);
        assert_eq!(admit(&policy, request), Verdict::Allowed, "{what}");
    }

    let node_denied = "only write the NodeUpdate named after its own node";
    let field_denied = "may not set or change spec.rollout or spec.request";
    let denied = [
        (
            "the bridge creates another node's NodeUpdate",
            bridge("node-1", "CREATE", "", created("node-2"), None),
            node_denied,
        ),
        (
            "the bridge reports another node's status",
            bridge(
                "node-1",
                "UPDATE",
                "status",
                with_status(claimed("node-2"), "Idle"),
                Some(with_status(claimed("node-2"), "Staged")),
            ),
            node_denied,
        ),
        (
            "the bridge re-applies another node's spec.nodeName",
            bridge(
                "node-1",
                "UPDATE",
                "",
                claimed("node-2"),
                Some(claimed("node-2")),
            ),
            node_denied,
        ),
        (
            "a bridge token without a node name (not bound to a pod, or an old API server)",
            Request {
                node: None,
                ..bridge("node-1", "CREATE", "", created("node-1"), None)
            },
            node_denied,
        ),
        (
            "the bridge creates its NodeUpdate with a request in it",
            bridge(
                "node-1",
                "CREATE",
                "",
                with_spec(
                    created("node-1"),
                    "request",
                    claimed("node-1")["spec"]["request"].clone(),
                ),
                None,
            ),
            field_denied,
        ),
        (
            "the bridge creates its NodeUpdate claimed by a rollout",
            bridge(
                "node-1",
                "CREATE",
                "",
                with_spec(created("node-1"), "rollout", json!("os-v2")),
                None,
            ),
            field_denied,
        ),
        (
            "the bridge sets spec.request on its NodeUpdate",
            bridge(
                "node-1",
                "UPDATE",
                "",
                with_spec(
                    created("node-1"),
                    "request",
                    claimed("node-1")["spec"]["request"].clone(),
                ),
                Some(created("node-1")),
            ),
            field_denied,
        ),
        (
            "the bridge releases its node from the rollout",
            bridge(
                "node-1",
                "UPDATE",
                "",
                with_spec(claimed("node-1"), "rollout", Value::Null),
                Some(claimed("node-1")),
            ),
            field_denied,
        ),
        (
            "the bridge changes the requested digest",
            bridge(
                "node-1",
                "UPDATE",
                "",
                {
                    let mut o = claimed("node-1");
                    o["spec"]["request"]["digest"] = json!(format!("sha256:{}", "cd".repeat(32)));
                    o
                },
                Some(claimed("node-1")),
            ),
            field_denied,
        ),
    ];
    for (what, request, reason) in &denied {
        assert_valid(what, request);
        match admit(&policy, request) {
            Verdict::Denied(messages) => assert!(
                messages.iter().any(|m| m.contains(reason)),
                "{what}: denied, but not for {reason:?}: {messages:?}"
            ),
            other => panic!("{what}: expected a denial, got {other:?}"),
        }
    }

    let not_matched = [
        (
            "the operator claims node-2 and sets a request",
            Request {
                user: &operator_user,
                node: Some("node-7"),
                operation: "UPDATE",
                sub_resource: "",
                object: claimed("node-2"),
                old_object: Some(created("node-2")),
            },
        ),
        (
            "a person creates a NodeUpdate",
            Request {
                user: "kubernetes-admin",
                node: None,
                operation: "CREATE",
                sub_resource: "",
                object: claimed("node-3"),
                old_object: None,
            },
        ),
        (
            "a service account of the same name in another namespace (RBAC's business)",
            Request {
                user: "system:serviceaccount:default:clb-node-bridge",
                node: Some("node-1"),
                operation: "CREATE",
                sub_resource: "",
                object: created("node-2"),
                old_object: None,
            },
        ),
        (
            "a delete (the bridge has no RBAC permission for it)",
            bridge("node-1", "DELETE", "", created("node-2"), None),
        ),
    ];
    for (what, request) in &not_matched {
        assert_valid(what, request);
        assert_eq!(admit(&policy, request), Verdict::NotMatched, "{what}");
    }
}

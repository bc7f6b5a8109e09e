//! The Kubernetes API of the clb fleet operator: the custom resources the controller and the
//! node bridge share, and the names both must agree on.
//!
//! - [`Rollout`] (cluster-scoped): a person declares "roll these nodes to this image"; the
//!   controller writes its status (the pinned digest, counts per phase, the current wave,
//!   conditions, and its record of every node it started).
//! - [`NodeUpdate`] (cluster-scoped, one per Node, named after it): the node bridge creates it
//!   and reports the host agent's state in its status; the controller holds the node for one
//!   rollout and asks the bridge to act through its spec.
//!
//! # How the controller asks the bridge to act
//!
//! The controller writes a [`NodeRequest`] into `NodeUpdate.spec.request` (server-side apply,
//! field manager [`OPERATOR_MANAGER`]): an `id` larger than both the last `spec.request.id` and
//! `status.request.id`, an action (`Stage` or `Reboot`) and the pinned image and digest. The
//! bridge watches its own object; when `spec.request.id` is larger than the `status.request.id`
//! it reported last, it first records `status.request` = `{id, action, state: Running}` (field
//! manager [`BRIDGE_MANAGER`]), then calls the host agent over D-Bus (`Stage`: for example
//! `Download` of the pinned reference, so that the boot pointer moves only on `Reboot`;
//! `Reboot`: `Apply` with `reboot`, only when the staged digest is the requested one), and
//! reports the outcome (`Succeeded`, or `Failed` with a message and the agent's `lastError`)
//! under the same `id`.
//!
//! Each `id` is carried out at most once. After a restart of the bridge or a reboot of the
//! node, a request already `Running` is not started again but finished from what the agent
//! reports (the digest staged, or booted), since the state lives in this object and in the
//! agent, not in the bridge. A retry is a new request with a new `id`. The last request stays
//! in the spec after it ended (its outcome is in the status), so ids only ever grow; the API
//! server refuses a smaller one.
//!
//! The controller claims a node for a rollout by setting `spec.rollout` together with the first
//! `Stage` request, with the object's `resourceVersion` as a precondition, so two rollouts can
//! never both claim it. The claim holds while that rollout's record of the node
//! (`Rollout.status.nodes`) is in progress; once the node reached an end there (updated,
//! failed or quarantined), or the rollout is gone, another rollout may claim it. `spec.rollout`
//! is not cleared at the end: that would cost a write per node and say nothing the rollout's
//! record does not (`spec.rollout` thus names the last rollout that claimed the node). The
//! controller never creates a `NodeUpdate`: a node
//! without one runs no bridge and is never started. (Its apply of `spec.rollout` and
//! `spec.request` alone cannot create one by mistake: the schema requires `spec.nodeName`.)
//!
//! The rollout's own record of each node (phase, since when, why it failed, when its drain
//! began: what the planner needs to resume after a restart of the controller) lives in the
//! Rollout's `status.nodes`, so that each rollout keeps its own and the controller writes the
//! records of a whole step at once.
//!
//! # Writers
//!
//! | object | fields | written by | field manager |
//! |---|---|---|---|
//! | `Rollout` | `spec` | a person | (kubectl) |
//! | `Rollout` | `status` | the controller | [`OPERATOR_MANAGER`] |
//! | `NodeUpdate` | `spec.nodeName` (on creation) | the bridge | [`BRIDGE_MANAGER`] |
//! | `NodeUpdate` | `spec.rollout`, `spec.request` | the controller | [`OPERATOR_MANAGER`] |
//! | `NodeUpdate` | `status` | the bridge | [`BRIDGE_MANAGER`] |
//!
//! Every write is a server-side apply of the writer's own fields only, so the two never take
//! a field from each other.
//!
//! The CRDs are generated from these types by the `clb-operator-crds` binary into
//! `packaging/kubernetes/crds.yaml`; the `///` comments on the fields become the descriptions
//! that `kubectl explain` shows.

mod duration;
mod node_update;
mod rollout;

pub use duration::{Duration, ParseDurationError};
pub use node_update::{
    HostPhase, LastError, NodeRequest, NodeUpdate, NodeUpdateSpec, NodeUpdateStatus,
    OperationProgress, RequestAction, RequestState, RequestStatus, SlotInfo, short_digest,
};
pub use rollout::{
    Canary, Drain, FailureReason, HealthCheck, NodeFailure, NodePhase, NodeRecord, PhaseCounts,
    Rollout, RolloutPhase, RolloutSpec, RolloutStatus, Weekday, Window,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of both kinds.
pub const GROUP: &str = "clb.dev";
/// The API version of both kinds.
pub const VERSION: &str = "v1alpha1";

/// The field manager of the controller's server-side applies (Rollout status, NodeUpdate
/// `spec.rollout` and `spec.request`, and the Node labels, taints and annotations below).
pub const OPERATOR_MANAGER: &str = "clb-operator";
/// The field manager of the node bridge's server-side applies (NodeUpdate `spec.nodeName` and
/// status).
pub const BRIDGE_MANAGER: &str = "clb-node-bridge";

/// Label on a Node that the rollout quarantined (value [`QUARANTINED_VALUE`]): it failed after
/// its reboot (it fell back on its own, or did not come back healthy), and no rollout starts it
/// again until a person removes the label (`kubectl label node NAME clb.dev/quarantined-`).
pub const QUARANTINED_LABEL: &str = "clb.dev/quarantined";
/// The value of [`QUARANTINED_LABEL`].
pub const QUARANTINED_VALUE: &str = "true";
/// Taint key put on a quarantined Node with effect [`QUARANTINED_TAINT_EFFECT`] and no value,
/// before it is uncordoned, so no new pod lands on a node whose image misbehaved. The
/// controller removes its taint once a person has removed [`QUARANTINED_LABEL`].
pub const QUARANTINED_TAINT_KEY: &str = "clb.dev/quarantined";
/// The effect of the quarantine taint.
pub const QUARANTINED_TAINT_EFFECT: &str = "NoSchedule";
/// Annotation on a quarantined Node: the rollout that quarantined it and why
/// (`<rollout>: <reason>`), for the person who clears it.
pub const QUARANTINED_BY_ANNOTATION: &str = "clb.dev/quarantined-by";
/// Annotation on a Node the controller cordoned, naming the rollout that did. The controller
/// only ever uncordons a node that carries it (a cordon without it is someone else's and
/// counts as "cordoned for other reasons"), and removes it with the cordon.
pub const CORDONED_BY_ANNOTATION: &str = "clb.dev/cordoned-by";

/// The Lease (in the controller's namespace) whose holder is the one controller replica that
/// acts; the others wait to take it over.
pub const LEADER_LEASE_NAME: &str = "clb-operator-leader";

/// Drops the description of a string enum's schema: the field that uses the enum says what its
/// values mean, and kube's rewriting of an optional enum would otherwise put the enum's
/// description in place of the field's.
pub(crate) fn without_description(schema: &mut schemars::Schema) {
    schema.remove("description");
}

/// Both CustomResourceDefinitions, Rollout first.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Rollout::crd(), NodeUpdate::crd()]
}

/// The command that regenerates `packaging/kubernetes/crds.yaml`.
pub const REGENERATE: &str = "cargo run -p clb-operator-api --bin clb-operator-crds";

/// Where the generated CRDs are committed: `packaging/kubernetes/crds.yaml` in the workspace
/// (found from this crate's directory at build time).
pub fn crds_path() -> std::path::PathBuf {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = crate_dir.ancestors().nth(2).unwrap_or(crate_dir);
    workspace.join("packaging/kubernetes/crds.yaml")
}

/// Both CRDs as one multi-document YAML file (what `packaging/kubernetes/crds.yaml` holds),
/// with a header saying it is generated.
pub fn crds_yaml() -> Result<String, serde_saphyr::ser::Error> {
    let mut out = String::from(
        "# Generated from operator/api/src by `cargo run -p clb-operator-api --bin\n\
         # clb-operator-crds`: do not edit by hand.\n",
    );
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}

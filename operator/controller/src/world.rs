//! What the controller knows of the cluster at the start of a step: its watch caches, with
//! its own latest writes laid over them (a cache may not have seen them yet; acting on the
//! older object would repeat the write, or worse, a request).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use clb_operator_api::{NodeUpdate, Rollout};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Resource;

use crate::observe;

/// A snapshot for one step.
pub struct World {
    /// Oldest first, so that an older rollout claims contested nodes first.
    pub rollouts: Vec<Arc<Rollout>>,
    pub nodes: Vec<Arc<Node>>,
    pub updates: BTreeMap<String, Arc<NodeUpdate>>,
    /// The pods bound to each node, by node name.
    pub pods: HashMap<String, Vec<Arc<Pod>>>,
    /// (rollout, node) for every node a rollout is rolling now: its record of the node, for
    /// the rollout's current image, is in progress.
    in_progress: HashSet<(String, String)>,
}

impl World {
    pub fn build(
        rollouts: Vec<Arc<Rollout>>,
        nodes: Vec<Arc<Node>>,
        updates: Vec<Arc<NodeUpdate>>,
        pods: Vec<Arc<Pod>>,
        overlay: &Overlay,
    ) -> World {
        let mut rollouts: Vec<_> = rollouts
            .into_iter()
            .map(|r| overlay.rollouts.fresher(r))
            .collect();
        rollouts.sort_by(|a, b| {
            let key = |r: &Rollout| {
                (
                    r.metadata.creation_timestamp.clone().map(|t| t.0),
                    r.metadata.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        let nodes = nodes
            .into_iter()
            .map(|n| overlay.nodes.fresher(n))
            .collect();
        let updates = updates
            .into_iter()
            .map(|u| overlay.updates.fresher(u))
            .filter_map(|u| u.metadata.name.clone().map(|name| (name, u)))
            .collect();
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for pod in pods {
            if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                by_node.entry(node).or_default().push(pod);
            }
        }
        let in_progress = rollouts
            .iter()
            .filter_map(|r| Some((r.metadata.name.clone()?, r.status.as_ref()?, r)))
            // Records of an earlier image are void: the rollout starts over.
            .filter(|(_, s, r)| s.image.as_deref() == Some(r.spec.image.as_str()))
            .flat_map(|(name, s, _)| {
                s.nodes
                    .iter()
                    .filter(|record| observe::phase_from_api(record.phase).in_flight())
                    .map(move |record| (name.clone(), record.name.clone()))
            })
            .collect();
        World {
            rollouts,
            nodes,
            updates,
            pods: by_node,
            in_progress,
        }
    }

    /// The rollout `rollout` holds `node`: it exists and is rolling the node now. A claim is
    /// not cleared when the node reaches an end, and a deleted rollout holds nothing.
    pub fn holds(&self, rollout: &str, node: &str) -> bool {
        self.in_progress
            .contains(&(rollout.to_string(), node.to_string()))
    }
}

/// The controller's latest writes, by object name.
#[derive(Default)]
pub struct Overlay {
    pub rollouts: Fresh<Rollout>,
    pub nodes: Fresh<Node>,
    pub updates: Fresh<NodeUpdate>,
}

/// The latest object a write returned, kept until the cache has caught up with it.
pub struct Fresh<K> {
    written: Mutex<HashMap<String, Arc<K>>>,
}

impl<K> Default for Fresh<K> {
    fn default() -> Self {
        Fresh {
            written: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Resource> Fresh<K> {
    pub fn remember(&self, object: K) {
        if let Some(name) = object.meta().name.clone() {
            self.lock().insert(name, Arc::new(object));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<K>>> {
        // Poisoned only if a step panicked mid-insert; the map itself is intact.
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newer of the cached object and our last write of it. `resourceVersion`s are
    /// compared as numbers: Kubernetes calls them opaque, but every API server backed by etcd
    /// (and the tests' fake) hands out increasing integers; a version that is not a number
    /// makes the cache win.
    pub fn fresher(&self, cached: Arc<K>) -> Arc<K> {
        let Some(name) = cached.meta().name.clone() else {
            return cached;
        };
        let mut written = self.lock();
        let Some(ours) = written.get(&name) else {
            return cached;
        };
        let version = |k: &K| {
            k.meta()
                .resource_version
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
        };
        match (version(&cached), version(ours)) {
            (Some(c), Some(o)) if o > c => ours.clone(),
            _ => {
                written.remove(&name);
                cached
            }
        }
    }
}

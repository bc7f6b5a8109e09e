//! The controller process: watch caches, leader election, and the loop that steps every
//! rollout when something changed or a rollout asked to be looked at again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clb_operator_api::{NodeUpdate, Rollout};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::Notify;

use crate::act::Actuator;
use crate::clock::SystemClock;
use crate::metrics::{self, Metrics};
use crate::resolve::Resolver;
use crate::step::{self, Context};
use crate::world::{Overlay, World};

/// How the controller runs (the binary's flags).
#[derive(Debug, Clone)]
pub struct Options {
    /// The namespace of the leader Lease.
    pub namespace: String,
    /// This replica's name in the Lease (the pod name).
    pub identity: String,
    pub lease_name: String,
    /// How long the Lease is valid without a renewal; a new leader takes over after it.
    pub lease_seconds: u64,
    /// Where `/metrics` and `/healthz` are served; `None`: not at all.
    pub metrics_address: Option<SocketAddr>,
    /// Registries (`host:port`) the image tag is resolved from over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Every rollout is stepped at least this often, even when nothing seems to change.
    pub resync: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("metrics address {address}: {source}")]
    Metrics {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Resolve(#[from] crate::resolve::ResolveError),
    #[error("the leader election task ended")]
    LeaseLost,
}

/// The client the controller needs: without kube's retry layer, which would retry a refused
/// eviction (429 while a PodDisruptionBudget allows no disruption) with a growing backoff
/// inside one step, for minutes, holding every rollout and running a drain far past its
/// timeout. The controller retries by stepping again, and spaces refused evictions itself.
pub fn client(mut config: kube::Config) -> Result<Client, kube::Error> {
    config.default_retry = false;
    Client::try_from(config)
}

/// Runs until `shutdown` resolves; then gives up the Lease so another replica takes over at
/// once.
pub async fn run(
    client: Client,
    options: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::default());
    if let Some(address) = options.metrics_address {
        let listener = metrics::bind(address)
            .await
            .map_err(|source| RunError::Metrics { address, source })?;
        tracing::info!(%address, "serving /metrics and /healthz");
        tokio::spawn(metrics::serve(listener, metrics.clone()));
    }
    let changed = Arc::new(Notify::new());
    let rollouts = cache(Api::<Rollout>::all(client.clone()), changed.clone());
    let nodes = cache(Api::<Node>::all(client.clone()), changed.clone());
    let updates = cache(Api::<NodeUpdate>::all(client.clone()), changed.clone());
    let pods = cache(Api::<Pod>::all(client.clone()), changed.clone());

    let lease = LeaseManagerBuilder::new(client.clone(), &options.lease_name)
        .with_namespace(&options.namespace)
        .with_identity(&options.identity)
        .with_duration(options.lease_seconds)
        .with_grace((options.lease_seconds / 3).max(1))
        .build()
        .await?;
    let (mut leader, lease_task) = lease.watch().await;
    let ctx = Context {
        actuator: Actuator::new(client.clone(), &options.identity),
        resolver: Resolver::new(options.insecure_registries.clone())?,
        metrics: metrics.clone(),
        overlay: Overlay::default(),
        clock: Box::new(SystemClock),
    };
    tokio::pin!(shutdown);
    let mut next = options.resync;
    loop {
        let is_leader = *leader.borrow_and_update();
        if is_leader != metrics.is_leader() {
            tracing::info!(identity = %options.identity, leader = is_leader, "leadership changed");
            metrics.set_leader(is_leader);
        }
        tokio::select! {
            () = &mut shutdown => break,
            result = leader.changed() => {
                if result.is_err() {
                    return Err(RunError::LeaseLost);
                }
                continue;
            }
            () = changed.notified() => {
                // Let a burst of watch events settle into one step.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            () = tokio::time::sleep(next) => {}
        }
        if !*leader.borrow() {
            next = options.resync;
            continue;
        }
        let ready = rollouts.wait_until_ready().await.is_ok()
            && nodes.wait_until_ready().await.is_ok()
            && updates.wait_until_ready().await.is_ok()
            && pods.wait_until_ready().await.is_ok();
        if !ready {
            tracing::error!("a watch cache ended");
            next = Duration::from_secs(1);
            continue;
        }
        let world = World::build(
            rollouts.state(),
            nodes.state(),
            updates.state(),
            pods.state(),
            &ctx.overlay,
        );
        next = options.resync;
        step::release_orphaned_cordons(&ctx, &world).await;
        ctx.metrics.keep_only(
            world
                .rollouts
                .iter()
                .filter_map(|r| r.metadata.name.as_deref()),
        );
        for rollout in &world.rollouts {
            if !*leader.borrow() {
                break;
            }
            let name = rollout.metadata.name.clone().unwrap_or_default();
            match step::step(&ctx, &world, rollout).await {
                Ok(requeue) => {
                    ctx.metrics.step_done(true);
                    if let Some(after) = requeue {
                        next = next.min(after);
                    }
                }
                Err(error) => {
                    ctx.metrics.step_done(false);
                    tracing::warn!(rollout = %name, %error, "step failed; retrying");
                    next = next.min(Duration::from_secs(2));
                }
            }
        }
    }
    drop(leader);
    // The task releases the Lease once the channel is closed.
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("released the leader lease"),
        Ok(Ok(Err(error))) => tracing::warn!(%error, "releasing the leader lease"),
        Ok(Err(_)) | Err(_) => tracing::warn!("the leader lease was not released in time"),
    }
    Ok(())
}

/// A watch cache of `api` that pokes `changed` on every change.
fn cache<K>(api: Api<K>, changed: Arc<Notify>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    )
    .applied_objects();
    tokio::spawn(async move {
        futures_util::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(error) = event {
                tracing::warn!(%error, "watch");
            }
            changed.notify_one();
        }
    });
    reader
}

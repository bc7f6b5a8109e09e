//! The daemon's operations, one at a time: whoever asks (a bus caller, the update loop) gets
//! a refusal while another runs, never a queue. Each operation opens the state afresh, calls
//! the library, and ends with the `Completed` signal carrying its exit code and result.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::DaemonOptions;
use crate::config::{AgentConfig, ConfigHolder};
use crate::error::{ClbError, Result, exit};
use crate::progress::{Progress, ProgressObserver};
use crate::pull::PullOptions;
use crate::registry::{CredentialSource, Registry, RegistryOptions};
use crate::stage::UpgradeRequest;
use crate::target::Target;
use crate::{apply, check, download, status, upgrade};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Check,
    Download,
    Upgrade,
    Apply,
    Rollback,
    MarkGood,
    MarkBad,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Check => "check",
            OpKind::Download => "download",
            OpKind::Upgrade => "upgrade",
            OpKind::Apply => "apply",
            OpKind::Rollback => "rollback",
            OpKind::MarkGood => "mark-good",
            OpKind::MarkBad => "mark-bad",
        }
    }
}

/// What a caller may choose per operation; everything else comes from the configuration.
/// Registry credentials are never taken from a caller (they would cross the bus).
#[derive(Debug, Clone, Default)]
pub struct OpRequest {
    pub image: Option<String>,
    /// Reboot into the staged slot at once (after upgrade, apply, rollback).
    pub reboot: bool,
    pub keys: Vec<PathBuf>,
    /// A trust policy file instead of the host's.
    pub policy: Option<PathBuf>,
    pub verify: Option<bool>,
    pub max_tries: Option<u32>,
    pub hooks: Option<bool>,
}

/// How an operation ended: what the `Completed` signal carries.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub kind: OpKind,
    /// The exit code the CLI would have returned (0: success).
    pub code: u8,
    pub message: String,
    /// The operation's report as JSON (`null` on failure).
    pub result: Value,
}

/// The figures the bus properties show.
#[derive(Debug, Clone)]
pub struct Live {
    pub operation: &'static str,
    pub progress: (i32, String, i32),
    /// Exit code, its class name, message; code 0 and empty strings when the last operation
    /// succeeded.
    pub last_error: (i32, String, String),
    pub booted: String,
    pub active: String,
    pub image: String,
    pub downloaded: String,
}

pub struct Runner {
    opts: DaemonOptions,
    config: Mutex<ConfigHolder>,
    live: Mutex<Live>,
    cancel: Mutex<Option<CancellationToken>>,
    /// Wakes whoever publishes the properties (the bus interface's task).
    changed: Arc<Notify>,
    /// Finished operations, in order, for the `Completed` signal.
    finished: mpsc::UnboundedSender<Outcome>,
    events: Mutex<Option<Events>>,
}

/// What the runner tells its publisher: "the figures changed", and each finished operation.
pub struct Events {
    pub changed: Arc<Notify>,
    pub finished: mpsc::UnboundedReceiver<Outcome>,
}

/// A second operation while one runs.
#[derive(Debug, thiserror::Error)]
#[error("busy: the {0} operation is running")]
pub struct Busy(pub &'static str);

impl Runner {
    pub fn new(opts: DaemonOptions, config: ConfigHolder) -> Self {
        let (finished, finished_rx) = mpsc::unbounded_channel();
        let changed = Arc::new(Notify::new());
        Runner {
            opts,
            config: Mutex::new(config),
            live: Mutex::new(Live {
                operation: "idle",
                progress: (0, String::new(), 0),
                last_error: (0, String::new(), String::new()),
                booted: String::new(),
                active: String::new(),
                image: String::new(),
                downloaded: String::new(),
            }),
            cancel: Mutex::new(None),
            changed: changed.clone(),
            finished,
            events: Mutex::new(Some(Events {
                changed,
                finished: finished_rx,
            })),
        }
    }

    /// The change notifications and finished operations; the first caller gets them.
    pub fn take_events(&self) -> Option<Events> {
        self.events.lock().ok().and_then(|mut e| e.take())
    }

    pub fn live(&self) -> Live {
        match self.live.lock() {
            Ok(l) => l.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn update(&self, change: impl FnOnce(&mut Live)) {
        match self.live.lock() {
            Ok(mut l) => change(&mut l),
            Err(p) => change(&mut p.into_inner()),
        }
        self.changed.notify_one();
    }

    pub fn config(&self) -> AgentConfig {
        match self.config.lock() {
            Ok(c) => c.config().clone(),
            Err(p) => p.into_inner().config().clone(),
        }
    }

    pub fn options(&self) -> &DaemonOptions {
        &self.opts
    }

    /// Re-reads the configuration; on error the current one stays.
    pub async fn reload(&self) -> Result<()> {
        let mut holder = match self.config.lock() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let loaded = crate::blocking(move || {
            holder.reload()?;
            Ok(holder)
        })
        .await?;
        for w in &loaded.current().warnings {
            tracing::warn!("{w}");
        }
        tracing::info!(
            files = loaded.current().files.len(),
            "configuration reloaded"
        );
        if let Ok(mut c) = self.config.lock() {
            *c = loaded;
        }
        self.refresh_host_view().await;
        Ok(())
    }

    /// Starts `kind` in the background. The receiver gets the outcome (after `Completed`
    /// was sent); dropping it is fine.
    pub fn start(
        self: &Arc<Self>,
        kind: OpKind,
        req: OpRequest,
    ) -> std::result::Result<oneshot::Receiver<Outcome>, Busy> {
        {
            let mut live = match self.live.lock() {
                Ok(l) => l,
                Err(p) => p.into_inner(),
            };
            if live.operation != "idle" {
                return Err(Busy(live.operation));
            }
            live.operation = kind.name();
            live.progress = (0, format!("{} started", kind.name()), 1);
        }
        self.changed.notify_one();
        let (tx, rx) = oneshot::channel();
        let me = self.clone();
        tokio::spawn(async move {
            let result = me.execute(kind, &req).await;
            let outcome = me.finish(kind, result).await;
            let _ = tx.send(outcome);
        });
        Ok(rx)
    }

    /// Cancels the running operation while it is in a phase that may stop (checking,
    /// resolving, verifying, downloading: every store write there is atomic and partial
    /// downloads resume); `false` when nothing runs or it is staging, which always finishes
    /// so that `Completed` tells the truth about the slots.
    pub fn cancel(&self) -> bool {
        match self.cancel.lock().ok().and_then(|c| c.clone()) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Runs `work` so that [`Runner::cancel`] can stop it.
    async fn cancellable<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        let token = CancellationToken::new();
        if let Ok(mut c) = self.cancel.lock() {
            *c = Some(token.clone());
        }
        let result = tokio::select! {
            r = work => r,
            () = token.cancelled() => Err(ClbError::Cancelled),
        };
        if let Ok(mut c) = self.cancel.lock() {
            *c = None;
        }
        result
    }

    pub async fn shutdown(&self) {
        self.cancel();
    }

    async fn finish(&self, kind: OpKind, result: Result<Value>) -> Outcome {
        let outcome = match result {
            Ok(value) => Outcome {
                kind,
                code: exit::OK,
                message: format!("{} done", kind.name()),
                result: value,
            },
            Err(e) => {
                let message = clb_command::one_line(&e);
                tracing::error!(operation = kind.name(), "{message}");
                Outcome {
                    kind,
                    code: e.exit_code(),
                    message,
                    result: Value::Null,
                }
            }
        };
        self.refresh_host_view().await;
        let class = exit::TABLE
            .iter()
            .find(|i| i.code == outcome.code)
            .map_or("failure", |i| i.name);
        self.update(|l| {
            l.operation = "idle";
            if outcome.code == exit::OK {
                l.progress = (100, outcome.message.clone(), 1);
                l.last_error = (0, String::new(), String::new());
            } else {
                l.last_error = (
                    i32::from(outcome.code),
                    class.to_string(),
                    outcome.message.clone(),
                );
            }
        });
        let _ = self.finished.send(outcome.clone());
        outcome
    }

    async fn execute(self: &Arc<Self>, kind: OpKind, req: &OpRequest) -> Result<Value> {
        let config = self.config();
        let writable = kind != OpKind::Check;
        let opts = self.opts.clone();
        let target = crate::blocking(move || opts.open_target(writable)).await?;
        let target = Arc::new(target);
        let progress = Progress::observed(Arc::new(Observer(self.clone())));
        let (store, booted) = (target.store(), target.booted());
        let value = match kind {
            OpKind::Check => {
                let registry = registry(&config)?;
                let image = req.image.clone().or(config.image.clone());
                let report = self
                    .cancellable(check::check(store, &registry, image.as_deref(), booted))
                    .await?;
                to_json(&report)
            }
            OpKind::Download => {
                let request = self.upgrade_request(&config, req, &target)?;
                let registry = registry(&config)?;
                let report = self
                    .cancellable(download::download(store, &registry, &request, &progress))
                    .await?;
                to_json(&report)
            }
            OpKind::Upgrade => {
                let request = self.upgrade_request(&config, req, &target)?;
                let registry = registry(&config)?;
                // Two steps, so that Cancel stops the download but never a staging.
                let downloaded = self
                    .cancellable(download::download(store, &registry, &request, &progress))
                    .await?;
                let report = if downloaded.up_to_date {
                    downloaded.already_staged(store, false)?
                } else {
                    let opts = apply::ApplyOptions {
                        hooks: request.hooks.clone(),
                        max_tries: request.max_tries,
                        recovery: false,
                        before_hooks: true,
                    };
                    let mut report = apply::apply(store, &opts, booted, &progress).await?;
                    report.stats = downloaded.stats;
                    report
                };
                if req.reboot && !report.up_to_date {
                    self.reboot(target.clone()).await?;
                }
                to_json(&report)
            }
            OpKind::Apply => {
                let hooks = req.hooks.unwrap_or(config.hooks);
                let apply_opts = apply::ApplyOptions {
                    hooks: hooks_for(hooks, target.is_host()),
                    max_tries: req.max_tries.or(config.max_tries),
                    recovery: false,
                    before_hooks: true,
                };
                let report = apply::apply(store, &apply_opts, booted, &progress).await?;
                if req.reboot {
                    self.reboot(target.clone()).await?;
                }
                to_json(&report)
            }
            OpKind::Rollback => {
                let owned = target.clone();
                let (from, to) = crate::blocking(move || upgrade::rollback(owned.store())).await?;
                if req.reboot {
                    self.reboot(target.clone()).await?;
                }
                serde_json::json!({ "from": from, "to": to })
            }
            OpKind::MarkGood | OpKind::MarkBad => {
                let owned = target.clone();
                let good = kind == OpKind::MarkGood;
                let state =
                    crate::blocking(move || upgrade::mark(owned.store(), owned.booted(), good))
                        .await?;
                serde_json::json!({ "active": state.active, "good": state.good })
            }
        };
        Ok(value)
    }

    async fn reboot(&self, target: Arc<Target>) -> Result<()> {
        self.update(|l| l.progress = (100, "rebooting".into(), 1));
        // The state partition is released before the machine goes down.
        drop(target);
        crate::reboot::reboot().await
    }

    fn upgrade_request(
        &self,
        config: &AgentConfig,
        req: &OpRequest,
        target: &Target,
    ) -> Result<UpgradeRequest> {
        let image = match req.image.clone().or(config.image.clone()) {
            Some(i) => i,
            None => followed_image(target)?,
        };
        let hooks = req.hooks.unwrap_or(config.hooks);
        Ok(UpgradeRequest {
            image,
            // The caller's keys, else the caller's policy, else the configured keys.
            keys: if !req.keys.is_empty() || req.policy.is_some() {
                req.keys.clone()
            } else {
                config.keys.clone()
            },
            verify: req.verify.unwrap_or(config.verify),
            policy: req.policy.clone(),
            signature_repository: config.signature_repository.clone(),
            max_tries: req.max_tries.or(config.max_tries),
            pull: PullOptions {
                jobs: crate::pull::DEFAULT_JOBS,
                convert: clb_convert::ConvertOptions::host(),
            },
            hooks: hooks_for(hooks, target.is_host()),
            recovery: false,
        })
    }

    /// Re-reads what the read-only properties show (slots, followed image, download).
    pub async fn refresh_host_view(&self) {
        let opts = self.opts.clone();
        let configured = self.config().image;
        let view = crate::blocking(move || {
            let target = opts.open_target(false)?;
            let s = status::status(target.store(), target.booted())?;
            let downloaded = target
                .store()
                .read_download()?
                .map(|d| d.digest)
                .unwrap_or_default();
            let image = configured
                .or_else(|| followed_image(&target).ok())
                .unwrap_or_default();
            Ok((s, image, downloaded))
        })
        .await;
        match view {
            Ok((s, image, downloaded)) => self.update(|l| {
                l.booted = s.booted.map(|b| b.to_string()).unwrap_or_default();
                l.active = s.active.map(|a| a.to_string()).unwrap_or_default();
                l.image = image;
                l.downloaded = downloaded;
            }),
            Err(e) => tracing::warn!(error = %e, "could not read the state"),
        }
    }
}

/// The image the active slot was staged from: what the agent follows when no image is
/// configured.
fn followed_image(target: &Target) -> Result<String> {
    let store = target.store();
    let active = store
        .read_bootstate()?
        .ok_or_else(|| ClbError::State("nothing installed and no image configured".into()))?
        .active;
    store
        .read_slot(active)?
        .map(|m| m.image)
        .ok_or_else(|| ClbError::State(format!("slot {active} is empty and no image configured")))
}

fn hooks_for(enabled: bool, host: bool) -> crate::hooks::Hooks {
    crate::hooks::Hooks {
        action: "upgrade",
        host: (enabled && host).then(clb_cloud_config::Sources::from_system),
        image: enabled,
    }
}

fn registry(config: &AgentConfig) -> Result<Registry> {
    Registry::new(RegistryOptions {
        credentials: CredentialSource {
            creds: None,
            auth_file: config.auth_file.clone(),
        },
        insecure: config.insecure,
        ca_files: config.ca_files.clone(),
        platform: None,
        attempts: 5,
    })
}

fn to_json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Feeds the library's progress into the `Progress` property.
struct Observer(Arc<Runner>);

impl ProgressObserver for Observer {
    fn update(&self, percent: u8, message: &str, depth: u32) {
        self.0.update(|l| {
            // Never backwards: a late figure from a parallel layer must not lower it.
            let percent = i32::from(percent).max(l.progress.0);
            l.progress = (
                percent,
                message.to_string(),
                i32::try_from(depth).unwrap_or(1),
            );
        });
    }
}

impl Runner {
    /// This boot is settled: the slot running now is the active one and this boot was
    /// committed by `clb mark-good` (clb-mark-good.service after boot-complete.target; with a
    /// state directory: the active slot is good), or nothing is installed yet.
    pub async fn boot_decided(&self) -> bool {
        let opts = self.opts.clone();
        crate::blocking(move || {
            let target = opts.open_target(false)?;
            let state = target.store().read_bootstate()?;
            Ok(state.is_none_or(|s| match target.booted() {
                // A host: this boot must have been committed, not only the slot once.
                // (A simulated boot on a state directory has no boot record: the slot's
                // `good` stands for it.)
                Some(b) => {
                    s.good
                        && b == s.active
                        && (!target.is_host() || crate::target::boot_committed())
                }
                None => s.good,
            }))
        })
        .await
        .unwrap_or(false)
    }
}

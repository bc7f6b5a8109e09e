//! Running a stage: load, order, check conditions, execute, report.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clb_command::one_line;
use serde::Serialize;

use crate::conditions::{self, Facts};
use crate::ctx::Ctx;
use crate::error::{Diagnostic, PartError, StageError, StepError};
use crate::exec;
use crate::order;
use crate::schema::Step;
use crate::sources::{Loaded, Sources};

/// How to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The tree the steps apply to; `/` is the running system (only then are live changes
    /// made: sysctl, modprobe, kernel hostname, `systemctl start`, commands without chroot).
    pub root: PathBuf,
    /// Stop at the first failed step (and refuse to run when a source is malformed).
    pub strict: bool,
    /// Change nothing; record what would be done in each step's `actions`.
    pub dry_run: bool,
    /// The hostname `node:` matches against, instead of the target's.
    pub hostname: Option<String>,
    /// `ip:port` of the cloud metadata service `datasource:` asks, instead of
    /// 169.254.169.254:80 (for tests, and clouds that relay the service).
    pub metadata_endpoint: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            root: PathBuf::from("/"),
            strict: false,
            dry_run: false,
            hostname: None,
            metadata_endpoint: None,
        }
    }
}

/// What happened to one step, for people and JSON. A failure's typed causes are in
/// [`StepOutcome::errors`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    Ran,
    /// Why the step was skipped (the condition that did not hold).
    Skipped(String),
    /// The step's errors rendered on one line, `part: what: cause`, joined by `; `.
    Failed(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Ran => f.write_str("ran"),
            Outcome::Skipped(why) => write!(f, "skipped: {why}"),
            Outcome::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StepOutcome {
    /// The source the step came from.
    pub file: String,
    /// The exact stage it ran in (e.g. `boot.before`).
    pub stage: String,
    /// The step's `name`, or `<stage>[<index in its file>]` when it has none.
    pub name: String,
    pub outcome: Outcome,
    /// Changes made, or in a dry run those that would be made.
    pub actions: Vec<String>,
    /// Remarks that are not changes (a unit not started offline, an `if` not evaluated in a
    /// dry run, a filesystem that could not be grown).
    pub notes: Vec<String>,
    /// Why the step failed, typed: one error per failed part, in the order the parts ran
    /// (`outcome` carries them rendered). Empty unless the step failed.
    #[serde(skip)]
    pub errors: Vec<Arc<PartError>>,
}

/// The result of a run; serializes to JSON for `--output json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The stage asked for (without `.before`/`.after`).
    pub stage: String,
    pub dry_run: bool,
    pub steps: Vec<StepOutcome>,
    /// Unknown keys, `after` names that match no step.
    pub warnings: Vec<Diagnostic>,
    /// Sources that could not be read or parsed (their steps did not run).
    pub errors: Vec<Diagnostic>,
    /// True when `strict` stopped the run early.
    pub aborted: bool,
}

impl Report {
    /// No source error, no failed step, not aborted.
    pub fn success(&self) -> bool {
        self.errors.is_empty()
            && !self.aborted
            && !self
                .steps
                .iter()
                .any(|s| matches!(s.outcome, Outcome::Failed(_)))
    }

    pub fn failed_steps(&self) -> impl Iterator<Item = &StepOutcome> {
        self.steps
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Failed(_)))
    }

    /// Ok when the run succeeded ([`Report::success`]); else the first problem as a typed
    /// error: a broken source, else the first failed part of the first failed step, else the
    /// strict abort. The report holds all of them.
    pub fn check(&self) -> Result<(), StageError> {
        let stage = self.stage.clone();
        if let Some(diagnostic) = self.errors.first() {
            return Err(StageError::Source {
                stage,
                diagnostic: diagnostic.clone(),
            });
        }
        if let Some((step, error)) = self
            .steps
            .iter()
            .find_map(|s| s.errors.first().map(|e| (s, e)))
        {
            return Err(StageError::Step {
                stage,
                step: step.name.clone(),
                file: step.file.clone(),
                error: Arc::clone(error),
            });
        }
        if self.aborted {
            return Err(StageError::Aborted { stage });
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        // Serializing plain strings and enums cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// The stages `run_stage` runs for `stage`: `<stage>.before`, `<stage>`, `<stage>.after`.
pub fn stage_phases(stage: &str) -> [String; 3] {
    [
        format!("{stage}.before"),
        stage.to_string(),
        format!("{stage}.after"),
    ]
}

/// Load `sources` and run `<stage>.before`, `<stage>` and `<stage>.after` against
/// `options.root`. Never panics and never returns early with an error: everything, including
/// unreadable sources, is in the report (see [`Report::success`]).
pub fn run_stage(stage: &str, sources: &Sources, options: &Options) -> Report {
    let loaded = sources.load(&options.root);
    run_loaded(stage, &loaded, options)
}

/// [`run_stage`] on sources already loaded (e.g. to run several stages from one load).
pub fn run_loaded(stage: &str, loaded: &Loaded, options: &Options) -> Report {
    let mut report = Report {
        stage: stage.to_string(),
        dry_run: options.dry_run,
        warnings: loaded.warnings.clone(),
        errors: loaded.errors.clone(),
        ..Report::default()
    };
    for e in &loaded.errors {
        tracing::error!("{e}");
    }
    if options.strict && !report.errors.is_empty() {
        tracing::error!(stage, "strict: not running, a source is broken");
        report.aborted = true;
        return report;
    }
    for phase in stage_phases(stage) {
        run_exact(&phase, loaded, options, &mut report);
        if report.aborted {
            break;
        }
    }
    report
}

/// True when two steps of a file's stage share a name (two unnamed steps count, as in yip).
fn names_repeat(steps: &[Step]) -> bool {
    steps
        .iter()
        .enumerate()
        .any(|(j, s)| steps[j + 1..].iter().any(|t| t.name == s.name))
}

/// The name of step `i` of a file's `steps` in reports (its `name`, `<stage>[<i>]` without
/// one), and as yip names it in its ids: the name, or the index without one; when names
/// repeat within the file's stage, every step's name gets `.<index>`, in both.
fn step_names(steps: &[Step], i: usize, stage: &str, any_repeated: bool) -> (String, String) {
    let name = &steps[i].name;
    let yip = match (any_repeated, name.is_empty()) {
        (true, _) => format!("{name}.{i}"),
        (false, true) => i.to_string(),
        (false, false) => name.clone(),
    };
    let shown = if name.is_empty() {
        format!("{stage}[{i}]")
    } else if any_repeated {
        yip.clone()
    } else {
        name.clone()
    };
    (shown, yip)
}

/// Run exactly one stage name (no `.before`/`.after`), appending to `report`.
pub fn run_exact(stage: &str, loaded: &Loaded, options: &Options, report: &mut Report) {
    // Each step: its file, its name, the step, and yip's id for it (what `after:` may name).
    let mut entries: Vec<(&str, String, &Step)> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for f in &loaded.files {
        let steps = f.config.stages.get(stage).map(Vec::as_slice).unwrap_or(&[]);
        let repeated = names_repeat(steps);
        for (i, step) in steps.iter().enumerate() {
            let (name, yip_name) = step_names(steps, i, stage, repeated);
            // yip names a file by its path on the system it runs on: a source under an
            // offline root is named from that root.
            let in_root = Path::new(&f.source)
                .strip_prefix(&options.root)
                .ok()
                .filter(|_| options.root != Path::new("/"))
                .map(|rel| format!("/{}", rel.display()));
            let root = if !f.config.name.is_empty() {
                f.config.name.clone()
            } else {
                in_root.unwrap_or_else(|| f.source.clone())
            };
            ids.push(format!("{root}.{yip_name}"));
            entries.push((f.source.as_str(), name, step));
        }
    }
    if entries.is_empty() {
        return;
    }
    let names: Vec<String> = entries.iter().map(|(_, n, _)| n.clone()).collect();
    let after: Vec<Vec<String>> = entries
        .iter()
        .map(|(_, _, s)| s.after.iter().map(|a| a.name.clone()).collect())
        .collect();
    let ordered = order::order(&names, &ids, &after);
    for (i, name) in &ordered.unknown {
        report.warnings.push(Diagnostic {
            file: entries[*i].0.to_string(),
            line: 0,
            column: 0,
            message: format!(
                "step {:?} of stage {stage}: after {name:?} matches no step of the stage; ignored",
                entries[*i].1
            ),
        });
    }
    if !ordered.blocked.is_empty() {
        let cycle = Arc::new(PartError {
            part: "after",
            error: StepError::Cycle {
                cycle: ordered.cycle.clone(),
            },
        });
        let msg = one_line(cycle.as_ref());
        tracing::error!(stage, "{msg}");
        for &i in &ordered.blocked {
            report.steps.push(StepOutcome {
                file: entries[i].0.to_string(),
                stage: stage.to_string(),
                name: entries[i].1.clone(),
                outcome: Outcome::Failed(msg.clone()),
                actions: Vec::new(),
                notes: Vec::new(),
                errors: vec![Arc::clone(&cycle)],
            });
        }
        if options.strict {
            report.aborted = true;
            return;
        }
    }
    for i in ordered.order {
        let (file, name, step) = &entries[i];
        let mut ctx = Ctx::new(&options.root, options.dry_run);
        ctx.metadata_endpoint.clone_from(&options.metadata_endpoint);
        let facts = Facts::gather(&options.root, options.hostname.as_deref());
        let errors = match conditions::check(step, &facts, &mut ctx) {
            Ok(Some(reason)) => Err(reason),
            Err(e) => Ok(vec![e]),
            Ok(None) => Ok(exec::run_step(step, &mut ctx)),
        };
        let (outcome, errors): (Outcome, Vec<Arc<PartError>>) = match errors {
            Err(skipped) => (Outcome::Skipped(skipped), Vec::new()),
            Ok(errors) if errors.is_empty() => (Outcome::Ran, Vec::new()),
            Ok(errors) => {
                let rendered: Vec<String> = errors.iter().map(|e| one_line(e)).collect();
                (
                    Outcome::Failed(rendered.join("; ")),
                    errors.into_iter().map(Arc::new).collect(),
                )
            }
        };
        match &outcome {
            Outcome::Ran => {
                tracing::info!(file, stage, step = %name, changes = ctx.actions.len(), "ran")
            }
            Outcome::Skipped(r) => tracing::info!(file, stage, step = %name, "skipped: {r}"),
            Outcome::Failed(e) => tracing::error!(file, stage, step = %name, "failed: {e}"),
        }
        let failed = matches!(outcome, Outcome::Failed(_));
        report.steps.push(StepOutcome {
            file: file.to_string(),
            stage: stage.to_string(),
            name: name.clone(),
            outcome,
            actions: ctx.actions,
            notes: ctx.notes,
            errors,
        });
        if failed && options.strict {
            report.aborted = true;
            return;
        }
    }
}

//! Applying a step to a root directory.
//!
//! Every action compares the wanted state with what is there and changes only the
//! difference, so a second run changes nothing (commands excepted: they are the user's).
//! In dry-run mode the same comparison runs and each change that would be made is recorded
//! instead of made.

mod datasource;
mod db;
mod entities;
mod files;
mod git;
mod kv;
mod packages;
pub(crate) mod render;
mod system;
mod systemctl;
mod users;

use crate::ctx::Ctx;
use crate::error::{PartError, StepError};
use crate::layout::{LayoutOptions, apply_layout};
use crate::schema::{Layout, Step};

/// What a part returns: most stop at their first error, a few (systemctl, sysctl, modules,
/// authorized_keys) go on and return all of theirs.
trait PartResult {
    fn into_errors(self) -> Vec<StepError>;
}

impl PartResult for Result<(), StepError> {
    fn into_errors(self) -> Vec<StepError> {
        self.err().into_iter().collect()
    }
}

impl PartResult for Vec<StepError> {
    fn into_errors(self) -> Vec<StepError> {
        self
    }
}

/// The failed parts of a step, in the order the parts ran.
struct Failed(Vec<PartError>);

impl Failed {
    fn add(&mut self, part: &'static str, result: impl PartResult) {
        self.0.extend(
            result
                .into_errors()
                .into_iter()
                .map(|error| PartError { part, error }),
        );
    }
}

/// Run a step's parts in yip's order; every part runs even when an earlier one failed, and
/// the errors are returned together.
pub(crate) fn run_step(step: &Step, ctx: &mut Ctx) -> Vec<PartError> {
    let mut failed = Failed(Vec::new());
    if !step.dns.is_empty() {
        failed.add("dns", system::dns(ctx, &step.dns));
    }
    for d in &step.downloads {
        failed.add("downloads", files::download(ctx, d));
    }
    if !step.git.is_empty() {
        failed.add("git", git::git(ctx, &step.git));
    }
    for e in &step.ensure_entities {
        let text = render::values(ctx, &e.entity).into_owned();
        failed.add("ensure_entities", entities::ensure(ctx, e, &text));
    }
    for d in &step.directories {
        failed.add("directories", files::directory(ctx, d));
    }
    for f in &step.files {
        failed.add("files", files::file(ctx, f));
    }
    for c in &step.commands {
        let script = render::values(ctx, c).into_owned();
        failed.add("commands", system::command(ctx, &script));
    }
    for e in &step.delete_entities {
        let text = render::values(ctx, &e.entity).into_owned();
        failed.add("delete_entities", entities::delete(ctx, e, &text));
    }
    if !step.hostname.is_empty() {
        failed.add("hostname", system::hostname(ctx, &step.hostname));
    }
    if !step.sysctl.is_empty() {
        failed.add("sysctl", system::sysctl(ctx, &step.sysctl));
    }
    if !step.users.is_empty() {
        failed.add("users", users::users(ctx, &step.users));
    }
    if !step.authorized_keys.is_empty() {
        failed.add(
            "authorized_keys",
            users::authorized_keys(ctx, &step.authorized_keys),
        );
    }
    if !step.modules.is_empty() {
        failed.add("modules", system::modules(ctx, &step.modules));
    }
    if !step.systemctl.is_empty() {
        failed.add("systemctl", systemctl::systemctl(ctx, &step.systemctl));
    }
    if !step.environment.is_empty() {
        let vars: std::collections::BTreeMap<String, String> = step
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), render::values(ctx, v).into_owned()))
            .collect();
        failed.add(
            "environment",
            system::environment(ctx, &vars, &step.environment_file),
        );
    }
    if !step.timesyncd.is_empty() {
        failed.add("timesyncd", system::timesyncd(ctx, &step.timesyncd));
    }
    if !step.systemd_firstboot.is_empty() {
        failed.add(
            "systemd_firstboot",
            system::systemd_firstboot(ctx, &step.systemd_firstboot),
        );
    }
    if !step.datasource.is_empty() {
        failed.add("datasource", datasource::datasource(ctx, &step.datasource));
    }
    if !step.layout.is_empty() {
        failed.add("layout", layout(ctx, &step.layout));
    }
    if !step.packages.is_empty() {
        failed.add("packages", packages::packages(ctx, &step.packages));
    }
    if !step.unpack_images.is_empty() {
        failed.add(
            "unpack_images",
            Err::<(), _>(StepError::Unsupported(
                "unpack_images pulls unverified images onto the root; ship the content in a \
                 signed clb image layer instead",
            )),
        );
    }
    failed.0
}

/// `layout:` through the same function callers use ([`apply_layout`]); its changes and notes
/// go into the step's report.
fn layout(ctx: &mut Ctx, layout: &Layout) -> Result<(), StepError> {
    let outcome = apply_layout(
        layout,
        &LayoutOptions {
            dry_run: ctx.dry_run,
        },
    )?;
    for change in outcome.changes() {
        ctx.act(change);
    }
    ctx.notes.extend(outcome.notes);
    Ok(())
}

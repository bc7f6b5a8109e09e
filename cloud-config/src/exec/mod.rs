//! Applying a step to a root directory.
//!
//! Every action compares the wanted state with what is there and changes only the
//! difference, so a second run changes nothing (commands excepted: they are the user's).
//! In dry-run mode the same comparison runs and each change that would be made is recorded
//! instead of made.

mod files;
mod kv;
mod system;
mod systemctl;
mod users;

use crate::ctx::Ctx;
use crate::schema::Step;

/// Run a step's parts in yip's order; every part runs even when an earlier one failed, and
/// the errors are returned together.
pub(crate) fn run_step(step: &Step, ctx: &mut Ctx) -> Vec<String> {
    let mut errors = Vec::new();
    let mut part = |name: &str, r: Result<(), String>| {
        if let Err(e) = r {
            errors.push(format!("{name}: {e}"));
        }
    };
    if !step.dns.is_empty() {
        part("dns", system::dns(ctx, &step.dns));
    }
    for d in &step.downloads {
        part("downloads", files::download(ctx, d));
    }
    for d in &step.directories {
        part("directories", files::directory(ctx, d));
    }
    for f in &step.files {
        part("files", files::file(ctx, f));
    }
    for c in &step.commands {
        part("commands", system::command(ctx, c));
    }
    if !step.hostname.is_empty() {
        part("hostname", system::hostname(ctx, &step.hostname));
    }
    if !step.sysctl.is_empty() {
        part("sysctl", system::sysctl(ctx, &step.sysctl));
    }
    if !step.users.is_empty() {
        part("users", users::users(ctx, &step.users));
    }
    if !step.authorized_keys.is_empty() {
        part(
            "authorized_keys",
            users::authorized_keys(ctx, &step.authorized_keys),
        );
    }
    if !step.modules.is_empty() {
        part("modules", system::modules(ctx, &step.modules));
    }
    if !step.systemctl.is_empty() {
        part("systemctl", systemctl::systemctl(ctx, &step.systemctl));
    }
    if !step.environment.is_empty() {
        part(
            "environment",
            system::environment(ctx, &step.environment, &step.environment_file),
        );
    }
    if !step.timesyncd.is_empty() {
        part("timesyncd", system::timesyncd(ctx, &step.timesyncd));
    }
    if !step.datasource.is_empty() {
        part("datasource", system::datasource(ctx, &step.datasource));
    }
    if !step.layout.is_empty() {
        part("layout", crate::layout::apply(ctx, &step.layout));
    }
    errors
}

//! clb-cloud-config: a yip-compatible cloud-config stage engine.
//!
//! Reads yip stage files and `#cloud-config` files from the usual directories (and a
//! `clb.setup=`/`cos.setup=` path or URL on the kernel command line), and applies the steps of
//! a stage to a root directory. See `docs/cloud-config.md` for the schema and the differences
//! from yip.
//!
//! ```no_run
//! use clb_cloud_config::{Options, Sources, run_stage};
//! let report = run_stage("boot", &Sources::from_system(), &Options::default());
//! println!("{}", report.to_json());
//! assert!(report.success());
//! ```

mod conditions;
mod ctx;
mod datasource;
mod dotnotation;
mod error;
mod exec;
mod fetch;
mod keys;
mod layout;
mod order;
mod parse;
mod run;
mod schema;
mod sources;
mod target;
pub(crate) mod template;
mod template_data;
pub mod yaml_tree;

pub use datasource::{DatasourceError, PROVIDERS as DATASOURCE_PROVIDERS};
pub use error::{Diagnostic, Error, PartError, Result, StageError, StepError};
pub use fetch::{FetchError, fetch, fetch_bytes};
pub use layout::{
    Expansion, LayoutError, LayoutFailure, LayoutOptions, LayoutOutcome, LayoutPlan, PartAction,
    PlannedPartition, Refusal, apply_layout, plan_layout,
};
pub use parse::{ParsedFile, is_cloud_config, parse_file, parse_str};
pub use run::{
    Options, Outcome, Report, StepOutcome, run_exact, run_loaded, run_stage, stage_phases,
};
pub use schema::{
    After, Config, Datasource, Device, Directory, Dns, Download, Expand, File, Filesystem, IfFiles,
    Layout, Override, Partition, Step, Systemctl, User,
};
pub use sources::{CMDLINE_KEYS, DEFAULT_DIRS, Loaded, Sources, cmdline_setup};
/// The template engine alone (`fuzz/` drives it with arbitrary templates).
pub use template::{TemplateError, render as render_template};

/// Boot stages in boot order; each also runs as `<stage>.before` and `<stage>.after`.
pub const BOOT_STAGES: [&str; 6] = ["rootfs", "initramfs", "fs", "boot", "network", "reconcile"];

/// Action hooks clb runs around its own operations (just stage names to the engine).
pub const ACTION_HOOKS: [&str; 16] = [
    "before-install",
    "after-install-chroot",
    "after-install",
    "post-install",
    "before-upgrade",
    "after-upgrade-chroot",
    "after-upgrade",
    "post-upgrade",
    "before-reset",
    "after-reset-chroot",
    "after-reset",
    "post-reset",
    "before-disk",
    "after-disk-chroot",
    "after-disk",
    "post-disk",
];

/// Parse `path` for `clb cloud-config validate`: Ok(warnings) or the first error.
pub fn validate_file(path: &std::path::Path) -> std::result::Result<Vec<Diagnostic>, Diagnostic> {
    match parse_file(path) {
        Ok(p) => Ok(p.warnings),
        Err(Error::Parse(d)) => Err(d),
        Err(e) => Err(Diagnostic {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message: clb_command::one_line(&e),
        }),
    }
}

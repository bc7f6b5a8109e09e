//! Checks shared by the integration tests.

#![allow(dead_code)]

use clb_cloud_config::Report;

/// No error of `error`'s chain repeats its source's message, so the binary's one-line printer
/// (`clb_command::one_line`) shows each cause once.
pub fn assert_printed_once(error: &dyn std::error::Error) {
    if let Some((message, source)) = clb_command::repeated_source(error) {
        panic!(
            "{message:?} repeats its source {source:?}: {}",
            clb_command::one_line(error)
        );
    }
}

/// [`assert_printed_once`] for every typed cause of a report and for its `check()` error.
pub fn assert_report_printed_once(report: &Report) {
    for step in &report.steps {
        for error in &step.errors {
            assert_printed_once(error.as_ref());
        }
    }
    if let Err(e) = report.check() {
        assert_printed_once(&e);
    }
}

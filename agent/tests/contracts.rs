//! The contracts derived from the code: the committed `docs/cli-reference.md`, the exit-code
//! table in `docs/cli.md`, `docs/status.schema.json` and the D-Bus introspection XML
//! `docs/dbus/dev.clb.Agent1.xml` must be what `clb-gen docs` writes from the clap
//! definitions, `clb::error::exit::TABLE`, the status types and the daemon's interface, and
//! `clb --help` must list that table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use clb::error::exit;

fn workspace() -> PathBuf {
    clb_testsupport::workspace_root()
}

fn gen_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_clb-gen"))
}

#[test]
fn committed_cli_docs_are_what_the_code_generates() {
    let out = gen_cmd()
        .args(["docs", "--check", "--root"])
        .arg(workspace())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the committed contracts are stale:\n{}\nrun `cargo run -p clb --bin clb-gen -- docs` \
         and commit docs/cli-reference.md, docs/cli.md and docs/status.schema.json",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The check is not a rubber stamp: a copy of the docs with one generated file changed by
/// hand fails it and names the file; `docs` without `--check` then repairs the copy.
#[test]
fn a_stale_contract_fails_the_check() {
    // Each edit lands in generated text (in docs/cli.md only the exit table is generated).
    for (stale, from, to) in [
        ("docs/cli-reference.md", "clb", "clx"),
        (
            "docs/cli.md",
            "<!-- generated: exit-codes -->",
            "<!-- generated: exit-codes -->\nedited by hand",
        ),
        ("docs/status.schema.json", "HostStatus", "Host"),
        ("docs/dbus/dev.clb.Agent1.xml", "MarkGood", "MarkFine"),
    ] {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("docs/dbus")).unwrap();
        for f in [
            "docs/cli-reference.md",
            "docs/cli.md",
            "docs/status.schema.json",
            "docs/dbus/dev.clb.Agent1.xml",
        ] {
            std::fs::copy(workspace().join(f), root.path().join(f)).unwrap();
        }
        let path = root.path().join(stale);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from));
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        let check = || {
            gen_cmd()
                .args(["docs", "--check", "--root"])
                .arg(root.path())
                .output()
                .unwrap()
        };
        let out = check();
        assert!(
            !out.status.success(),
            "a hand-edited {stale} passed the check"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains(stale));
        let fix = gen_cmd()
            .args(["docs", "--root"])
            .arg(root.path())
            .output()
            .unwrap();
        assert!(fix.status.success());
        assert!(
            check().status.success(),
            "{stale} not repaired by clb-gen docs"
        );
    }
}

#[test]
fn exit_table_has_each_code_once_in_order() {
    let codes: Vec<u8> = exit::TABLE.iter().map(|c| c.code).collect();
    let expected: Vec<u8> = (0..=exit::ACCESS_DENIED).collect();
    assert_eq!(
        codes, expected,
        "TABLE must list 0..=ACCESS_DENIED in order"
    );
    let mut names: Vec<&str> = exit::TABLE.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), exit::TABLE.len(), "duplicate exit code names");
}

#[test]
fn help_lists_every_exit_code_from_the_table() {
    let out = Command::new(env!("CARGO_BIN_EXE_clb"))
        .arg("--help")
        .env("COLUMNS", "200")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for c in exit::TABLE {
        let line = format!("{:>2}  {}", c.code, c.meaning);
        assert!(
            help.lines().any(|l| l.trim_end().ends_with(&line)),
            "`clb --help` lacks {line:?}:\n{help}"
        );
    }
}

#[test]
fn a_man_page_per_command_and_completions_for_three_shells() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man");
    let comp = dir.path().join("completions");
    assert!(gen_cmd().arg("man").arg(&man).status().unwrap().success());
    assert!(
        gen_cmd()
            .arg("completions")
            .arg(&comp)
            .status()
            .unwrap()
            .success()
    );
    for page in [
        "clb.1",
        "clb-upgrade.1",
        "clb-deploy.1",
        "clb-cloud-config.1",
        "clb-cloud-config-validate.1",
    ] {
        assert!(man.join(page).is_file(), "{page} not generated");
    }
    let root = std::fs::read_to_string(man.join("clb.1")).unwrap();
    assert!(root.contains(".SH \"EXIT STATUS\""), "{root}");
    let upgrade = std::fs::read_to_string(man.join("clb-upgrade.1")).unwrap();
    assert!(upgrade.contains("docker\\-image"), "{upgrade}");
    for file in ["clb.bash", "_clb", "clb.fish"] {
        let text = std::fs::read_to_string(comp.join(file)).unwrap();
        assert!(text.contains("mkinitrd"), "{file} lacks the subcommands");
    }
}

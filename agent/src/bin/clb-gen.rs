//! `clb-gen`: writes what is derived from clb's code — man pages, shell completions,
//! `docs/cli-reference.md`, the exit-code table in `docs/cli.md` and the status document's
//! JSON Schema `docs/status.schema.json`, the D-Bus introspection XML
//! `docs/dbus/dev.clb.Agent1.xml` — so none of them is kept by hand. A separate binary keeps the generators out of `clb` itself.

// The very definitions `clb` parses with, compiled in here too: the lib does not hold the CLI.
// The generator reads only the clap tree, never a parsed value.
#[allow(dead_code)]
#[path = "../cli/args.rs"]
mod args;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Arg, ArgAction, Command, CommandFactory, Parser};
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

const EXIT_BEGIN: &str = "<!-- generated: exit-codes -->";
const EXIT_END: &str = "<!-- end generated -->";
const REGENERATE: &str = "cargo run -p clb --bin clb-gen -- docs";

#[derive(Parser, Debug)]
#[command(
    name = "clb-gen",
    about = "Generate clb's man pages, shell completions and CLI docs from its clap definitions"
)]
enum Gen {
    /// Write docs/cli-reference.md, the exit-code table in docs/cli.md and
    /// docs/status.schema.json.
    Docs {
        /// Change nothing; fail when the committed files differ from what would be written.
        #[arg(long)]
        check: bool,
        /// Workspace root holding docs/.
        #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/.."))]
        root: PathBuf,
    },
    /// Write clb.1 and one page per subcommand (clb-upgrade.1, ...) into DIR.
    Man { dir: PathBuf },
    /// Write bash, zsh and fish completions (clb.bash, _clb, clb.fish) into DIR.
    Completions { dir: PathBuf },
}

fn main() -> ExitCode {
    let result = match Gen::parse() {
        Gen::Docs { check, root } => docs(&root, check),
        Gen::Man { dir } => man_pages(&dir).map(|()| true),
        Gen::Completions { dir } => completions(&dir).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("clb-gen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The `clb` command tree as the binary builds it (global options propagated, names set).
fn clb_command() -> Command {
    let mut cmd = args::Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Ok(false) when checking found stale files.
fn docs(root: &Path, check: bool) -> Result<bool> {
    let reference = root.join("docs/cli-reference.md");
    let cli_md = root.join("docs/cli.md");
    let current = std::fs::read_to_string(&cli_md)
        .with_context(|| format!("reading {}", cli_md.display()))?;
    let wanted = [
        (
            "docs/cli-reference.md",
            reference,
            reference_markdown(&clb_command()),
        ),
        ("docs/cli.md", cli_md, replace_exit_table(&current)?),
        (
            "docs/status.schema.json",
            root.join("docs/status.schema.json"),
            serde_json::to_string_pretty(&clb::status::schema())? + "\n",
        ),
        (
            "docs/dbus/dev.clb.Agent1.xml",
            root.join("docs/dbus/dev.clb.Agent1.xml"),
            clb::daemon::interface::introspection_xml(),
        ),
    ];
    let mut fresh = true;
    for (name, path, text) in wanted {
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        if old == text {
            continue;
        }
        if check {
            fresh = false;
            eprintln!(
                "clb-gen: {name} differs from what the code generates{}; run `{REGENERATE}` and \
                 commit the result",
                first_difference(&old, &text)
            );
        } else {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {name}");
        }
    }
    Ok(fresh)
}

fn first_difference(old: &str, new: &str) -> String {
    let mut old_lines = old.lines();
    for (n, want) in new.lines().enumerate() {
        match old_lines.next() {
            Some(have) if have == want => {}
            have => {
                return format!(
                    " (line {}: committed {:?}, generated {want:?})",
                    n + 1,
                    have.unwrap_or("<end of file>")
                );
            }
        }
    }
    " (the committed file has extra lines at the end)".into()
}

fn replace_exit_table(cli_md: &str) -> Result<String> {
    let (Some(begin), Some(end)) = (cli_md.find(EXIT_BEGIN), cli_md.find(EXIT_END)) else {
        bail!("docs/cli.md lacks the markers {EXIT_BEGIN} ... {EXIT_END}");
    };
    if end < begin {
        bail!("docs/cli.md: {EXIT_END} comes before {EXIT_BEGIN}");
    }
    Ok(format!(
        "{}{EXIT_BEGIN}\n{}{}",
        &cli_md[..begin],
        exit_table_markdown(),
        &cli_md[end..]
    ))
}

fn exit_table_markdown() -> String {
    let mut out = String::from("| code | name | meaning | examples |\n|---|---|---|---|\n");
    for c in clb::error::exit::TABLE {
        let row = format!(
            "| {} | `{}` | {} | {} |",
            c.code,
            c.name,
            cell(c.meaning),
            cell(c.examples)
        );
        // Code 0 has no examples: `| |`, not `|  |`.
        out.push_str(&row.replace("|  |", "| |"));
        out.push('\n');
    }
    out
}

/// A bare `|` or newline would end the markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn reference_markdown(root: &Command) -> String {
    let mut out = String::from("# `clb` command-line reference\n\n");
    let _ = writeln!(
        out,
        "<!-- Generated from agent/src/cli/args.rs by `{REGENERATE}`: edit the clap definitions, \
         not this file. -->\n\n\
         Every command and option with its help text, as `clb [COMMAND] --help` prints them. \
         What the commands do, with examples: [cli.md](cli.md); exit codes: \
         [cli.md](cli.md#exit-codes).\n"
    );
    command_markdown(root, true, &mut out);
    out
}

fn command_markdown(cmd: &Command, is_root: bool, out: &mut String) {
    let path = cmd.get_bin_name().unwrap_or(cmd.get_name());
    let _ = writeln!(out, "## `{path}`\n");
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        let _ = writeln!(out, "{about}\n");
    }
    let usage = cmd.clone().render_usage().to_string();
    let _ = writeln!(out, "```text\n{}\n```\n", usage.trim_end());
    // Global options are listed once, under `clb`; --help is on every command anyway.
    let args: Vec<&Arg> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter(|a| is_root || (!a.is_global_set() && a.get_id() != "help"))
        .collect();
    if !args.is_empty() {
        out.push_str("| argument | description |\n|---|---|\n");
        for a in args {
            let _ = writeln!(out, "| `{}` | {} |", arg_spec(a), cell(&arg_details(a)));
        }
        out.push('\n');
    }
    if !is_root {
        out.push_str("The global options of [`clb`](#clb) apply as well.\n\n");
    }
    let subs: Vec<&Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    if !subs.is_empty() {
        out.push_str("| command | what it does |\n|---|---|\n");
        for s in &subs {
            let name = s.get_bin_name().unwrap_or(s.get_name());
            let about = s.get_about().map(ToString::to_string).unwrap_or_default();
            let _ = writeln!(
                out,
                "| [`{name}`](#{}) | {} |",
                name.replace(' ', "-"),
                cell(&about)
            );
        }
        out.push('\n');
    }
    for s in subs {
        command_markdown(s, false, out);
    }
}

fn takes_values(a: &Arg) -> bool {
    a.get_action().takes_values()
}

fn repeatable(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::Append | ArgAction::Count)
        || a.get_num_args().is_some_and(|n| n.max_values() > 1)
}

/// `-d, --docker-image <IMAGE>` or `<DIR>...`, as clap's own help writes them.
fn arg_spec(a: &Arg) -> String {
    let values = a
        .get_value_names()
        .map(|names| {
            names
                .iter()
                .map(|n| format!("<{n}>"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| format!("<{}>", a.get_id().as_str().to_uppercase()));
    let dots = if repeatable(a) && takes_values(a) {
        "..."
    } else {
        ""
    };
    if a.is_positional() {
        return format!("{values}{dots}");
    }
    let mut spec = String::new();
    if let Some(s) = a.get_short() {
        spec.push('-');
        spec.push(s);
    }
    if let Some(l) = a.get_long() {
        if !spec.is_empty() {
            spec.push_str(", ");
        }
        spec.push_str("--");
        spec.push_str(l);
    }
    if takes_values(a) {
        spec.push(' ');
        spec.push_str(&values);
        spec.push_str(dots);
    }
    spec
}

/// Help text plus what `--help` shows in brackets: aliases, env, default, possible values.
fn arg_details(a: &Arg) -> String {
    let mut text = a
        .get_long_help()
        .or(a.get_help())
        .map(ToString::to_string)
        .unwrap_or_default();
    let mut extra = Vec::new();
    if let Some(aliases) = a.get_visible_aliases().filter(|v| !v.is_empty()) {
        let list: Vec<String> = aliases.iter().map(|al| format!("`--{al}`")).collect();
        extra.push(format!("alias: {}", list.join(", ")));
    }
    if let Some(env) = a.get_env() {
        extra.push(format!("env: `{}`", env.to_string_lossy()));
    }
    if takes_values(a) {
        let defaults: Vec<String> = a
            .get_default_values()
            .iter()
            .map(|d| format!("`{}`", d.to_string_lossy()))
            .collect();
        if !defaults.is_empty() {
            extra.push(format!("default: {}", defaults.join(", ")));
        }
        let possible: Vec<String> = a
            .get_possible_values()
            .iter()
            .filter(|p| !p.is_hide_set())
            .map(|p| format!("`{}`", p.get_name()))
            .collect();
        if !possible.is_empty() {
            extra.push(format!("one of {}", possible.join(", ")));
        }
    }
    // A repeatable value already shows as `<FILE>...`; a counted flag has no value to show it.
    if matches!(a.get_action(), ArgAction::Count) {
        extra.push("repeatable".into());
    }
    if a.is_required_set() {
        extra.push("required".into());
    }
    if !extra.is_empty() {
        if !text.is_empty() {
            text.push(' ');
        }
        let _ = write!(text, "[{}]", extra.join("; "));
    }
    text
}

fn man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let root = clb_command();
    let version = root.get_version().unwrap_or_default().to_string();
    let subpages: Vec<String> = all_commands(&root).iter().skip(1).map(page_name).collect();
    for cmd in all_commands(&root) {
        let name = page_name(&cmd);
        let is_root = name == "clb";
        let man = Man::new(cmd.clone())
            .source(format!("clb {version}"))
            .manual("clb manual");
        let mut page = Vec::new();
        man.render_title(&mut page)?;
        man.render_name_section(&mut page)?;
        man.render_synopsis_section(&mut page)?;
        man.render_description_section(&mut page)?;
        if cmd.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut page)?;
        }
        if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
            man.render_subcommands_section(&mut page)?;
        }
        let mut roff = Roff::default();
        if is_root {
            // A real EXIT STATUS section instead of the --help text clap_mangen would put
            // under EXTRA.
            roff.control("SH", ["EXIT STATUS"]);
            for c in clb::error::exit::TABLE {
                roff.control("TP", []);
                roff.text([bold(c.code.to_string())]);
                let mut line = c.meaning.to_string();
                if !c.examples.is_empty() {
                    let _ = write!(line, ": {}", c.examples.replace('`', ""));
                }
                roff.text([roman(line)]);
            }
        }
        roff.control("SH", ["SEE ALSO"]);
        let see_also: Vec<String> = if is_root {
            subpages.iter().map(|p| format!("{p}(1)")).collect()
        } else {
            vec!["clb(1)".into()]
        };
        roff.text([roman(see_also.join(", "))]);
        roff.to_writer(&mut page)?;
        // Subcommands carry no version of their own (clap_mangen panics without one).
        if cmd.get_version().is_some() {
            man.render_version_section(&mut page)?;
        }
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The command and every visible subcommand below it, depth first.
fn all_commands(cmd: &Command) -> Vec<Command> {
    let mut out = vec![cmd.clone()];
    for s in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out.extend(all_commands(s));
    }
    out
}

/// `clb-cloud-config-validate` for `clb cloud-config validate`.
fn page_name(cmd: &Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string()
}

fn completions(dir: &Path) -> Result<()> {
    use clap_complete::Shell;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // With the help subcommand, as the binary has it.
    let mut cmd = args::Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "clb", dir)
            .with_context(|| format!("writing {shell} completions into {}", dir.display()))?;
    }
    Ok(())
}

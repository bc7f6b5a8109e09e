//! The Debian package end to end: `scripts/package` builds it, lintian finds no errors, the
//! file list and modes are what `packaging/README.md` promises, and installed into a
//! throw-away root its programs, man pages and completions work and it removes cleanly.
//!
//! clb is built with the dev profile here (`CLB_PACKAGE_PROFILE` overrides): a release build
//! takes minutes on a small machine, and the script strips whatever profile it packages.
//! Needs dpkg-dev, lintian, man-db and binutils (`scripts/install-test-deps`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use clb_testsupport::{require_tool, run_cmd};

const HOOK: &str = "/usr/lib/clb/clb-initrd";

fn workspace() -> PathBuf {
    clb_testsupport::workspace_root()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run_cmd(cmd).unwrap_or_else(|e| panic!("{e}"))).into_owned()
}

fn build_package() -> PathBuf {
    let profile = std::env::var("CLB_PACKAGE_PROFILE").unwrap_or_else(|_| "dev".into());
    let out = Command::new(workspace().join("scripts/package"))
        .env("CLB_PACKAGE_PROFILE", profile)
        // The test names the file it expects: the default revision, whatever the caller's
        // environment says.
        .env_remove("CLB_PACKAGE_REVISION")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/package failed: {}",
        out.status
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let deb = PathBuf::from(stdout.lines().last().unwrap().trim());
    let want = format!("clb_{}-1_amd64.deb", env!("CARGO_PKG_VERSION"));
    assert_eq!(deb.file_name().unwrap().to_str().unwrap(), want);
    deb
}

fn lintian_has_no_errors(deb: &Path) {
    let out = Command::new("lintian")
        .args(["--display-info", "--show-overrides"])
        .arg(deb)
        .output()
        .unwrap();
    let report = text(&out);
    eprintln!("---- lintian ----\n{report}");
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors: {errors:#?}");
    assert!(out.status.success(), "lintian failed ({})", out.status);
}

/// `dpkg-deb -c` as (path, mode, owner) per entry.
fn contents(deb: &Path) -> Vec<(String, String, String)> {
    ok(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f[5].trim_start_matches('.').to_string();
            (path, f[0].to_string(), f[1].to_string())
        })
        .collect()
}

fn file_list_is_complete(deb: &Path) {
    let list = contents(deb);
    let executables = [
        "/usr/bin/clb",
        HOOK,
        "/usr/lib/dracut/modules.d/90clb/module-setup.sh",
        "/usr/lib/dracut/modules.d/90clb/mount-clb.sh",
        "/usr/lib/dracut/modules.d/90clb/parse-clb.sh",
        "/usr/share/initramfs-tools/hooks/clb",
    ];
    let data = [
        "/usr/lib/systemd/system/clb-mark-good.service",
        "/usr/lib/systemd/system/clb-health-check.service",
        "/usr/lib/systemd/system/clb.service",
        "/usr/share/dbus-1/system.d/dev.clb.Agent.conf",
        "/usr/share/doc/clb/daemon.md",
        "/usr/share/man/man1/clb-daemon.1.gz",
        "/usr/share/doc/clb/health.md",
        "/usr/share/initramfs-tools/scripts/clb",
        "/usr/share/clb/grub.cfg",
        "/usr/share/man/man1/clb.1.gz",
        "/usr/share/man/man1/clb-upgrade.1.gz",
        "/usr/share/man/man1/clb-mkinitrd.1.gz",
        "/usr/share/man/man1/clb-cloud-config-validate.1.gz",
        "/usr/share/bash-completion/completions/clb",
        "/usr/share/zsh/vendor-completions/_clb",
        "/usr/share/fish/vendor_completions.d/clb.fish",
        "/usr/share/doc/clb/copyright",
        "/usr/share/doc/clb/changelog.Debian.gz",
        "/usr/share/doc/clb/README.md",
        "/usr/share/doc/clb/boot.md",
        "/usr/share/lintian/overrides/clb",
    ];
    let listing = list
        .iter()
        .map(|(p, m, o)| format!("{m} {o} {p}"))
        .collect::<Vec<_>>()
        .join("\n");
    for (paths, mode) in [(&executables[..], "-rwxr-xr-x"), (&data[..], "-rw-r--r--")] {
        for want in paths {
            let found = list.iter().find(|(p, _, _)| p == want);
            assert!(
                found.is_some(),
                "{want} missing from the package:\n{listing}"
            );
            assert_eq!(found.unwrap().1, mode, "mode of {want}:\n{listing}");
        }
    }
    for (path, mode, owner) in &list {
        assert_eq!(owner, "root/root", "{path} is not root's:\n{listing}");
        if mode.starts_with('d') {
            assert_eq!(mode, "drwxr-xr-x", "{path}:\n{listing}");
        }
    }
    let pages = list
        .iter()
        .filter(|(p, _, _)| p.starts_with("/usr/share/man/man1/"))
        .count();
    // clb, 18 commands and cloud-config's validate.
    assert!(pages >= 20, "only {pages} man pages:\n{listing}");
}

/// A throw-away root with its own empty dpkg database.
///
/// `dpkg --root=DIR` unpacks under DIR and keeps its database in DIR/var/lib/dpkg, so the
/// host's package database is never touched (unlike `--instdir` alone). Maintainer scripts
/// would be run chrooted into DIR, which has no shell — the package has none. The triggers
/// file names update-initramfs, which nothing in DIR is interested in, so no trigger runs.
/// `--force-depends`: DIR holds none of clb's dependencies (the binaries run with the
/// host's libc); `--force-not-root` for runs without root (CI is root).
/// The health check and mark-good are enabled by vendor links (no postinst), and on-host
/// upgrades have their converter (issue 8: the .deb must bring squashfs-tools-ng).
fn units_are_enabled_and_dependencies_declared(deb: &Path) {
    let listing = ok(Command::new("dpkg-deb").arg("-c").arg(deb));
    for link in [
        "./usr/lib/systemd/system/multi-user.target.wants/clb-mark-good.service -> ../clb-mark-good.service",
        "./usr/lib/systemd/system/boot-complete.target.requires/clb-health-check.service -> ../clb-health-check.service",
    ] {
        assert!(listing.contains(link), "{link} missing:\n{listing}");
    }
    // The daemon is the user's choice (`systemctl enable --now clb.service`): no vendor link.
    assert!(
        !listing.contains("wants/clb.service"),
        "clb.service must not be enabled by the package:\n{listing}"
    );
    let depends = ok(Command::new("dpkg-deb").arg("-f").arg(deb).arg("Depends"));
    for dep in [
        "squashfs-tools-ng",
        "e2fsprogs",
        "mount",
        "mtools",
        "ca-certificates",
        // The gzip decoder links ISA-L, at least the version its shim was compiled against.
        "libisal2 (>= 2.30",
    ] {
        assert!(
            depends.split(',').any(|d| d.trim().starts_with(dep)),
            "Depends lacks {dep}: {depends}"
        );
    }
}

fn dpkg_root(dir: &Path) -> Command {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", dir.display()))
        .args(["--force-not-root", "--force-depends"]);
    cmd
}

fn install(deb: &Path, dir: &Path) {
    let admin = dir.join("var/lib/dpkg");
    std::fs::create_dir_all(admin.join("info")).unwrap();
    std::fs::create_dir_all(admin.join("updates")).unwrap();
    std::fs::write(admin.join("status"), "").unwrap();
    ok(dpkg_root(dir).arg("-i").arg(deb));
    let status = ok(dpkg_root(dir).args(["-s", "clb"]));
    assert!(status.contains("Status: install ok installed"), "{status}");
}

fn installed_programs_work(dir: &Path) {
    let clb = dir.join("usr/bin/clb");
    let help = ok(Command::new(&clb).arg("--help"));
    assert!(
        help.contains("upgrade") && help.contains("Exit codes:"),
        "{help}"
    );
    let version = ok(Command::new(&clb).arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    // One path for the hook: where the package puts it is where `clb mkinitrd` looks.
    let mkinitrd = ok(Command::new(&clb)
        .args(["mkinitrd", "--help"])
        .env("COLUMNS", "400"));
    assert!(
        mkinitrd.contains(&format!("[default: {HOOK}]")),
        "{mkinitrd}"
    );
    let hook = dir.join(HOOK.trim_start_matches('/'));
    let usage = ok(Command::new(&hook).arg("--help"));
    assert!(
        usage.contains("clb-initrd assemble --sysroot DIR"),
        "{usage}"
    );
    let hook_version = ok(Command::new(&hook).arg("--version"));
    assert!(
        hook_version.contains(env!("CARGO_PKG_VERSION")),
        "{hook_version}"
    );
    let file = ok(Command::new("file").arg(&hook));
    assert!(file.contains("static"), "the hook must be static: {file}");
    // The initramfs integrations look for the hook at the same path.
    for f in [
        "usr/share/initramfs-tools/hooks/clb",
        "usr/share/initramfs-tools/scripts/clb",
        "usr/lib/dracut/modules.d/90clb/module-setup.sh",
        "usr/lib/dracut/modules.d/90clb/mount-clb.sh",
    ] {
        let script = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(script.contains(HOOK), "{f} does not use {HOOK}");
        assert!(
            !script.contains("/usr/bin/clb-initrd"),
            "{f}: old hook path"
        );
        let shell = if script.starts_with("#!/bin/bash") {
            "bash"
        } else {
            "sh"
        };
        ok(Command::new(shell).arg("-n").arg(dir.join(f)));
    }
}

fn man_page_shows_the_upgrade_flags(dir: &Path) {
    let page = dir.join("usr/share/man/man1/clb-upgrade.1.gz");
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&page)
        .env("LC_ALL", "C")
        .env("MANWIDTH", "120")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "man failed:\n{}", text(&out));
    assert!(
        out.stderr.is_empty(),
        "man warnings: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for flag in [
        "--docker-image",
        "--key",
        "--no-verify",
        "--max-tries",
        "--reboot",
        "--recovery",
    ] {
        assert!(
            shown.contains(flag),
            "{flag} not in clb-upgrade(1):\n{shown}"
        );
    }
    let root = ok(Command::new("man")
        .arg("-l")
        .arg(dir.join("usr/share/man/man1/clb.1.gz"))
        .env("LC_ALL", "C")
        .env("MANPAGER", "cat"));
    // man justifies lines by widening spaces: compare words, not spacing.
    let words = root.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("EXIT STATUS")
            && words.contains("hook failed")
            && words.contains("16 access denied"),
        "{root}"
    );
}

fn completions_load(dir: &Path) {
    let bash = dir.join("usr/share/bash-completion/completions/clb");
    ok(Command::new("bash").arg("-n").arg(&bash));
    let registered = ok(Command::new("bash")
        .arg("-c")
        .arg("source \"$1\" && complete -p clb")
        .arg("bash")
        .arg(&bash));
    assert!(registered.contains("clb"), "{registered}");
    for f in [
        "usr/share/zsh/vendor-completions/_clb",
        "usr/share/fish/vendor_completions.d/clb.fish",
    ] {
        let meta = std::fs::metadata(dir.join(f)).unwrap();
        assert!(
            meta.len() > 0 && meta.permissions().mode() & 0o777 == 0o644,
            "{f}"
        );
    }
}

fn purge_leaves_nothing(dir: &Path) {
    ok(dpkg_root(dir).args(["--purge", "clb"]));
    // Everything but dpkg's own database must be gone, empty directories included.
    let left = ok(Command::new("find")
        .arg(dir)
        .args(["-mindepth", "1", "-path"])
        .arg(dir.join("var"))
        .args(["-prune", "-o", "-print"]));
    assert!(left.is_empty(), "left after purge:\n{left}");
}

#[test]
fn debian_package_builds_lints_installs_and_runs() {
    for tool in [
        "cargo",
        "dpkg",
        "dpkg-deb",
        "dpkg-shlibdeps",
        "lintian",
        "man",
        "strip",
        "file",
        "bash",
    ] {
        require_tool(tool);
    }
    let deb = build_package();
    lintian_has_no_errors(&deb);
    file_list_is_complete(&deb);
    units_are_enabled_and_dependencies_declared(&deb);
    let root = tempfile::tempdir().unwrap();
    install(&deb, root.path());
    installed_programs_work(root.path());
    man_page_shows_the_upgrade_flags(root.path());
    completions_load(root.path());
    purge_leaves_nothing(root.path());
}

//! The yip keys real configuration files use, run for real on temporary roots: entities,
//! `only_service_manager`, `systemd_firstboot`, `packages`, `git`, `layout` with `script://`
//! and `init_disk`, step ids in `after:`, repeated names, dot notation on the kernel command
//! line, and the YAML edge cases Go yip accepts. Needs root, busybox-static, git,
//! systemd (systemd-firstboot), util-linux (losetup), gdisk (sgdisk), python3.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use clb_cloud_config::{Options, Outcome, Report, Sources};
use clb_testsupport::{hash_tree, require_tool};
use tempfile::TempDir;

fn make_root() -> TempDir {
    let busybox = require_tool("busybox");
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    for d in ["etc", "bin", "root", "oem", "usr/bin"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    let files = [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
        ("etc/group", "root:x:0:\nusers:x:100:old\n", 0o644),
        ("etc/shadow", "root:*:19000:0:99999:7:::\n", 0o640),
        ("etc/gshadow", "root:*::\n", 0o640),
    ];
    for (path, text, mode) in files {
        std::fs::write(r.join(path), text).unwrap();
        std::fs::set_permissions(r.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::copy(&busybox, r.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "cat", "touch", "test", "["] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
    }
    dir
}

fn write(root: &Path, rel: &str, text: &str) -> PathBuf {
    let p = root.join(rel.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn run_files(root: &Path, stage: &str, files: Vec<PathBuf>) -> Report {
    let report = clb_cloud_config::run_stage(
        stage,
        &Sources::files(files),
        &Options {
            root: root.to_path_buf(),
            ..Options::default()
        },
    );
    common::assert_report_printed_once(&report);
    report
}

fn outcome<'a>(report: &'a Report, name: &str) -> &'a Outcome {
    &report
        .steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name:?}: {report:#?}"))
        .outcome
}

#[test]
fn entities_are_ensured_and_deleted_like_yip() {
    let root = make_root();
    let r = root.path();
    let cfg = write(
        r,
        "oem/10_entities.yaml",
        r#"stages:
  boot:
    - name: entities
      ensure_entities:
        - entity: |
            kind: "group"
            group_name: "admin"
            password: "x"
            gid: 900
        - entity: |
            kind: "group"
            group_name: "users"
            users: "alice"
        - entity: |
            kind: "user"
            username: "alice"
            password: "x"
            uid: -1
            gid: 900
            homedir: "/home/alice"
            shell: "/bin/sh"
        - path: /etc/shadow
          entity: |
            kind: "shadow"
            username: "root"
            password: "$6$salt$hash"
        - entity: |
            kind: "gshadow"
            name: "admin"
            password: "!"
            members: "alice"
"#,
    );
    let report = run_files(r, "boot", vec![cfg.clone()]);
    assert_eq!(*outcome(&report, "entities"), Outcome::Ran, "{report:#?}");
    assert_eq!(
        read(r, "/etc/group"),
        "root:x:0:\nusers:x:100:old,alice\nadmin:x:900:\n"
    );
    assert_eq!(
        read(r, "/etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:900:Created by entities:/home/alice:/bin/sh\n"
    );
    // The password changed; the other fields the entity leaves empty are kept.
    assert_eq!(
        read(r, "/etc/shadow"),
        "root:$6$salt$hash:19000:0:99999:7:::\n"
    );
    assert_eq!(read(r, "/etc/gshadow"), "root:*::\nadmin:!::alice\n");
    let mode = std::fs::metadata(r.join("etc/shadow"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640, "the database keeps its mode");

    let before = hash_tree(r);
    let again = run_files(r, "boot", vec![cfg]);
    assert!(
        again.steps[0].actions.is_empty(),
        "{:?}",
        again.steps[0].actions
    );
    assert_eq!(hash_tree(r), before);

    let del = write(
        r,
        "oem/20_delete.yaml",
        r#"stages:
  fs:
    - name: delete
      delete_entities:
        - path: /etc/passwd
          entity: |
            kind: "user"
            username: "alice"
            password: "x"
            uid: 1000
            gid: 900
            info: "Created by entities"
            homedir: "/home/alice"
            shell: "/bin/sh"
    - name: unknown kind
      ensure_entities:
        - entity: |
            kind: "printer"
"#,
    );
    let report = run_files(r, "fs", vec![del]);
    assert_eq!(*outcome(&report, "delete"), Outcome::Ran, "{report:#?}");
    assert_eq!(read(r, "/etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
    match outcome(&report, "unknown kind") {
        Outcome::Failed(why) => assert!(why.contains("entity kind \"printer\""), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn only_service_manager_looks_at_the_root() {
    let root = make_root();
    let r = root.path();
    let cfg = write(
        r,
        "oem/10.yaml",
        r#"stages:
  boot:
    - name: for-systemd
      only_service_manager: systemd
      commands: [touch /ran-systemd]
    - name: for-openrc
      only_service_manager: openrc
      commands: [touch /ran-openrc]
    - name: for-upstart
      only_service_manager: upstart
      commands: [touch /ran-upstart]
"#,
    );
    write(r, "usr/bin/systemctl", "");
    let report = run_files(r, "boot", vec![cfg.clone()]);
    assert_eq!(*outcome(&report, "for-systemd"), Outcome::Ran);
    assert!(matches!(
        outcome(&report, "for-openrc"),
        Outcome::Skipped(_)
    ));
    assert!(matches!(
        outcome(&report, "for-upstart"),
        Outcome::Skipped(_)
    ));
    assert!(r.join("ran-systemd").exists() && !r.join("ran-openrc").exists());
    // Both installed: yip cannot tell, and skips.
    write(r, "sbin/openrc", "");
    std::fs::remove_file(r.join("ran-systemd")).unwrap();
    let report = run_files(r, "boot", vec![cfg]);
    assert!(
        matches!(outcome(&report, "for-systemd"), Outcome::Skipped(why) if why.contains("both"))
    );
}

#[test]
fn systemd_firstboot_sets_the_roots_locale_and_hostname() {
    require_tool("systemd-firstboot");
    let root = make_root();
    let r = root.path();
    let cfg = write(
        r,
        "oem/10.yaml",
        r#"stages:
  initramfs:
    - name: firstboot
      systemd_firstboot:
        locale: en_US.UTF-8
        hostname: firstboot-host
"#,
    );
    std::fs::remove_file(r.join("etc/hostname")).ok();
    let report = run_files(r, "initramfs", vec![cfg.clone()]);
    assert_eq!(*outcome(&report, "firstboot"), Outcome::Ran, "{report:#?}");
    // Debian's systemd writes /etc/default/locale, upstream /etc/locale.conf.
    let locale = std::fs::read_to_string(r.join("etc/locale.conf"))
        .or_else(|_| std::fs::read_to_string(r.join("etc/default/locale")))
        .unwrap();
    assert!(locale.contains("LANG=en_US.UTF-8"), "{locale}");
    assert_eq!(read(r, "/etc/hostname").trim(), "firstboot-host");
    // systemd-firstboot sets only what is unset: a second run changes nothing.
    let before = hash_tree(r);
    run_files(r, "initramfs", vec![cfg]);
    assert_eq!(hash_tree(r), before);
}

/// The package manager is not run for real (that needs a distribution and its mirror): the
/// root's `apt-get` is a script that records its arguments, which must be yip's.
#[test]
fn packages_use_the_roots_package_manager_with_yips_arguments() {
    let root = make_root();
    let r = root.path();
    write(
        r,
        "usr/bin/apt-get",
        "#!/bin/sh\necho \"$DEBIAN_FRONTEND $*\" >> /apt.log\n",
    );
    std::fs::set_permissions(
        r.join("usr/bin/apt-get"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let cfg = write(
        r,
        "oem/10.yaml",
        r#"stages:
  after-install-chroot:
    - name: pkgs
      packages:
        refresh: true
        install: [vim, "curl=7.88*"]
        remove: [nano]
    - name: bad
      packages:
        install: ["vim; rm -rf /"]
"#,
    );
    let report = run_files(r, "after-install-chroot", vec![cfg]);
    assert_eq!(*outcome(&report, "pkgs"), Outcome::Ran, "{report:#?}");
    assert_eq!(
        read(r, "/apt.log"),
        "noninteractive -y update\nnoninteractive -y --no-install-recommends install vim curl=7.88*\nnoninteractive -y remove nano\n"
    );
    assert!(
        matches!(outcome(&report, "bad"), Outcome::Failed(why) if why.contains("package name"))
    );
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn git_clones_then_updates_a_checkout() {
    require_tool("git");
    let upstream = tempfile::tempdir().unwrap();
    let u = upstream.path();
    git(u, &["init", "-q", "-b", "main"]);
    std::fs::write(u.join("config.txt"), "one\n").unwrap();
    git(u, &["add", "."]);
    git(u, &["commit", "-q", "-m", "one"]);
    let root = make_root();
    let r = root.path();
    let cfg = write(
        r,
        "oem/10.yaml",
        &format!(
            "stages:\n  network:\n    - name: checkout\n      git:\n        url: file://{}\n        path: /opt/repo\n        branch: main\n",
            u.display()
        ),
    );
    let report = run_files(r, "network", vec![cfg.clone()]);
    assert_eq!(*outcome(&report, "checkout"), Outcome::Ran, "{report:#?}");
    assert_eq!(read(r, "/opt/repo/config.txt"), "one\n");
    std::fs::write(u.join("config.txt"), "two\n").unwrap();
    git(u, &["commit", "-q", "-am", "two"]);
    let report = run_files(r, "network", vec![cfg]);
    assert_eq!(*outcome(&report, "checkout"), Outcome::Ran, "{report:#?}");
    assert_eq!(read(r, "/opt/repo/config.txt"), "two\n");
}

#[test]
fn after_accepts_yip_ids_and_repeated_names_get_index_suffixes() {
    let root = make_root();
    let r = root.path();
    let a = write(
        r,
        "oem/20_b.yaml",
        "stages:\n  boot:\n    - name: Second\n      after: [{name: \"/oem/10_a.yaml.First stage\"}]\n      commands: [\"echo second >> /order\"]\n",
    );
    let b = write(
        r,
        "oem/10_a.yaml",
        "stages:\n  boot:\n    - name: First stage\n      commands: [\"echo first >> /order\"]\n",
    );
    // Repeated names: yip suffixes every step of that file's stage with its index.
    let c = write(
        r,
        "oem/30_c.yaml",
        "stages:\n  boot:\n    - name: Branding\n      commands: [\"echo b0 >> /order\"]\n    - name: Branding\n      commands: [\"echo b1 >> /order\"]\n    - name: Third\n      after: [{name: \"/oem/30_c.yaml.Branding.0\"}]\n      commands: [\"echo third >> /order\"]\n",
    );
    // Sources in this order: 20_b's step waits for 10_a's by its yip id (the path in the
    // root, then the step name).
    let report = run_files(r, "boot", vec![a, b, c]);
    let names: Vec<&str> = report.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "First stage",
            "Second",
            "Branding.0",
            "Branding.1",
            "Third.2"
        ]
    );
    assert_eq!(read(r, "/order"), "first\nsecond\nb0\nb1\nthird\n");
    assert!(
        !report
            .warnings
            .iter()
            .any(|w| w.message.contains("matches no step")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn stages_in_dot_notation_on_the_kernel_command_line_run() {
    let root = make_root();
    let r = root.path();
    let report = clb_cloud_config::run_stage(
        "boot",
        &Sources::files(Vec::<PathBuf>::new()).with_cmdline(
            "quiet stages.boot[0].name=from-cmdline stages.boot[0].commands[0]=\"touch /from-cmdline\" root=LABEL=x",
        ),
        &Options {
            root: r.to_path_buf(),
            ..Options::default()
        },
    );
    assert_eq!(
        *outcome(&report, "from-cmdline"),
        Outcome::Ran,
        "{report:#?}"
    );
    assert!(r.join("from-cmdline").exists());
}

#[test]
fn yaml_that_go_yip_accepts_is_accepted() {
    let root = make_root();
    let r = root.path();
    let cfg = write(
        r,
        "oem/10.yaml",
        r#"stages:
  boot:
    - name: edge cases
      files:
        - path: /etc/block
          permissions: 448
          content: |
            ---
            a document marker inside a literal block
        - path: /etc/octal
          permissions: 0600
          content: x
      sysctl:
        fs.inotify.max_user_instances: 8192
...
this text after the document end marker is not YAML at all: [
"#,
    );
    let report = run_files(r, "boot", vec![cfg]);
    assert_eq!(*outcome(&report, "edge cases"), Outcome::Ran, "{report:#?}");
    assert_eq!(
        read(r, "/etc/block"),
        "---\na document marker inside a literal block\n"
    );
    let mode = |p: &str| std::fs::metadata(r.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode("etc/block"), mode("etc/octal")), (0o700, 0o600));
    assert!(
        read(r, "/etc/sysctl.d/90-clb-cloud-config.conf")
            .contains("fs.inotify.max_user_instances = 8192")
    );
    // `#cloud-config` after comment lines (yip reads up to 10 lines, skipping comments) is
    // cloud-config; a `#node-config` header is a comment and the file is plain yip.
    assert!(clb_cloud_config::is_cloud_config(
        "## template: jinja\n\n#cloud-config\nruncmd: [x]\n"
    ));
    assert!(!clb_cloud_config::is_cloud_config(
        "#node-config\nstages: {}\n"
    ));
    assert!(!clb_cloud_config::is_cloud_config(
        "stages: {}\n#cloud-config\n"
    ));
}

/// `layout.device.path: script://…` picks the disk at run time; `init_disk` gives an empty
/// disk a GPT whose GUID is derived from `disk_name` as yip derives it (UUIDv5, URL
/// namespace), checked with sgdisk and Python's uuid module.
#[test]
fn layout_device_scripts_and_init_disk() {
    for t in ["losetup", "sgdisk", "python3"] {
        require_tool(t);
    }
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let lo = clb_disk::LoopDevice::attach(&img, 0, None, false).unwrap();
    let script = work.path().join("pick-disk.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho {}\n", lo.path().display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = make_root();
    let r = root.path();
    let cfg = write(
        r,
        "oem/10.yaml",
        &format!(
            "stages:\n  before-install:\n    - name: init\n      layout:\n        device:\n          path: \"script://{} small\"\n          init_disk: true\n          disk_name: MYDISK\n",
            script.display()
        ),
    );
    let report = run_files(r, "before-install", vec![cfg]);
    assert_eq!(*outcome(&report, "init"), Outcome::Ran, "{report:#?}");
    let table = String::from_utf8(
        Command::new("sgdisk")
            .arg("-p")
            .arg(lo.path())
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let expected = String::from_utf8(
        Command::new("python3")
            .args([
                "-c",
                "import uuid; print(str(uuid.uuid5(uuid.NAMESPACE_URL, 'MYDISK')).upper())",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        table.contains(&format!("Disk identifier (GUID): {}", expected.trim())),
        "{table}\nexpected {expected}"
    );
}

/// Commands, `if`, file contents, entities and environment values are rendered against
/// `.Values` (system information); a template that does not render is used as written.
#[test]
fn templates_render_against_system_information() {
    let root = make_root();
    let r = root.path();
    write(r, "etc/hostname", "tmpl-host\n");
    write(
        r,
        "etc/os-release",
        "ID=testos\nPRETTY_NAME=\"Test OS 7\"\n",
    );
    let cfg = write(
        r,
        "oem/10.yaml",
        r#"stages:
  boot:
    - name: rendered
      if: '[ "{{ .Values.os.vendor }}" = testos ]'
      commands:
        - echo "{{.Values.node.hostname}}" > /from-command
        - echo '{{ nope }}' > /raw
      files:
        - path: /etc/motd
          content: "Welcome to {{ .Values.os.name | upper }}\n"
      environment:
        NODE: "{{ .Values.node.hostname | replace \"-\" \"_\" }}"
      ensure_entities:
        - entity: |
            kind: "group"
            group_name: "{{ .Values.os.vendor }}-admins"
            gid: 901
"#,
    );
    let report = run_files(r, "boot", vec![cfg]);
    let step = report.steps.iter().find(|s| s.name == "rendered").unwrap();
    assert_eq!(step.outcome, Outcome::Ran, "{report:#?}");
    assert_eq!(read(r, "/from-command"), "tmpl-host\n");
    assert_eq!(read(r, "/raw"), "{{ nope }}\n");
    assert!(
        step.notes
            .iter()
            .any(|n| n.contains("function \"nope\" not defined")),
        "{:?}",
        step.notes
    );
    assert_eq!(read(r, "/etc/motd"), "Welcome to TEST OS 7\n");
    assert!(read(r, "/etc/environment").contains("NODE=\"tmpl_host\""));
    assert!(read(r, "/etc/group").contains("testos-admins::901:\n"));
}

/// Hostnames see `{UUID, Random, MachineID, ProtectedID}`; one that fails to render is an
/// error, as in yip.
#[test]
fn hostname_templates_use_the_machine_id() {
    let root = make_root();
    let r = root.path();
    write(r, "etc/machine-id", "abcdef0123456789abcdef0123456789\n");
    let cfg = write(
        r,
        "oem/10.yaml",
        r#"stages:
  initramfs:
    - name: host
      hostname: node-{{ trunc 6 .MachineID }}
    - name: random
      hostname: "{{ trunc 4 .Random }}"
    - name: broken
      hostname: "x-{{ .MachineID | nope }}"
"#,
    );
    let report = run_files(r, "initramfs", vec![cfg]);
    assert_eq!(*outcome(&report, "host"), Outcome::Ran, "{report:#?}");
    assert_eq!(*outcome(&report, "random"), Outcome::Ran, "{report:#?}");
    let random = read(r, "/etc/hostname");
    assert_eq!(random.trim().len(), 4, "{random}");
    assert!(random.trim().chars().all(|c| c.is_ascii_alphanumeric()));
    match outcome(&report, "broken") {
        Outcome::Failed(why) => assert!(why.contains("not defined"), "{why}"),
        other => panic!("{other:?}"),
    }
    // The first step alone: the machine id's first 6 characters.
    let only = write(
        r,
        "oem/20.yaml",
        "stages:\n  fs:\n    - name: host\n      hostname: node-{{ trunc 6 .MachineID }}\n",
    );
    run_files(r, "fs", vec![only]);
    assert_eq!(read(r, "/etc/hostname"), "node-abcdef\n");
}

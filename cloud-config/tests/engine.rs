//! The engine on temporary roots: every step type, every condition, ordering, strictness,
//! dry run, idempotency, sources. Commands run chrooted in the root with busybox-static.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod common;

use clb_cloud_config::{Options, Outcome, PartError, Report, Sources, StepError};
use clb_command::one_line;
use clb_testsupport::{hash_tree, require_tool, tree_manifest};
use tempfile::TempDir;

/// The engine's `run_stage`, with every error it reports checked to print each cause once.
fn run_stage(stage: &str, sources: &Sources, options: &Options) -> Report {
    let report = clb_cloud_config::run_stage(stage, sources, options);
    common::assert_report_printed_once(&report);
    report
}

fn make_root() -> TempDir {
    let busybox = require_tool("busybox");
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    for d in [
        "etc",
        "bin",
        "root",
        "oem",
        "usr/lib/systemd/system",
        "etc/systemd/system",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(
        r.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(
        r.join("etc/group"),
        "root:x:0:\nshadow:x:42:\nusers:x:100:\nnogroup:x:65534:\n",
    )
    .unwrap();
    std::fs::write(
        r.join("etc/shadow"),
        "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
    )
    .unwrap();
    std::fs::set_permissions(r.join("etc/shadow"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(r.join("etc/shadow"), Some(0), Some(42)).unwrap();
    std::fs::write(
        r.join("etc/os-release"),
        "ID=testos\nNAME=\"Test OS\"\nVERSION_ID=\"3.1\"\n",
    )
    .unwrap();
    std::fs::write(r.join("etc/hostname"), "node-7\n").unwrap();
    // A static busybox is a whole userland for chrooted commands.
    let bb = std::fs::read(&busybox).unwrap();
    std::fs::write(r.join("bin/busybox"), bb).unwrap();
    std::fs::set_permissions(
        r.join("bin/busybox"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for applet in ["sh", "echo", "cat", "test", "true", "false", "touch"] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
    }
    dir
}

fn cfg(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn opts(root: &Path) -> Options {
    Options {
        root: root.to_path_buf(),
        ..Options::default()
    }
}

fn run(root: &Path, stage: &str) -> Report {
    run_stage(stage, &Sources::default(), &opts(root))
}

fn outcomes(r: &Report) -> Vec<(String, Outcome)> {
    r.steps
        .iter()
        .map(|s| (s.name.clone(), s.outcome.clone()))
        .collect()
}

fn assert_ok(r: &Report) {
    assert!(r.success(), "run failed: {}", r.to_json());
}

fn read(root: &Path, p: &str) -> String {
    std::fs::read_to_string(root.join(p.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("read {p}: {e}"))
}

fn mode_uid_gid(root: &Path, p: &str) -> (u32, u32, u32) {
    let md = std::fs::symlink_metadata(root.join(p.trim_start_matches('/'))).unwrap();
    (md.permissions().mode() & 0o7777, md.uid(), md.gid())
}

/// Run twice; the second run must change nothing (same tree, no actions).
fn assert_idempotent(root: &Path, stage: &str) {
    let before = tree_manifest(root);
    let second = run(root, stage);
    assert_ok(&second);
    let after = tree_manifest(root);
    assert_eq!(before, after, "second run changed the tree");
    for s in &second.steps {
        assert!(
            s.actions.is_empty(),
            "second run acted in {}: {:?}",
            s.name,
            s.actions
        );
    }
}

#[test]
fn files_directories_and_encodings() {
    let root = make_root();
    let r = root.path();
    // "gz+b64" of "compressed\n" made with: printf 'compressed\n' | gzip -n | base64
    let gz = {
        let out = std::process::Command::new("sh")
            .args(["-c", "printf 'compressed\\n' | gzip -n | base64 -w0"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    cfg(
        r,
        "/oem/10-files.yaml",
        &format!(
            r#"stages:
  boot:
    - name: files
      directories:
        - path: /srv/data
          permissions: 0750
          owner: nobody
          group: nogroup
        - path: /srv/ids
          owner: 1234
          group: 99
      files:
        - path: /etc/plain.conf
          content: "hello\n"
        - path: /etc/b64.conf
          content: aGkK
          encoding: b64
          permissions: 0600
          owner_string: "nobody:users"
        - path: /etc/gz.conf
          content: {gz}
          encoding: gz+b64
          permissions: 0755
        - path: /new/dir/deep.txt
          content: deep
          owner: 0
          group: shadow
"#
        ),
    );
    let rep = run(r, "boot");
    assert_ok(&rep);
    assert_eq!(read(r, "/etc/plain.conf"), "hello\n");
    assert_eq!(mode_uid_gid(r, "/etc/plain.conf").0, 0o644);
    assert_eq!(read(r, "/etc/b64.conf"), "hi\n");
    assert_eq!(mode_uid_gid(r, "/etc/b64.conf"), (0o600, 65534, 100));
    assert_eq!(read(r, "/etc/gz.conf"), "compressed\n");
    assert_eq!(mode_uid_gid(r, "/etc/gz.conf").0, 0o755);
    assert_eq!(read(r, "/new/dir/deep.txt"), "deep");
    assert_eq!(mode_uid_gid(r, "/new/dir/deep.txt"), (0o644, 0, 42));
    assert_eq!(mode_uid_gid(r, "/srv/data"), (0o750, 65534, 65534));
    assert_eq!(mode_uid_gid(r, "/srv/ids"), (0o755, 1234, 99));
    assert_idempotent(r, "boot");
    // A changed mode alone is repaired.
    std::fs::set_permissions(
        r.join("etc/b64.conf"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    assert_ok(&run(r, "boot"));
    assert_eq!(mode_uid_gid(r, "/etc/b64.conf").0, 0o600);
    // An unknown owner fails the step with a message naming it.
    cfg(
        r,
        "/oem/20-bad.yaml",
        "stages:\n  boot:\n    - name: bad\n      files:\n        - path: /x\n          owner: nosuchuser\n",
    );
    let rep = run(r, "boot");
    let bad = rep.steps.iter().find(|s| s.name == "bad").unwrap();
    assert!(
        matches!(&bad.outcome, Outcome::Failed(m) if m.contains("nosuchuser")),
        "{bad:?}"
    );
    assert!(!r.join("x").exists());
}

#[test]
fn commands_run_chrooted_and_failures_are_reported() {
    let root = make_root();
    let r = root.path();
    cfg(
        r,
        "/oem/c.yaml",
        "stages:\n  boot:\n    - name: cmds\n      commands:\n        - echo \"in $(cat /etc/hostname)\" > /out.txt\n        - test -f /bin/busybox\n    - name: failing\n      commands:\n        - echo oops >&2; false\n        - touch /after-failure\n",
    );
    let rep = run(r, "boot");
    assert_eq!(read(r, "/out.txt"), "in node-7\n");
    let o = outcomes(&rep);
    assert_eq!(o[0], ("cmds".into(), Outcome::Ran));
    match &o[1].1 {
        Outcome::Failed(m) => assert!(m.contains("oops") && m.contains("commands"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The step's other commands still ran (yip collects errors and goes on).
    assert!(r.join("after-failure").exists());
    assert!(!rep.success());
}

#[test]
fn system_settings_are_written() {
    let root = make_root();
    let r = root.path();
    std::fs::write(
        r.join("etc/environment"),
        "# keep me\nPATH=\"/usr/bin\"\nFOO=old\n",
    )
    .unwrap();
    std::fs::create_dir_all(r.join("etc/systemd")).unwrap();
    std::fs::write(
        r.join("etc/systemd/timesyncd.conf"),
        "[Time]\n#NTP=\nNTP=old.example\n",
    )
    .unwrap();
    cfg(
        r,
        "/oem/s.yaml",
        r#"stages:
  network:
    - name: settings
      dns:
        nameservers: [10.0.0.1, 10.0.0.2]
        search: [a.example, b.example]
        options: [rotate, "timeout:1"]
      hostname: web-1
      sysctl:
        net.ipv4.ip_forward: 1
        vm/swappiness: 10
      modules: [br_netfilter, overlay]
      environment:
        FOO: new value
        BAR: 'q"uote'
      timesyncd:
        NTP: 0.pool.ntp.org 1.pool.ntp.org
        FallbackNTP: time.example
    - name: env-file
      environment:
        K: v
      environment_file: /etc/clb.env
"#,
    );
    let rep = run(r, "network");
    assert_ok(&rep);
    assert_eq!(
        read(r, "/etc/resolv.conf"),
        "nameserver 10.0.0.1\nnameserver 10.0.0.2\nsearch a.example b.example\noptions rotate timeout:1\n"
    );
    assert_eq!(read(r, "/etc/hostname"), "web-1\n");
    assert_eq!(
        read(r, "/etc/sysctl.d/90-clb-cloud-config.conf"),
        "net.ipv4.ip_forward = 1\nvm.swappiness = 10\n"
    );
    assert_eq!(
        read(r, "/etc/modules-load.d/clb-cloud-config.conf"),
        "br_netfilter\noverlay\n"
    );
    assert_eq!(
        read(r, "/etc/environment"),
        "# keep me\nPATH=\"/usr/bin\"\nFOO=\"new value\"\nBAR=\"q\\\"uote\"\n"
    );
    assert_eq!(read(r, "/etc/clb.env"), "K=\"v\"\n");
    assert_eq!(
        read(r, "/etc/systemd/timesyncd.conf"),
        "[Time]\n#NTP=\nNTP=0.pool.ntp.org 1.pool.ntp.org\nFallbackNTP=time.example\n"
    );
    assert_idempotent(r, "network");
    // A symlinked resolv.conf is replaced, never followed out of the root.
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::remove_file(r.join("etc/resolv.conf")).unwrap();
    std::os::unix::fs::symlink(outside.path(), r.join("etc/resolv.conf")).unwrap();
    assert_ok(&run(r, "network"));
    assert_eq!(std::fs::read_to_string(outside.path()).unwrap(), "");
    assert!(
        std::fs::symlink_metadata(r.join("etc/resolv.conf"))
            .unwrap()
            .is_file()
    );
}

fn openssl_hash(plain: &str, salt: &str) -> String {
    let mut child = std::process::Command::new("openssl")
        .args(["passwd", "-6", "-salt", salt, "-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{plain}").unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn users_groups_passwords_and_keys() {
    require_tool("openssl");
    let root = make_root();
    let r = root.path();
    let hashed = "$6$abcdefgh$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij";
    cfg(
        r,
        "/oem/u.yaml",
        &format!(
            r#"stages:
  boot:
    - name: users
      users:
        alice:
          passwd: s3cret
          groups: [wheel, users]
          shell: /bin/bash
          gecos: Alice A
          ssh_authorized_keys: [ssh-ed25519 AAAAalice alice@x]
        bob:
          passwd: "{hashed}"
          uid: 2000
          lock_passwd: true
          homedir: /var/lib/bob
        svc:
          system: true
          no_create_home: true
          primary_group: users
    - name: keys
      authorized_keys:
        root: [ssh-ed25519 AAAAroot root@x]
"#
        ),
    );
    let rep = run(r, "boot");
    assert_ok(&rep);
    let passwd = read(r, "/etc/passwd");
    assert!(
        passwd.contains("alice:x:1000:1000:Alice A:/home/alice:/bin/bash\n"),
        "{passwd}"
    );
    assert!(
        passwd.contains("bob:x:2000:2000::/var/lib/bob:/bin/sh\n"),
        "{passwd}"
    );
    assert!(
        passwd.contains("svc:x:999:100::/home/svc:/bin/sh\n"),
        "{passwd}"
    );
    assert!(
        passwd.starts_with("root:x:0:0:root:/root:/bin/sh\nnobody:"),
        "existing lines kept: {passwd}"
    );
    let group = read(r, "/etc/group");
    assert!(group.contains("users:x:100:alice\n"), "{group}");
    assert!(group.contains("alice:x:1000:\n"), "{group}");
    assert!(group.contains("bob:x:2000:\n"), "{group}");
    assert!(group.contains("wheel:x:1001:alice\n"), "{group}");
    let shadow = read(r, "/etc/shadow");
    let field = |user: &str| {
        shadow
            .lines()
            .find(|l| l.starts_with(&format!("{user}:")))
            .unwrap()
            .split(':')
            .nth(1)
            .unwrap()
            .to_string()
    };
    let alice_hash = field("alice");
    assert!(alice_hash.starts_with("$6$"), "{alice_hash}");
    let salt = alice_hash.split('$').nth(2).unwrap();
    assert_eq!(
        openssl_hash("s3cret", salt),
        alice_hash,
        "the hash verifies"
    );
    assert_eq!(field("bob"), format!("!{hashed}"));
    assert_eq!(field("svc"), "!");
    // shadow keeps its mode and group.
    assert_eq!(mode_uid_gid(r, "/etc/shadow"), (0o640, 0, 42));
    assert_eq!(mode_uid_gid(r, "/home/alice"), (0o700, 1000, 1000));
    assert_eq!(mode_uid_gid(r, "/var/lib/bob"), (0o700, 2000, 2000));
    assert!(!r.join("home/svc").exists());
    assert_eq!(mode_uid_gid(r, "/home/alice/.ssh"), (0o700, 1000, 1000));
    assert_eq!(
        mode_uid_gid(r, "/home/alice/.ssh/authorized_keys"),
        (0o600, 1000, 1000)
    );
    assert_eq!(
        read(r, "/home/alice/.ssh/authorized_keys"),
        "ssh-ed25519 AAAAalice alice@x\n"
    );
    assert_eq!(
        read(r, "/root/.ssh/authorized_keys"),
        "ssh-ed25519 AAAAroot root@x\n"
    );
    assert_eq!(mode_uid_gid(r, "/root/.ssh/authorized_keys"), (0o600, 0, 0));
    // Re-running keeps the same salted hash: the tree does not change.
    assert_idempotent(r, "boot");
    // Keys added by hand are kept; a changed password is re-hashed.
    std::fs::write(r.join("root/.ssh/authorized_keys"), "ssh-rsa MINE\n").unwrap();
    cfg(
        r,
        "/oem/u.yaml",
        &read(r, "/oem/u.yaml").replace("s3cret", "other"),
    );
    assert_ok(&run(r, "boot"));
    assert_eq!(
        read(r, "/root/.ssh/authorized_keys"),
        "ssh-rsa MINE\nssh-ed25519 AAAAroot root@x\n"
    );
    let new_hash = read(r, "/etc/shadow")
        .lines()
        .find(|l| l.starts_with("alice:"))
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .to_string();
    let salt = new_hash.split('$').nth(2).unwrap();
    assert_eq!(openssl_hash("other", salt), new_hash);
    // Unknown user for authorized_keys and a taken uid fail.
    cfg(
        r,
        "/oem/v.yaml",
        "stages:\n  boot:\n    - name: nokeys\n      authorized_keys:\n        ghost: [k]\n        root: [\"github:me\"]\n    - name: taken\n      users:\n        carol:\n          uid: 0\n",
    );
    let rep = run(r, "boot");
    let o = outcomes(&rep);
    // Each user's failure names the user.
    let nokeys = o.iter().find(|(n, _)| n == "nokeys").unwrap();
    assert_eq!(
        nokeys.1,
        Outcome::Failed(
            "authorized_keys: ghost: not in /etc/passwd; authorized_keys: root: \"github:me\": \
             fetching keys from GitHub/GitLab is not supported; paste the key"
                .into()
        )
    );
    assert!(
        o.iter()
            .any(|(n, oc)| n == "taken" && matches!(oc, Outcome::Failed(m) if m.contains("taken"))),
        "{o:?}"
    );
}

#[test]
fn systemctl_offline_enable_disable_mask_override() {
    require_tool("systemctl");
    let root = make_root();
    let r = root.path();
    let unit = "[Unit]\nDescription=t\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n";
    std::fs::write(r.join("usr/lib/systemd/system/foo.service"), unit).unwrap();
    std::fs::write(r.join("usr/lib/systemd/system/old.service"), unit).unwrap();
    std::fs::create_dir_all(r.join("etc/systemd/system/multi-user.target.wants")).unwrap();
    std::os::unix::fs::symlink(
        "/usr/lib/systemd/system/old.service",
        r.join("etc/systemd/system/multi-user.target.wants/old.service"),
    )
    .unwrap();
    cfg(
        r,
        "/oem/sd.yaml",
        "stages:\n  boot:\n    - name: units\n      systemctl:\n        enable: [foo]\n        disable: [old.service]\n        mask: [bad.service]\n        start: [foo]\n        overrides:\n          - service: foo\n            name: 10-env\n            content: \"[Service]\\nEnvironment=A=1\\n\"\n",
    );
    let rep = run(r, "boot");
    assert_ok(&rep);
    let wants = r.join("etc/systemd/system/multi-user.target.wants");
    assert_eq!(
        std::fs::read_link(wants.join("foo.service")).unwrap(),
        PathBuf::from("/usr/lib/systemd/system/foo.service")
    );
    assert!(std::fs::symlink_metadata(wants.join("old.service")).is_err());
    assert_eq!(
        std::fs::read_link(r.join("etc/systemd/system/bad.service")).unwrap(),
        PathBuf::from("/dev/null")
    );
    assert_eq!(
        read(r, "/etc/systemd/system/foo.service.d/10-env.conf"),
        "[Service]\nEnvironment=A=1\n"
    );
    let notes = &rep.steps[0].notes;
    assert!(
        notes.iter().any(|a| a.contains("not starting foo.service")),
        "{notes:?}"
    );
    assert_idempotent(r, "boot");
}

#[test]
fn conditions_each_decide() {
    let root = make_root();
    let r = root.path();
    std::fs::write(r.join("etc/present"), "").unwrap();
    let arch_any = "x86_64|amd64|aarch64|arm64|riscv64|s390x|ppc64|386|x86|arm";
    cfg(
        r,
        "/oem/cond.yaml",
        &format!(
            r#"stages:
  boot:
    - {{name: node-yes, node: "^node-[0-9]+$", commands: [touch /node-yes]}}
    - {{name: node-no, node: other, commands: [touch /node-no]}}
    - {{name: os-yes, only_os: "^testos$", commands: [touch /os-yes]}}
    - {{name: os-name, only_os: "Test OS"}}
    - {{name: os-no, only_os: debian}}
    - {{name: ver-yes, only_os_version: "^3\\.", commands: [touch /ver-yes]}}
    - {{name: ver-no, only_os_version: "^4"}}
    - {{name: arch-yes, only_arch: "{arch_any}"}}
    - {{name: arch-no, only_arch: "^sparc$"}}
    - {{name: any-yes, if_files: {{any: [/nope, /etc/present]}}}}
    - {{name: any-no, if_files: {{any: [/nope]}}}}
    - {{name: all-yes, if_files: {{all: [/etc/present, /etc/passwd]}}}}
    - {{name: all-no, if_files: {{all: [/etc/present, /nope]}}}}
    - {{name: none-yes, if_files: {{none: [/nope]}}}}
    - {{name: none-no, if_files: {{none: [/etc/present]}}}}
    - {{name: if-yes, if: "test -f /etc/present", commands: [touch /if-yes]}}
    - {{name: if-no, if: "test -f /nope", commands: [touch /if-no]}}
    - {{name: bad-regex, node: "("}}
"#
        ),
    );
    let rep = run(r, "boot");
    for (name, outcome) in outcomes(&rep) {
        let want_run = name.ends_with("-yes") || name == "os-name";
        match (&outcome, name.as_str()) {
            (Outcome::Failed(m), "bad-regex") => {
                assert!(m.contains("invalid regular expression"), "{m}")
            }
            (Outcome::Ran, _) if want_run => {}
            (Outcome::Skipped(_), _) if name.ends_with("-no") => {}
            other => panic!("{name}: unexpected {other:?}"),
        }
    }
    assert_eq!(rep.steps.len(), 18);
    for f in ["node-yes", "os-yes", "ver-yes", "if-yes"] {
        assert!(r.join(f).exists(), "{f}");
    }
    for f in ["node-no", "if-no"] {
        assert!(!r.join(f).exists(), "{f}");
    }
    // The hostname override wins over the root's.
    let o = Options {
        hostname: Some("other".into()),
        ..opts(r)
    };
    let rep = run_stage("boot", &Sources::default(), &o);
    let node_no = rep.steps.iter().find(|s| s.name == "node-no").unwrap();
    assert_eq!(node_no.outcome, Outcome::Ran);
}

#[test]
fn after_orders_steps_across_files_and_cycles_fail() {
    let root = make_root();
    let r = root.path();
    cfg(
        r,
        "/oem/01.yaml",
        "stages:\n  boot:\n    - {name: a, after: [{name: c}]}\n    - {name: b}\n",
    );
    cfg(
        r,
        "/oem/02.yaml",
        "stages:\n  boot:\n    - {name: c}\n    - {name: d, after: [{name: ghost}]}\n",
    );
    let rep = run(r, "boot");
    let names: Vec<_> = rep.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["b", "c", "a", "d"]);
    assert!(
        rep.warnings.iter().any(|w| w.message.contains("ghost")),
        "{:?}",
        rep.warnings
    );
    assert_ok(&rep);
    cfg(
        r,
        "/oem/03.yaml",
        "stages:\n  boot:\n    - {name: x, after: [{name: y}]}\n    - {name: y, after: [{name: x}]}\n",
    );
    let rep = run(r, "boot");
    let failed: Vec<_> = rep.failed_steps().map(|s| s.name.as_str()).collect();
    assert_eq!(failed, ["x", "y"]);
    assert!(
        matches!(&rep.steps[0].outcome, Outcome::Failed(m) if m.contains("x -> y -> x")),
        "{:?}",
        rep.steps[0]
    );
    // The others still ran.
    assert_eq!(
        rep.steps
            .iter()
            .filter(|s| s.outcome == Outcome::Ran)
            .count(),
        4
    );
    let strict = run_stage(
        "boot",
        &Sources::default(),
        &Options {
            strict: true,
            ..opts(r)
        },
    );
    assert!(strict.aborted);
    assert!(strict.steps.iter().all(|s| s.outcome != Outcome::Ran));
}

#[test]
fn strict_stops_at_the_first_failure() {
    let root = make_root();
    let r = root.path();
    cfg(
        r,
        "/oem/s.yaml",
        "stages:\n  boot:\n    - {name: one, commands: [touch /one]}\n    - {name: two, commands: [false]}\n    - {name: three, commands: [touch /three]}\n",
    );
    let rep = run(r, "boot");
    assert!(!rep.aborted && !rep.success());
    assert_eq!(rep.steps.len(), 3);
    assert!(r.join("three").exists());
    std::fs::remove_file(r.join("three")).unwrap();
    let rep = run_stage(
        "boot",
        &Sources::default(),
        &Options {
            strict: true,
            ..opts(r)
        },
    );
    assert!(rep.aborted);
    assert_eq!(rep.steps.len(), 2);
    assert!(!r.join("three").exists());
    // Malformed source: non-strict runs the rest, strict runs nothing.
    cfg(r, "/oem/zz-broken.yaml", "stages:\n  boot: [\n");
    std::fs::write(
        r.join("oem/s.yaml"),
        "stages:\n  boot:\n    - {name: ok, commands: [touch /ok]}\n",
    )
    .unwrap();
    let rep = run(r, "boot");
    assert_eq!(rep.errors.len(), 1);
    assert!(
        rep.errors[0].file.ends_with("oem/zz-broken.yaml") && rep.errors[0].line == 2,
        "{:?}",
        rep.errors
    );
    assert!(r.join("ok").exists());
    std::fs::remove_file(r.join("ok")).unwrap();
    let rep = run_stage(
        "boot",
        &Sources::default(),
        &Options {
            strict: true,
            ..opts(r)
        },
    );
    assert!(rep.aborted && rep.steps.is_empty());
    assert!(!r.join("ok").exists());
}

#[test]
fn before_and_after_phases_and_hook_stages() {
    let root = make_root();
    let r = root.path();
    cfg(
        r,
        "/oem/p.yaml",
        "stages:\n  boot.after:\n    - {name: late}\n  boot:\n    - {name: main}\n  boot.before:\n    - {name: early}\n  after-upgrade-chroot:\n    - {name: hook, commands: [touch /hooked]}\n",
    );
    let rep = run(r, "boot");
    let got: Vec<_> = rep
        .steps
        .iter()
        .map(|s| (s.stage.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("boot.before", "early"),
            ("boot", "main"),
            ("boot.after", "late")
        ]
    );
    assert_ok(&run(r, "after-upgrade-chroot"));
    assert!(r.join("hooked").exists());
    let json: serde_json::Value = serde_json::from_str(&rep.to_json()).unwrap();
    assert_eq!(json["steps"][0]["outcome"]["status"], "ran");
    assert_eq!(json["steps"][0]["stage"], "boot.before");
}

#[test]
fn dry_run_changes_nothing_and_lists_actions() {
    let root = make_root();
    let r = root.path();
    cfg(
        r,
        "/oem/d.yaml",
        "stages:\n  boot:\n    - name: all\n      if: \"false\"\n      files: [{path: /etc/x, content: x}]\n      directories: [{path: /d}]\n      commands: [touch /cmd]\n      hostname: dry\n      users: {eve: {passwd: pw}}\n      sysctl: {a.b: 1}\n      environment: {A: b}\n",
    );
    let before = hash_tree(r);
    let rep = run_stage(
        "boot",
        &Sources::default(),
        &Options {
            dry_run: true,
            ..opts(r)
        },
    );
    assert_ok(&rep);
    assert_eq!(hash_tree(r), before);
    let acts = [rep.steps[0].notes.clone(), rep.steps[0].actions.clone()]
        .concat()
        .join("\n");
    for want in [
        "would run the step only if",
        "would write /etc/x",
        "would create directory /d",
        "would run \"touch /cmd\"",
        "would write /etc/hostname",
        "would write /etc/passwd",
        "would create home /home/eve",
    ] {
        assert!(acts.contains(want), "missing {want:?} in:\n{acts}");
    }
}

/// A one-shot-per-connection HTTP server; `chunked` selects the transfer encoding.
fn serve(body: &'static str, chunked: bool) -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        for stream in l.incoming().take(4) {
            let mut s = stream.unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
            let resp = if path == "/redirect" {
                "HTTP/1.1 302 Found\r\nLocation: /file\r\nContent-Length: 0\r\n\r\n".to_string()
            } else if path == "/missing" {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string()
            } else if chunked {
                let (a, b) = body.split_at(body.len() / 2);
                format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                    a.len(),
                    b.len()
                )
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            };
            s.write_all(resp.as_bytes()).unwrap();
        }
    });
    (format!("http://{addr}"), h)
}

#[test]
fn downloads_over_http() {
    let root = make_root();
    let r = root.path();
    let (url, _h) = serve("payload\n", true);
    cfg(
        r,
        "/oem/dl.yaml",
        &format!(
            "stages:\n  boot:\n    - name: dl\n      downloads:\n        - {{path: /opt/p.txt, url: \"{url}/redirect\", permissions: 0600, owner: nobody}}\n    - name: dl-missing\n      downloads:\n        - {{path: /opt/m.txt, url: \"{url}/missing\"}}\n"
        ),
    );
    let rep = run(r, "boot");
    assert_eq!(read(r, "/opt/p.txt"), "payload\n");
    assert_eq!(mode_uid_gid(r, "/opt/p.txt"), (0o600, 65534, 0));
    assert_eq!(rep.steps[0].outcome, Outcome::Ran);
    assert!(
        matches!(&rep.steps[1].outcome, Outcome::Failed(m) if m.contains("404")),
        "{:?}",
        rep.steps[1]
    );
    assert!(!r.join("opt/m.txt").exists());
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(r.join("opt"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn sources_order_and_cmdline() {
    let root = make_root();
    let r = root.path();
    let step = |n: &str| format!("stages:\n  boot:\n    - {{name: {n}}}\n");
    cfg(r, "/usr/local/cloud-config/a.yaml", &step("persistent"));
    cfg(r, "/oem/b.yml", &step("oem-b"));
    cfg(r, "/oem/a.yaml", &step("oem-a"));
    cfg(r, "/oem/sub/0.yaml", &step("oem-sub"));
    cfg(r, "/oem/ignored.txt", &step("ignored"));
    cfg(r, "/system/oem/z.yaml", &step("system"));
    cfg(r, "/setup/x.yaml", &step("cmdline-path"));
    let (url, _h) = serve("#cloud-config\nruncmd: [touch /from-url]\n", false);
    let sources = Sources::default().with_cmdline(format!(
        "quiet cos.setup=/setup/x.yaml clb.setup={url}/user-data"
    ));
    let rep = run_stage("boot", &sources, &opts(r));
    assert_ok(&rep);
    let names: Vec<_> = rep.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "system",
            "oem-a",
            "oem-b",
            "oem-sub",
            "persistent",
            "cmdline-path",
            "cloud-config"
        ]
    );
    assert!(rep.steps[6].file.ends_with("/user-data"));
    assert!(r.join("from-url").exists());
    // An unreachable URL is a source error, not a crash.
    let bad = Sources::default().with_cmdline("cos.setup=http://127.0.0.1:1/x");
    let rep = run_stage("boot", &bad, &opts(r));
    assert_eq!(rep.errors.len(), 1, "{:?}", rep.errors);
}

#[test]
fn failed_steps_carry_typed_causes_each_printed_once() {
    let root = make_root();
    let r = root.path();
    // /etc/hostname is a file, so no directory can be made under it.
    cfg(
        r,
        "/oem/e.yaml",
        "stages:\n  boot:\n    - name: io\n      directories: [{path: /etc/hostname/sub}]\n      hostname: \"bad name\"\n    - name: cmd\n      commands: [\"echo gone >&2; exit 3\"]\n",
    );
    let rep = run(r, "boot");
    let io = &rep.steps[0];
    assert_eq!(io.errors.len(), 2, "{io:?}");
    assert_eq!(io.errors[0].part, "directories");
    match &io.errors[0].error {
        StepError::Io { action, source } => {
            assert_eq!(action, "create directory /etc/hostname/sub");
            assert_eq!(source.raw_os_error(), Some(20));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(io.errors[1].part, "hostname");
    assert!(matches!(io.errors[1].error, StepError::Invalid(_)));
    assert_eq!(
        io.outcome,
        Outcome::Failed(
            "directories: create directory /etc/hostname/sub: Not a directory (os error 20); \
             hostname: invalid hostname \"bad name\""
                .into()
        )
    );
    // A user's command: its status and last line of output, typed.
    let cmd = &rep.steps[1];
    match &cmd.errors[0].error {
        StepError::Script { status, output, .. } => {
            assert_eq!(status.code(), Some(3));
            assert_eq!(output, "gone");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        one_line(cmd.errors[0].as_ref()),
        "commands: \"echo gone >&2; exit 3\" failed (exit status: 3): gone"
    );
    // For callers that stop on a failed stage: the first failure, typed, its chain intact.
    let err = rep.check().unwrap_err();
    let file = r.join("oem/e.yaml").display().to_string();
    assert_eq!(err.to_string(), format!("stage boot: step \"io\" ({file})"));
    let part = std::error::Error::source(&err)
        .and_then(|e| e.downcast_ref::<PartError>())
        .unwrap();
    assert_eq!(part.part, "directories");
    common::assert_printed_once(&err);
    let line = one_line(&err);
    assert!(line.ends_with("create directory /etc/hostname/sub: Not a directory (os error 20)"));
    // JSON carries the rendered outcome only.
    let json: serde_json::Value = serde_json::from_str(&rep.to_json()).unwrap();
    assert!(json["steps"][0].get("errors").is_none());
}

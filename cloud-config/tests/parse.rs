//! Parsing: every key, `#cloud-config` mapping, error positions, unknown-key warnings.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clb_cloud_config::{Config, Filesystem, parse_str};

fn parse(text: &str) -> Config {
    match parse_str("t.yaml", text) {
        Ok(p) => {
            assert!(
                p.warnings.is_empty(),
                "unexpected warnings: {:?}",
                p.warnings
            );
            p.config
        }
        Err(d) => panic!("parse failed: {d}"),
    }
}

const EVERY_KEY: &str = r#"
name: everything
stages:
  boot:
    - name: all
      if: "true"
      node: "^node-[0-9]+$"
      only_os: debian
      only_os_version: "12"
      only_arch: x86_64
      if_files:
        any: [/a]
        all: [/b]
        none: [/c]
      after:
        - name: other
      dns:
        nameservers: [1.1.1.1, 8.8.8.8]
        search: [example.com]
        options: [rotate]
        path: /etc/resolv.conf
      downloads:
        - path: /opt/x
          url: http://127.0.0.1/x
          timeout: 5
          permissions: 0600
          owner: root
          group: 0
      directories:
        - path: /srv/d
          permissions: 0750
          owner: 1000
          group: users
      files:
        - path: /etc/f
          content: aGk=
          encoding: b64
          permissions: 420
          owner_string: "root:root"
      commands:
        - echo one
        - echo two
      hostname: host-1
      sysctl:
        net.ipv4.ip_forward: 1
        vm.swappiness: "10"
      users:
        alice:
          passwd: secret
          lock_passwd: false
          ssh_authorized_keys: [ssh-ed25519 AAAA alice]
          groups: [wheel, users]
          primary_group: alice
          shell: /bin/bash
          homedir: /home/alice
          uid: 1500
          gecos: Alice
          no_create_home: false
          system: false
      authorized_keys:
        root: [ssh-ed25519 BBBB root]
      modules: [br_netfilter, overlay]
      systemctl:
        enable: [a.service]
        disable: [b]
        start: [c]
        mask: [d]
        overrides:
          - service: e
            name: 10-x.conf
            content: "[Service]\nX=1\n"
      environment:
        FOO: bar
        N: 1
      environment_file: /etc/env
      timesyncd:
        NTP: pool.ntp.org
      datasource:
        providers: [cdrom, file]
        path: /oem/user-data
      layout:
        device:
          label: COS_OEM
          path: /dev/sda
        expand_partition:
          size: 0
        add_partitions:
          - fsLabel: COS_STATE
            size: 8192
            pLabel: state
            filesystem: ext4
"#;

#[test]
fn every_key_parses_without_warnings() {
    let c = parse(EVERY_KEY);
    assert_eq!(c.name, "everything");
    let s = &c.stages["boot"][0];
    assert_eq!(s.name, "all");
    assert_eq!(s.if_, "true");
    assert_eq!(s.node, "^node-[0-9]+$");
    assert_eq!(
        (
            s.only_os.as_str(),
            s.only_os_version.as_str(),
            s.only_arch.as_str()
        ),
        ("debian", "12", "x86_64")
    );
    assert_eq!(s.if_files.any, ["/a"]);
    assert_eq!(s.if_files.all, ["/b"]);
    assert_eq!(s.if_files.none, ["/c"]);
    assert_eq!(s.after[0].name, "other");
    assert_eq!(s.dns.nameservers, ["1.1.1.1", "8.8.8.8"]);
    assert_eq!(s.dns.options, ["rotate"]);
    assert_eq!(s.downloads[0].timeout, 5);
    assert_eq!(s.downloads[0].permissions, Some(0o600));
    assert_eq!(s.downloads[0].group.as_deref(), Some("0"));
    assert_eq!(s.directories[0].permissions, Some(0o750));
    assert_eq!(s.directories[0].owner.as_deref(), Some("1000"));
    // 420 decimal is 0644, like Go YAML reads it.
    assert_eq!(s.files[0].permissions, Some(0o644));
    assert_eq!(s.files[0].owner_string.as_deref(), Some("root:root"));
    assert_eq!(s.commands, ["echo one", "echo two"]);
    assert_eq!(s.hostname, "host-1");
    assert_eq!(s.sysctl["net.ipv4.ip_forward"], "1");
    let alice = &s.users["alice"];
    assert_eq!(alice.groups, ["wheel", "users"]);
    assert_eq!(alice.uid, Some(1500));
    assert_eq!(alice.shell, "/bin/bash");
    assert_eq!(s.authorized_keys["root"], ["ssh-ed25519 BBBB root"]);
    assert_eq!(s.modules, ["br_netfilter", "overlay"]);
    assert_eq!(s.systemctl.overrides[0].name, "10-x.conf");
    assert_eq!(s.environment["N"], "1");
    assert_eq!(s.environment_file, "/etc/env");
    assert_eq!(s.timesyncd["NTP"], "pool.ntp.org");
    assert_eq!(s.datasource.providers, ["cdrom", "file"]);
    let l = &s.layout;
    assert_eq!(l.device.as_ref().unwrap().label, "COS_OEM");
    assert_eq!(l.expand_partition.as_ref().unwrap().size, 0);
    assert_eq!(l.add_partitions[0].fs_label, "COS_STATE");
    assert_eq!(l.add_partitions[0].p_label, "state");
    assert_eq!(l.add_partitions[0].size, 8192);
}

#[test]
fn nulls_and_empty_are_defaults() {
    let c = parse("stages:\n  boot:\n    - commands:\n      files:\n      name:\n");
    let s = &c.stages["boot"][0];
    assert!(s.commands.is_empty() && s.files.is_empty() && s.name.is_empty());
    assert!(parse("").stages.is_empty());
    assert!(parse("# only a comment\n").stages.is_empty());
}

#[test]
fn modes_follow_go_yaml() {
    for (text, mode) in [
        ("0644", 0o644),
        ("0o755", 0o755),
        ("\"0600\"", 0o600),
        ("420", 0o644),
        ("0", 0),
    ] {
        let c = parse(&format!(
            "stages:\n  s:\n    - files:\n        - path: /x\n          permissions: {text}\n"
        ));
        assert_eq!(c.stages["s"][0].files[0].permissions, Some(mode), "{text}");
    }
    let e = parse_str(
        "m.yaml",
        "stages:\n  s:\n    - files:\n        - path: /x\n          permissions: 0999\n",
    )
    .unwrap_err();
    assert_eq!((e.line, e.column), (5, 24), "{e}");
    assert!(e.message.contains("invalid permissions"), "{e}");
}

#[test]
fn unknown_keys_warn_with_their_line() {
    let text = "name: x\nbogus: 1\nstages:\n  boot:\n    - name: a\n      comands: [ls]\n      files:\n        - path: /x\n          mode: 0644\n";
    let p = parse_str("w.yaml", text).unwrap();
    let got: Vec<(u64, u64, String)> = p
        .warnings
        .iter()
        .map(|w| (w.line, w.column, w.message.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (2, 1, "unknown key \"bogus\" ignored".to_string()),
            (
                6,
                7,
                "unknown key \"stages.boot[0].comands\" ignored".to_string()
            ),
            (
                9,
                11,
                "unknown key \"stages.boot[0].files[0].mode\" ignored".to_string()
            ),
        ]
    );
    assert_eq!(
        p.warnings[1].to_string(),
        "w.yaml:6:7: unknown key \"stages.boot[0].comands\" ignored"
    );
    // Free-form maps (sysctl, environment, users' names) have no unknown keys.
    parse(
        "stages:\n  boot:\n    - sysctl: {a.b: 1}\n      environment: {ANY: x}\n      users: {bob: {shell: /bin/sh}}\n",
    );
}

#[test]
fn malformed_yaml_reports_file_line_column() {
    let cases: &[(&str, u64, u64)] = &[
        ("stages:\n  boot: [1, 2\n", 2, 9),
        ("stages:\n  boot:\n    - name: a\n     commands: x\n", 4, 6),
        ("name: a: b\n", 1, 8),
        ("name: a\nname: b\n", 2, 1),
        ("stages:\n  boot:\n    - name: *nope\n", 3, 13),
        ("stages:\n\tboot: []\n", 2, 2),
        // Type errors point at the value.
        ("stages:\n  boot:\n    - commands: {a: b}\n", 3, 17),
        (
            "stages:\n  boot:\n    - layout:\n        expand_partition:\n          size: big\n",
            5,
            17,
        ),
        ("- just\n- a list\n", 1, 1),
        // An unknown filesystem is caught when parsing, not when the disk is laid out.
        (
            "stages:\n  rootfs:\n    - layout:\n        add_partitions:\n          - {fsLabel: X, filesystem: zfs}\n",
            5,
            38,
        ),
    ];
    for (text, line, column) in cases {
        match parse_str("bad.yaml", text) {
            Ok(_) => panic!("{text:?} parsed"),
            Err(d) => {
                assert_eq!(
                    (d.file.as_str(), d.line, d.column),
                    ("bad.yaml", *line, *column),
                    "{text:?}: {d}"
                );
                assert!(
                    d.to_string()
                        .starts_with(&format!("bad.yaml:{line}:{column}: ")),
                    "{d}"
                );
            }
        }
    }
}

#[test]
fn hostile_yaml_is_an_error_not_a_hang_or_crash() {
    // Deep nesting: beyond the depth budget.
    let deep = format!("name: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    let e = parse_str("deep.yaml", &deep).unwrap_err();
    assert!(e.line >= 1, "{e}");
    let deep_block: String = (0..500)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
        .collect();
    assert!(parse_str("deep2.yaml", &deep_block).is_err());
    // Billion laughs.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let prev = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
        ));
    }
    bomb.push_str("name: *a9\n");
    let start = std::time::Instant::now();
    let e = parse_str("bomb.yaml", &bomb).unwrap_err();
    assert!(start.elapsed().as_secs() < 10);
    assert!(e.line > 0, "{e}");
    // Binary garbage and invalid UTF-8 replaced text.
    assert!(parse_str("bin.yaml", "\u{0}\u{1}: [\u{7f}").is_err());
}

#[test]
fn cloud_config_maps_to_stages() {
    let text = "#cloud-config\nhostname: web-1\nruncmd:\n  - echo hi\nwrite_files:\n  - path: /etc/motd\n    content: hello\n    permissions: '0600'\n    owner: root:root\nusers:\n  - default\n  - name: bob\n    groups: [wheel, adm]\n    plain_text_passwd: pw\n    ssh_authorized_keys: [ssh-rsa KEY bob]\nssh_authorized_keys:\n  - ssh-rsa ROOTKEY\ngrowpart:\n  mode: auto\n  devices: [/dev/vda, /]\nstages:\n  network:\n    - commands: [true]\n";
    let p = parse_str("user-data", text).unwrap();
    // The "/" growpart device is not supported: a warning, not an error.
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    let c = p.config;
    let boot = &c.stages["boot"];
    assert_eq!(boot.len(), 2);
    let s = &boot[0];
    assert_eq!(s.commands, ["echo hi"]);
    assert_eq!(s.files[0].path, "/etc/motd");
    assert_eq!(s.files[0].permissions, Some(0o600));
    assert_eq!(s.files[0].owner.as_deref(), Some("root"));
    assert_eq!(s.files[0].group.as_deref(), Some("root"));
    assert_eq!(s.users["bob"].groups, ["wheel", "adm"]);
    assert_eq!(s.users["bob"].passwd, "pw");
    assert_eq!(s.users["bob"].ssh_authorized_keys, ["ssh-rsa KEY bob"]);
    assert_eq!(s.authorized_keys["root"], ["ssh-rsa ROOTKEY"]);
    let g = &boot[1];
    assert_eq!(g.layout.device.as_ref().unwrap().path, "/dev/vda");
    assert_eq!(g.layout.expand_partition.as_ref().unwrap().size, 0);
    assert_eq!(c.stages["initramfs"][0].hostname, "web-1");
    assert_eq!(c.stages["network"][0].commands, ["true"]);
    // An unknown cloud-init key warns with its line.
    let p = parse_str("ud", "#cloud-config\npackages: [vim]\n").unwrap();
    assert_eq!((p.warnings[0].line, p.warnings[0].column), (2, 1));
    // A comma-separated `groups` string: yip's cloud-config loader refuses it (Go `[]string`),
    // and so does clb, with the fix in the message.
    let e = parse_str(
        "ud",
        "#cloud-config\nusers:\n  - name: bob\n    groups: wheel, adm\n",
    )
    .unwrap_err();
    assert_eq!((e.line, e.column), (4, 13), "{e}");
    assert!(e.message.contains("write `groups: [name]`"), "{e}");
    // growpart off does nothing.
    let p = parse_str(
        "ud",
        "#cloud-config\ngrowpart: {mode: off, devices: [/dev/vda]}\n",
    )
    .unwrap();
    assert!(p.config.stages.is_empty());
}

#[test]
fn filesystems_take_yips_spellings() {
    let c = parse(
        "stages:\n  rootfs:\n    - layout:\n        add_partitions:\n          - {fsLabel: A, filesystem: FAT32}\n          - {fsLabel: B, filesystem: none}\n          - {fsLabel: C, filesystem: }\n          - {fsLabel: D}\n",
    );
    let fs: Vec<Filesystem> = c.stages["rootfs"][0]
        .layout
        .add_partitions
        .iter()
        .map(|p| p.filesystem)
        .collect();
    assert_eq!(
        fs,
        [
            Filesystem::Vfat,
            Filesystem::NoFormat,
            Filesystem::Ext4,
            Filesystem::Ext4
        ]
    );
    let err = parse_str(
        "bad.yaml",
        "stages:\n  rootfs:\n    - layout:\n        add_partitions:\n          - {fsLabel: X, filesystem: zfs}\n",
    )
    .unwrap_err();
    assert!(err.message.contains("unknown filesystem \"zfs\""), "{err}");
}

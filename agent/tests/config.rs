//! The daemon's configuration as an administrator writes it: `config.yaml` and `config.d`
//! drop-ins in a temporary directory, merged, warned about, refused, reloaded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use clb::config::{
    AgentConfig, ConfigError, ConfigHolder, FleetLockConfig, PeriodicConfig, StrategyKind,
    WindowConfig, load,
};

/// A configuration directory holding `files` (paths relative to it).
fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), files);
    dir
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

fn refused(files: &[(&str, &str)]) -> (tempfile::TempDir, ConfigError) {
    let dir = dir_with(files);
    let err = load(dir.path()).expect_err("the configuration should be refused");
    (dir, err)
}

/// Every key the file knows, each one set.
const FULL: &str = r#"image: registry.example.com/os/debian:stable
verify: true
keys: [/etc/clb/keys/release.pub]
signature_repository: registry.example.com/os/sigs
auth_file: /etc/clb/auth.json
insecure: false
ca_files: [/etc/clb/ca.pem]
strategy: periodic          # immediate | periodic | fleet_lock | coordinated
periodic:
  time_zone: Europe/Berlin
  windows:
    - { days: [Sat, Sun], start_time: "22:30", length_minutes: 60 }
fleet_lock:
  base_url: http://fleetlock.example:8080
  group: workers
  client_id: host-17
check_interval: 1h
check_jitter: 5m
max_tries: 3
hooks: false
admin_group: clb
"#;

#[test]
fn no_files_and_no_directory_give_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(dir.path()).unwrap();
    assert_eq!(loaded.config, AgentConfig::default());
    assert!(loaded.files.is_empty());
    assert!(loaded.warnings.is_empty());
    let loaded = load(&dir.path().join("missing")).unwrap();
    assert_eq!(loaded.config, AgentConfig::default());
    assert_eq!(loaded.config.check_interval, Duration::from_secs(3600));
}

#[test]
fn every_key_of_the_documented_example() {
    let dir = dir_with(&[("config.yaml", FULL)]);
    let loaded = load(dir.path()).unwrap();
    assert_eq!(loaded.warnings, vec![]);
    assert_eq!(loaded.files, vec![dir.path().join("config.yaml")]);
    let expected = AgentConfig {
        image: Some("registry.example.com/os/debian:stable".into()),
        keys: vec![PathBuf::from("/etc/clb/keys/release.pub")],
        verify: true,
        signature_repository: Some("registry.example.com/os/sigs".into()),
        auth_file: Some(PathBuf::from("/etc/clb/auth.json")),
        insecure: false,
        ca_files: vec![PathBuf::from("/etc/clb/ca.pem")],
        strategy: StrategyKind::Periodic,
        periodic: PeriodicConfig {
            time_zone: Some("Europe/Berlin".into()),
            windows: vec![WindowConfig {
                days: vec!["Sat".into(), "Sun".into()],
                start_time: "22:30".into(),
                length_minutes: 60,
            }],
        },
        fleet_lock: FleetLockConfig {
            base_url: Some("http://fleetlock.example:8080".into()),
            group: Some("workers".into()),
            client_id: Some("host-17".into()),
        },
        check_interval: Duration::from_secs(3600),
        check_jitter: Duration::from_secs(300),
        max_tries: Some(3),
        hooks: false,
        admin_group: Some("clb".into()),
    };
    assert_eq!(loaded.config, expected);
}

#[test]
fn drop_ins_override_in_lexical_order_and_other_names_are_ignored() {
    let broken = "this: [is not yaml\n";
    let dir = dir_with(&[
        (
            "config.yaml",
            "image: reg.example/os:a\ncheck_interval: 2h\nmax_tries: 3\nhooks: false\n",
        ),
        // Written before 10-a: the order comes from the names, not from the directory.
        ("config.d/20-b.yaml", "image: reg.example/os:c\n"),
        (
            "config.d/10-a.yaml",
            "image: reg.example/os:b\ncheck_jitter: 1m\n",
        ),
        // Upper case sorts before lower case (bytes), so this one is applied first.
        ("config.d/Z.yaml", "check_jitter: 7s\nmax_tries: 9\n"),
        ("config.d/README", broken),
        ("config.d/x.yml.bak", broken),
        ("config.d/30-c.yml", broken),
        ("config.d/.40-hidden.yaml", broken),
        ("config.d/50-dir.yaml/inner.yaml", broken),
    ]);
    let loaded = load(dir.path()).unwrap();
    let d = dir.path();
    assert_eq!(
        loaded.files,
        vec![
            d.join("config.yaml"),
            d.join("config.d/10-a.yaml"),
            d.join("config.d/20-b.yaml"),
            d.join("config.d/Z.yaml"),
        ]
    );
    let c = &loaded.config;
    assert_eq!(c.image.as_deref(), Some("reg.example/os:c"));
    assert_eq!(c.check_interval, Duration::from_secs(7200));
    assert_eq!(c.check_jitter, Duration::from_secs(7));
    assert_eq!(c.max_tries, Some(9));
    assert!(!c.hooks);
    assert!(c.verify, "untouched keys keep their defaults");
}

#[test]
fn sections_merge_key_by_key_and_lists_are_replaced() {
    let dir = dir_with(&[
        (
            "config.yaml",
            "keys: [/k/a.pub, /k/b.pub]\nperiodic:\n  time_zone: UTC\n  windows:\n    - {days: \
             [Mon], start_time: \"01:00\", length_minutes: 30}\n    - {days: [Tue], \
             start_time: \"02:00\", length_minutes: 30}\nfleet_lock:\n  base_url: \
             https://lock.example\n",
        ),
        (
            "config.d/10-site.yaml",
            "keys: [/k/c.pub]\nperiodic:\n  windows:\n    - days: [friday, SAT]\n      \
             start_time: 08:00\n      length_minutes: 120\nfleet_lock:\n  group: edge\n",
        ),
    ]);
    let c = load(dir.path()).unwrap().config;
    assert_eq!(c.keys, vec![PathBuf::from("/k/c.pub")]);
    assert_eq!(c.periodic.time_zone.as_deref(), Some("UTC"));
    assert_eq!(
        c.periodic.windows,
        vec![WindowConfig {
            days: vec!["Fri".into(), "Sat".into()],
            start_time: "08:00".into(),
            length_minutes: 120,
        }]
    );
    assert_eq!(
        c.fleet_lock.base_url.as_deref(),
        Some("https://lock.example")
    );
    assert_eq!(c.fleet_lock.group.as_deref(), Some("edge"));
}

#[test]
fn null_puts_the_default_back() {
    let dir = dir_with(&[
        ("config.yaml", FULL),
        (
            "config.d/90-reset.yaml",
            "image: ~\nmax_tries:\nverify: null\nstrategy: null\nperiodic: ~\nfleet_lock:\n  \
             group: ~\nkeys: []\ncheck_interval: ~\n",
        ),
    ]);
    let c = load(dir.path()).unwrap().config;
    assert_eq!(c.image, None);
    assert_eq!(c.max_tries, None);
    assert!(c.verify);
    assert_eq!(c.strategy, StrategyKind::Immediate);
    assert_eq!(c.periodic, PeriodicConfig::default());
    assert_eq!(c.fleet_lock.group, None);
    assert_eq!(c.fleet_lock.client_id.as_deref(), Some("host-17"));
    assert!(c.keys.is_empty());
    assert_eq!(c.check_interval, Duration::from_secs(3600));
    // Untouched by the drop-in.
    assert_eq!(c.admin_group.as_deref(), Some("clb"));
}

#[test]
fn unknown_keys_are_warnings_with_file_line_and_column() {
    let dir = dir_with(&[
        ("config.yaml", "image: reg.example/os:a\n"),
        (
            "config.d/10-typo.yaml",
            "# a comment\nhooks: true\nimgae: reg.example/os:b\nperiodic:\n  windowz: []\n  \
             windows:\n    - {days: [Sat], start_time: \"22:30\", length_minutes: 60, lenght: 5}\n",
        ),
    ]);
    let loaded = load(dir.path()).unwrap();
    let file = dir.path().join("config.d/10-typo.yaml");
    let shown: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        vec![
            format!("{}:3:1: unknown key \"imgae\" (ignored)", file.display()),
            format!(
                "{}:5:3: unknown key \"periodic.windowz\" (ignored)",
                file.display()
            ),
            format!(
                "{}:7:62: unknown key \"periodic.windows[0].lenght\" (ignored)",
                file.display()
            ),
        ]
    );
    assert_eq!(loaded.warnings[0].file, file);
    assert_eq!((loaded.warnings[0].line, loaded.warnings[0].column), (3, 1));
    // The rest of the file still applies; the unknown key changed nothing.
    assert_eq!(loaded.config.image.as_deref(), Some("reg.example/os:a"));
    assert_eq!(loaded.config.periodic.windows.len(), 1);
}

/// Each refusal: the text, where it must point, and words the message must hold.
#[test]
fn malformed_files_are_refused_with_file_line_and_column() {
    let cases: &[(&str, (u64, u64), &str)] = &[
        // YAML syntax.
        ("image: [a\n", (1, 8), "unclosed bracket"),
        ("hooks: true\nimage: \"open\n", (2, 8), "unclosed quote"),
        ("image: a\n  b: c\n", (2, 4), "not allowed"),
        ("image: a\nimage: b\n", (2, 1), "duplicate key \"image\""),
        ("image: a\n---\nimage: b\n", (3, 1), "one YAML document"),
        ("- image: a\n", (1, 1), "mapping"),
        // Types.
        ("max_tries: 3\nverify: maybe\n", (2, 9), "verify"),
        ("image: [a, b]\n", (1, 8), "image"),
        (
            "periodic:\n  windows: 5\n",
            (2, 12),
            "periodic.windows: expected a list",
        ),
        (
            "periodic:\n  windows:\n    - days: Sat\n",
            (3, 13),
            "periodic.windows[0].days",
        ),
        (
            "strategy: sometimes\n",
            (1, 11),
            "unknown variant `sometimes`",
        ),
        // Values.
        (
            "periodic:\n  windows:\n    - days: [Sat]\n      start_time: \"25:00\"\n      \
             length_minutes: 60\n",
            (4, 19),
            "periodic.windows[0].start_time: \"25:00\" is not a time of day",
        ),
        (
            "periodic:\n  windows:\n    - {days: [Sat], start_time: \"7:00\", length_minutes: 60}\n",
            (3, 33),
            "start_time",
        ),
        (
            "periodic:\n  windows:\n    - {days: [Sat, Funday], start_time: \"07:00\", \
             length_minutes: 60}\n",
            (3, 20),
            "\"Funday\" is not a weekday",
        ),
        (
            "periodic:\n  windows:\n    - {days: [], start_time: \"07:00\", length_minutes: 60}\n",
            (3, 14),
            "days: names no day",
        ),
        (
            "periodic:\n  windows:\n    - {days: [Sat], length_minutes: 60}\n",
            (3, 7),
            "start_time is missing",
        ),
        (
            "periodic:\n  windows:\n    - {days: [Sat], start_time: \"07:00\", length_minutes: 0}\n",
            (3, 58),
            "from 1 to 10080",
        ),
        (
            "periodic:\n  windows:\n    - {days: [Sat], start_time: \"07:00\", length_minutes: \
             10081}\n",
            (3, 58),
            "from 1 to 10080",
        ),
        (
            "periodic:\n  time_zone: \"\"\n",
            (2, 14),
            "must not be empty",
        ),
        (
            "max_tries: 0\n",
            (1, 12),
            "max_tries: \"0\" is not a whole number from 1 to 100",
        ),
        ("max_tries: 101\n", (1, 12), "from 1 to 100"),
        ("max_tries: many\n", (1, 12), "from 1 to 100"),
        ("check_interval: 0s\n", (1, 17), "at least 1 s"),
        ("check_interval: 1.5h\n", (1, 17), "not a duration"),
        ("check_jitter: soon\n", (1, 15), "check_jitter"),
        ("check_interval: 400d\n", (1, 17), "366 days"),
        ("image: \"\"\n", (1, 8), "image: must not be empty"),
        (
            "image: \"Not A Reference\"\n",
            (1, 8),
            "not an image reference",
        ),
        (
            "signature_repository: reg.example/sigs:v1\n",
            (1, 23),
            "without a tag",
        ),
        (
            "keys: [/etc/clb/a.pub, b.pub]\n",
            (1, 24),
            "keys[1]: \"b.pub\" is not an absolute path",
        ),
        ("auth_file: auth.json\n", (1, 12), "absolute"),
        ("fleet_lock:\n  base_url: ftp://lock\n", (2, 13), "http"),
        // A strategy without its settings points at the strategy.
        (
            "hooks: true\nstrategy: fleet_lock\n",
            (2, 11),
            "fleet_lock.base_url",
        ),
        ("strategy: periodic\n", (1, 11), "periodic.windows"),
    ];
    for (text, at, words) in cases {
        let (dir, err) = refused(&[("config.d/50-x.yaml", text)]);
        let file = dir.path().join("config.d/50-x.yaml");
        let shown = err.to_string();
        assert_eq!(err.path(), file, "{text:?}: {shown}");
        assert_eq!(err.location(), Some(*at), "{text:?}: {shown}");
        let prefix = format!("{}:{}:{}: ", file.display(), at.0, at.1);
        assert!(shown.starts_with(&prefix), "{text:?}: {shown}");
        assert!(shown.contains(words), "{text:?}: {shown}");
        assert!(!shown.contains('\n'), "{text:?}: {shown}");
        assert!(!shown.contains(" at line "), "position repeated: {shown}");
    }
}

#[test]
fn strategy_settings_may_come_from_another_file() {
    let dir = dir_with(&[
        ("config.yaml", "strategy: fleet_lock\n"),
        (
            "config.d/10-lock.yaml",
            "fleet_lock:\n  base_url: http://lock:8080\n",
        ),
    ]);
    let c = load(dir.path()).unwrap().config;
    assert_eq!(c.strategy, StrategyKind::FleetLock);
    // Without the second file, the error names the file that chose the strategy.
    std::fs::remove_file(dir.path().join("config.d/10-lock.yaml")).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert_eq!(err.path(), dir.path().join("config.yaml"));
    assert_eq!(err.location(), Some((1, 11)));
}

#[test]
fn empty_and_comment_only_files_change_nothing() {
    let dir = dir_with(&[
        ("config.yaml", ""),
        (
            "config.d/10-comments.yaml",
            "# nothing here yet\n\n# image: x\n",
        ),
        ("config.d/20-blank.yaml", "\n   \n"),
        ("config.d/30-doc.yaml", "---\n"),
    ]);
    let loaded = load(dir.path()).unwrap();
    assert_eq!(loaded.files.len(), 4);
    assert_eq!(loaded.config, AgentConfig::default());
    assert!(loaded.warnings.is_empty());
}

#[test]
fn reload_keeps_the_last_good_configuration() {
    let dir = dir_with(&[("config.yaml", "image: reg.example/os:a\nmax_tries: 3\n")]);
    let mut holder = ConfigHolder::open(dir.path()).unwrap();
    let good = holder.current().clone();
    assert_eq!(good.config.image.as_deref(), Some("reg.example/os:a"));

    write(
        dir.path(),
        &[(
            "config.d/10-new.yaml",
            "image: reg.example/os:b\nmax_tries: [\n",
        )],
    );
    let err = holder.reload().unwrap_err();
    assert_eq!(err.path(), dir.path().join("config.d/10-new.yaml"));
    assert_eq!(
        holder.current(),
        &good,
        "a failed reload changed the configuration"
    );

    write(
        dir.path(),
        &[("config.d/10-new.yaml", "image: reg.example/os:b\n")],
    );
    let reloaded = holder.reload().unwrap();
    assert_eq!(reloaded.config.image.as_deref(), Some("reg.example/os:b"));
    assert_eq!(reloaded.config.max_tries, Some(3));
    assert_eq!(holder.config().image.as_deref(), Some("reg.example/os:b"));

    // Starting from the defaults after a failed first load works the same way.
    let mut fallback = ConfigHolder::with_defaults(dir.path());
    assert_eq!(fallback.config(), &AgentConfig::default());
    assert_eq!(fallback.reload().unwrap().config.max_tries, Some(3));
}

#[test]
fn unreadable_files_are_refused_without_a_position() {
    // `config.d` that is not a directory.
    let dir = dir_with(&[("config.d", "image: a\n")]);
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, ConfigError::List { .. }), "{err}");
    assert_eq!(err.location(), None);
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!(
            "{}: cannot list",
            dir.path().join("config.d").display()
        )),
        "{shown}"
    );
    assert!(shown.contains("Not a directory"), "{shown}");

    // A dangling link named like a drop-in; a link to /dev/null masks its name.
    let dir = dir_with(&[]);
    std::fs::create_dir(dir.path().join("config.d")).unwrap();
    std::os::unix::fs::symlink("/dev/null", dir.path().join("config.d/10-masked.yaml")).unwrap();
    assert_eq!(load(dir.path()).unwrap().files, Vec::<PathBuf>::new());
    std::os::unix::fs::symlink("nowhere.yaml", dir.path().join("config.d/20-dangling.yaml"))
        .unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert_eq!(err.path(), dir.path().join("config.d/20-dangling.yaml"));

    // Not text, and too large.
    let (_dir, err) = refused(&[("config.yaml", "image: \u{0}\n")]);
    assert!(err.to_string().contains("config.yaml"), "{err}");
    let dir = dir_with(&[]);
    std::fs::write(dir.path().join("config.yaml"), b"image: \xff\n").unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("config.yaml: not UTF-8 text (invalid byte at offset 7)")
    );
    let big = format!("# {}\n", "x".repeat(2 << 20));
    let (_dir, err) = refused(&[("config.yaml", &big)]);
    assert!(err.to_string().contains("larger than 1024 KiB"), "{err}");
}

#[test]
fn hostile_nesting_is_refused_and_legitimate_depth_parses() {
    let deep = format!("extra: {}{}\n", "[".repeat(20), "]".repeat(20));
    let (_dir, err) = refused(&[("config.yaml", &deep)]);
    assert!(err.to_string().contains("nested deeper than 16"), "{err}");
    // The scanner's own limit stops this one earlier; refused with a place all the same.
    let deeper = format!("extra: {}{}\n", "[".repeat(5000), "]".repeat(5000));
    let (_dir, err) = refused(&[("config.yaml", &deeper)]);
    assert_eq!(err.location().map(|(line, _)| line), Some(1), "{err}");
    // Deep, inside the limit, under an unknown key: parsed (and warned about), on this test
    // thread's ordinary stack.
    let ok = format!("extra: {}1{}\n", "[".repeat(14), "]".repeat(14));
    let dir = dir_with(&[("config.yaml", &ok)]);
    assert_eq!(load(dir.path()).unwrap().warnings.len(), 1);
}

#[test]
fn config_errors_exit_with_invalid_input() {
    let (_dir, err) = refused(&[("config.yaml", "max_tries: 0\n")]);
    let clb_err = clb::ClbError::from(err);
    assert_eq!(clb_err.exit_code(), clb::error::exit::INVALID_INPUT);
    assert!(clb_err.to_string().contains("config.yaml:1:12: max_tries"));
}

/// The example of `docs/daemon.md` (its first two YAML blocks under "### Example") gives
/// what the page says it gives.
#[test]
fn the_documented_drop_in_example() {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/daemon.md"))
            .unwrap();
    let example = &page[page.find("### Example").unwrap()..];
    let blocks: Vec<&str> = example
        .split("```yaml\n")
        .skip(1)
        .map(|b| &b[..b.find("```").unwrap()])
        .take(2)
        .collect();
    assert_eq!(blocks.len(), 2);
    let dir = dir_with(&[
        ("config.yaml", blocks[0]),
        ("config.d/50-workers.yaml", blocks[1]),
    ]);
    let loaded = load(dir.path()).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example.com/os/debian:stable")
    );
    assert_eq!(c.strategy, StrategyKind::FleetLock);
    assert_eq!(c.fleet_lock.group.as_deref(), Some("workers"));
    assert_eq!(c.periodic.windows.len(), 1);
    assert_eq!(c.check_interval, Duration::from_secs(900));
    assert_eq!(c.check_jitter, Duration::from_secs(300));
    assert_eq!(c.max_tries, Some(3));
}

/// YAML anchors and merge keys are plain YAML: a window written once can be reused, and keys
/// merged in are not reported as unknown.
#[test]
fn anchors_and_merge_keys_reuse_a_window() {
    let dir = dir_with(&[(
        "config.yaml",
        "strategy: periodic\nperiodic:\n  windows:\n    - &night {days: [Sat], start_time: \
         \"22:30\", length_minutes: 60}\n    - <<: *night\n      days: [Sun]\n    - {<<: *night, \
         days: [Mon]}\n",
    )]);
    let loaded = load(dir.path()).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let windows = loaded.config.periodic.windows;
    assert_eq!(windows.len(), 3);
    assert_eq!(windows[1].days, vec!["Sun".to_string()]);
    assert_eq!(windows[2].days, vec!["Mon".to_string()]);
    assert_eq!(windows[2].length_minutes, 60);
    assert_eq!(windows[1].start_time, "22:30");
    assert_eq!(windows[1].length_minutes, 60);
}

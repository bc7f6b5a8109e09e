//! `datasource:` against metadata services written from each cloud's documentation
//! (`clb_testsupport::MetadataServer`, on 127.0.0.1), and against real config volumes (ISO
//! 9660 images on loop devices, found by label with `blkid`). Needs root and busybox-static,
//! genisoimage, util-linux (losetup, blkid, mount).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use clb_cloud_config::{Options, Outcome, Report, Sources};
use clb_testsupport::{Cloud, Instance, MetadataServer, hash_tree, require_tool};
use tempfile::TempDir;

const USER_DATA: &str = "#cloud-config\nhostname: from-user-data\n";
const KEY_A: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA1ajdslkfjlsdkjflsdkjfsldkfjsdlkfjsdlkfjsd a@x";
const KEY_B: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB2bjdslkfjlsdkjflsdkjfsldkfjsdlkfjsdlkfjsd b@y";

/// Network configuration as a cloud serves it (the tests only check it is kept as served).
const NETWORK: &[u8] = b"{\"links\": [{\"id\": \"eth0\", \"type\": \"phy\"}]}\n";

/// Every metadata cloud, in the order a config lists them.
const CLOUDS: [&str; 6] = [
    "aws",
    "gcp",
    "azure",
    "openstack",
    "hetzner",
    "digitalocean",
];

fn make_root() -> TempDir {
    let busybox = require_tool("busybox");
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    for d in ["etc", "bin", "root", "oem", "run"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(r.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(r.join("etc/hostname"), "old-name\n").unwrap();
    std::fs::copy(&busybox, r.join("bin/busybox")).unwrap();
    std::fs::set_permissions(
        r.join("bin/busybox"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for applet in ["sh", "echo", "cat"] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
    }
    dir
}

/// Runs `boot` with one step holding `datasource`, asking `endpoint` for metadata.
fn run_datasource(root: &Path, datasource: &str, endpoint: &str, dry_run: bool) -> Report {
    let file = root.join("oem/00_datasource.yaml");
    std::fs::write(
        &file,
        format!("stages:\n  boot:\n    - name: fetch\n      datasource: {datasource}\n"),
    )
    .unwrap();
    let report = clb_cloud_config::run_stage(
        "boot",
        &Sources::files(vec![file]),
        &Options {
            root: root.to_path_buf(),
            dry_run,
            metadata_endpoint: Some(endpoint.to_string()),
            ..Options::default()
        },
    );
    common::assert_report_printed_once(&report);
    report
}

fn step(report: &Report) -> &clb_cloud_config::StepOutcome {
    report.steps.iter().find(|s| s.name == "fetch").unwrap()
}

fn read(root: &Path, path: &str) -> String {
    std::fs::read_to_string(root.join(path.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The providers in a list where `last` comes after every other cloud.
fn others_first(last: &str) -> String {
    let mut list: Vec<&str> = CLOUDS.iter().copied().filter(|c| *c != last).collect();
    list.push(last);
    format!("[{}]", list.join(", "))
}

/// A port nothing listens on.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn every_cloud_answers_through_its_documented_api() {
    let clouds = [
        ("aws", Cloud::Aws { required: true }),
        ("aws", Cloud::AwsV1),
        ("gcp", Cloud::Gcp),
        ("azure", Cloud::Azure),
        ("openstack", Cloud::OpenStack),
        ("hetzner", Cloud::Hetzner),
        ("digitalocean", Cloud::DigitalOcean),
    ];
    for (name, cloud) in clouds {
        let server = MetadataServer::start(
            cloud,
            Instance {
                user_data: Some(USER_DATA.as_bytes().to_vec()),
                hostname: "node-a".to_string(),
                ssh_keys: vec![KEY_A.to_string(), KEY_B.to_string()],
                broken_keys: false,
                network: Some(NETWORK.to_vec()),
            },
        );
        let root = make_root();
        let r = root.path();
        let ds = format!(
            "{{providers: {}, path: /oem, userdata_name: 99_userdata.yaml}}",
            others_first(name)
        );
        let report = run_datasource(r, &ds, server.endpoint(), false);
        let fetch = step(&report);
        assert_eq!(fetch.outcome, Outcome::Ran, "{cloud:?}: {report:#?}");
        assert!(
            fetch.notes.contains(&format!("datasource {name} answered")),
            "{cloud:?}: {:?}",
            fetch.notes
        );
        assert_eq!(read(r, "/oem/userdata"), USER_DATA, "{cloud:?}");
        assert_eq!(read(r, "/oem/99_userdata.yaml"), USER_DATA, "{cloud:?}");
        // OpenStack's hostname is the FQDN of meta_data.json.
        let host = if cloud == Cloud::OpenStack {
            "node-a.novalocal"
        } else {
            "node-a"
        };
        assert_eq!(read(r, "/etc/hostname"), format!("{host}\n"), "{cloud:?}");
        assert_eq!(read(r, "/run/config/hostname"), host, "{cloud:?}");
        let keys = format!("{KEY_A}\n{KEY_B}\n");
        assert_eq!(
            read(r, "/run/config/ssh/authorized_keys"),
            keys,
            "{cloud:?}"
        );
        assert_eq!(read(r, "/root/.ssh/authorized_keys"), keys, "{cloud:?}");
        // Network configuration is kept where the provider has one.
        let network = match cloud {
            Cloud::OpenStack => Some("/run/config/network_data.json"),
            Cloud::Hetzner => Some("/run/config/network-config"),
            _ => None,
        };
        if let Some(file) = network {
            assert_eq!(read(r, file).as_bytes(), NETWORK, "{cloud:?}");
        }

        // The conversation the cloud's documentation asks for.
        let requests = server.requests();
        let ours: Vec<_> = match cloud {
            Cloud::Gcp => requests
                .iter()
                .filter(|q| q.path.starts_with("/computeMetadata/"))
                .collect(),
            Cloud::Azure => requests
                .iter()
                .filter(|q| q.path.starts_with("/metadata/instance"))
                .collect(),
            _ => requests.iter().collect(),
        };
        assert!(!ours.is_empty(), "{cloud:?}");
        for q in &ours {
            assert!(q.header("X-Forwarded-For").is_none(), "{q:?}");
            match cloud {
                Cloud::Gcp => assert_eq!(q.header("Metadata-Flavor"), Some("Google"), "{q:?}"),
                Cloud::Azure => {
                    assert_eq!(q.header("Metadata"), Some("true"), "{q:?}");
                    assert!(q.path.contains("api-version="), "{q:?}");
                }
                _ => {}
            }
        }
        let aws: Vec<_> = requests
            .iter()
            .filter(|q| q.path.starts_with("/latest/"))
            .collect();
        if let Cloud::Aws { .. } = cloud {
            let put = aws[0];
            assert_eq!(
                (put.method.as_str(), put.path.as_str()),
                ("PUT", "/latest/api/token")
            );
            let ttl: u32 = put
                .header("X-aws-ec2-metadata-token-ttl-seconds")
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=21600).contains(&ttl), "{put:?}");
            for get in &aws[1..] {
                assert!(get.header("X-aws-ec2-metadata-token").is_some(), "{get:?}");
            }
        }
        if cloud == Cloud::AwsV1 {
            // The refused token request is followed by plain IMDSv1 GETs.
            assert_eq!(aws[0].method, "PUT");
            assert!(
                aws[1..]
                    .iter()
                    .all(|q| q.header("X-aws-ec2-metadata-token").is_none())
            );
        }

        // A second run changes nothing.
        let before = hash_tree(r);
        let again = run_datasource(r, &ds, server.endpoint(), false);
        assert_eq!(step(&again).outcome, Outcome::Ran, "{cloud:?}");
        assert!(
            step(&again).actions.is_empty(),
            "{:?}",
            step(&again).actions
        );
        assert_eq!(
            hash_tree(r),
            before,
            "{cloud:?}: the second run changed the tree"
        );
        println!("{name} ({cloud:?}): {} requests", requests.len());
    }
}

#[test]
fn no_user_data_is_not_an_error_and_the_default_path_is_run_config() {
    for cloud in [
        Cloud::Aws { required: true },
        Cloud::Gcp,
        Cloud::OpenStack,
        Cloud::DigitalOcean,
    ] {
        let server = MetadataServer::start(
            cloud,
            Instance {
                hostname: "bare".to_string(),
                ..Instance::default()
            },
        );
        let root = make_root();
        let r = root.path();
        let report = run_datasource(
            r,
            &format!("{{providers: {}}}", others_first("aws")),
            server.endpoint(),
            false,
        );
        assert_eq!(
            step(&report).outcome,
            Outcome::Ran,
            "{cloud:?}: {report:#?}"
        );
        assert!(!r.join("run/config/userdata").exists(), "{cloud:?}");
        assert!(!r.join("oem/userdata").exists(), "{cloud:?}");
        let host = if cloud == Cloud::OpenStack {
            "bare.novalocal\n"
        } else {
            "bare\n"
        };
        assert_eq!(read(r, "/etc/hostname"), host, "{cloud:?}");
        assert!(!r.join("root/.ssh/authorized_keys").exists(), "{cloud:?}");
    }
    // With user data and no path, it lands in /run/config.
    let server = MetadataServer::start(
        Cloud::Hetzner,
        Instance {
            user_data: Some(USER_DATA.as_bytes().to_vec()),
            hostname: "h".to_string(),
            ..Instance::default()
        },
    );
    let root = make_root();
    let r = root.path();
    let report = run_datasource(r, "{providers: [hetzner]}", server.endpoint(), false);
    assert_eq!(step(&report).outcome, Outcome::Ran, "{report:#?}");
    assert_eq!(read(r, "/run/config/userdata"), USER_DATA);
    assert_eq!(read(r, "/run/config/userdata.yaml"), USER_DATA);
}

/// Runs a config that must fail and checks that it changed nothing; the step's one-line
/// error and how long the step took.
fn failing(root: &Path, ds: &str, endpoint: &str) -> (String, Duration) {
    let config = root.join("oem/00_datasource.yaml");
    let _ = std::fs::remove_file(&config);
    let before = hash_tree(root);
    let started = Instant::now();
    let report = run_datasource(root, ds, endpoint, false);
    let took = started.elapsed();
    let Outcome::Failed(why) = &step(&report).outcome else {
        panic!("{ds} should fail: {report:#?}");
    };
    std::fs::remove_file(&config).unwrap();
    assert_eq!(
        hash_tree(root),
        before,
        "{ds}: a failed datasource changed the tree"
    );
    (why.clone(), took)
}

#[test]
fn absent_hanging_and_garbage_services_fail_with_every_reason_and_change_nothing() {
    let root = make_root();
    let r = root.path();
    let all = format!("{{providers: [{}], path: /oem}}", CLOUDS.join(", "));

    // Nothing listens: one refused connection answers for all six clouds.
    let (why, took) = failing(r, &all, &closed_port());
    assert!(
        why.starts_with("datasource: no datasource answered (aws: connect to 127.0.0.1:"),
        "{why}"
    );
    for cloud in CLOUDS {
        assert!(why.contains(&format!("{cloud}: connect to")), "{why}");
    }
    println!("absent service, six providers: {took:?}");

    // A service that accepts and never answers: each cloud's first request times out.
    let hang = MetadataServer::start(Cloud::Hang, Instance::default());
    let (why, took) = failing(r, "{providers: [aws, gcp], path: /oem}", hang.endpoint());
    assert!(why.contains("aws: ") && why.contains("gcp: "), "{why}");
    assert!(
        why.contains("timed out") || why.contains("Resource temporarily unavailable"),
        "{why}"
    );
    assert!(
        took < Duration::from_secs(30),
        "a hanging service must not hang the step: {took:?}"
    );
    println!("hanging service, two providers: {took:?}");

    // Bytes that are not HTTP: not a metadata service.
    let garbage = MetadataServer::start(Cloud::Garbage, Instance::default());
    let (why, _) = failing(r, &all, garbage.endpoint());
    assert!(why.contains("bad status line"), "{why}");

    assert!(!r.join("oem/userdata").exists());
    assert_eq!(read(r, "/etc/hostname"), "old-name\n");
}

#[test]
fn a_cloud_with_a_malformed_answer_is_reported_and_the_next_provider_tried() {
    for cloud in [
        Cloud::Hetzner,
        Cloud::Azure,
        Cloud::OpenStack,
        Cloud::Aws { required: false },
    ] {
        let name = match cloud {
            Cloud::Hetzner => "hetzner",
            Cloud::Azure => "azure",
            Cloud::OpenStack => "openstack",
            _ => "aws",
        };
        let server = MetadataServer::start(
            cloud,
            Instance {
                user_data: Some(USER_DATA.as_bytes().to_vec()),
                hostname: "h".to_string(),
                ssh_keys: vec![KEY_A.to_string()],
                broken_keys: true,
                network: None,
            },
        );
        let root = make_root();
        let r = root.path();
        // Alone, the broken cloud fails the step with its own reason.
        let (why, _) = failing(
            r,
            &format!("{{providers: [{name}], path: /oem}}"),
            server.endpoint(),
        );
        assert!(why.contains(&format!("): {name}: ")), "{cloud:?}: {why}");
        assert!(!r.join("oem/userdata").exists(), "{cloud:?}");
        // Followed by a provider that answers (a file in the root), that one wins.
        std::fs::write(r.join("oem/seed.yaml"), USER_DATA).unwrap();
        let report = run_datasource(
            r,
            &format!("{{providers: [{name}, file], path: /oem/seed.yaml}}"),
            server.endpoint(),
            false,
        );
        assert_eq!(
            step(&report).outcome,
            Outcome::Ran,
            "{cloud:?}: {report:#?}"
        );
        assert!(
            step(&report)
                .notes
                .contains(&"datasource file answered".to_string())
        );
        // yip: the file provider's data goes to the default directory.
        assert_eq!(read(r, "/run/config/userdata.yaml"), USER_DATA);
    }
}

#[test]
fn a_script_is_run_and_a_dry_run_asks_nothing() {
    let script = "#!/bin/sh\necho \"ran as a script\" > /script-ran\n";
    let server = MetadataServer::start(
        Cloud::DigitalOcean,
        Instance {
            user_data: Some(script.as_bytes().to_vec()),
            hostname: "s".to_string(),
            ..Instance::default()
        },
    );
    let root = make_root();
    let r = root.path();
    let before = hash_tree(r);
    let dry = run_datasource(
        r,
        "{providers: [digitalocean], path: /oem}",
        server.endpoint(),
        true,
    );
    assert_eq!(
        step(&dry).actions,
        ["would query the datasources digitalocean"],
        "{dry:#?}"
    );
    assert!(server.requests().is_empty(), "a dry run sent requests");
    std::fs::remove_file(r.join("oem/00_datasource.yaml")).unwrap();
    assert_eq!(hash_tree(r), before);

    let report = run_datasource(
        r,
        "{providers: [digitalocean], path: /oem}",
        server.endpoint(),
        false,
    );
    assert_eq!(step(&report).outcome, Outcome::Ran, "{report:#?}");
    assert_eq!(read(r, "/script-ran"), "ran as a script\n");
    let mode = std::fs::metadata(r.join("oem/userdata"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o744);
    assert!(!r.join("oem/userdata.yaml").exists());
}

/// A filesystem image labelled `label` holding `files`, attached to a loop device until
/// drop. ext4: the kernels this runs on may lack iso9660 and vfat (clb mounts whatever
/// filesystem the labelled volume has; the QEMU cloud test reads a real ISO 9660 CD).
struct Volume {
    device: String,
    _dir: TempDir,
}

impl Volume {
    fn new(label: &str, files: &[(&str, &str)]) -> Self {
        require_tool("mkfs.ext4");
        let dir = tempfile::tempdir().unwrap();
        let content = dir.path().join("content");
        std::fs::create_dir_all(&content).unwrap();
        for (path, text) in files {
            let p = content.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let image = dir.path().join("volume.img");
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", label, "-d"])
            .arg(&content)
            .arg(&image)
            .arg("4M"));
        let device = run(Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(&image));
        Volume { device, _dir: dir }
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The volume providers, one at a time (each label must be unique on the machine while it is
/// looked up, so they are not separate tests running in parallel).
#[test]
fn config_volumes_nocloud_and_config_drive() {
    let nobody = closed_port();

    let cidata = Volume::new(
        "cidata",
        &[
            ("user-data", USER_DATA),
            (
                "meta-data",
                &format!(
                    "instance-id: i-1\nlocal-hostname: from-cidata\npublic-keys:\n  - {KEY_A}\n"
                ),
            ),
            (
                "network-config",
                "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n",
            ),
        ],
    );
    let root = make_root();
    let r = root.path();
    let report = run_datasource(r, "{providers: [cdrom, aws], path: /oem}", &nobody, false);
    assert_eq!(step(&report).outcome, Outcome::Ran, "{report:#?}");
    assert!(
        step(&report)
            .notes
            .contains(&"datasource cdrom answered".to_string())
    );
    assert_eq!(read(r, "/oem/userdata.yaml"), USER_DATA);
    assert_eq!(read(r, "/etc/hostname"), "from-cidata\n");
    assert_eq!(read(r, "/root/.ssh/authorized_keys"), format!("{KEY_A}\n"));
    assert_eq!(
        read(r, "/run/config/network-config"),
        "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"
    );
    drop(cidata);
    assert!(
        !mounted_under("/run/clb/datasource"),
        "a volume stayed mounted"
    );

    let meta = serde_json::json!({
        "uuid": "83679162-1378-4288-a2d4-70e13ec132aa",
        "hostname": "from-config-drive",
        "public_keys": {"mykey": KEY_B}
    })
    .to_string();
    let drive = Volume::new(
        "config-2",
        &[
            ("openstack/latest/meta_data.json", &meta),
            ("openstack/latest/user_data", USER_DATA),
            ("openstack/latest/network_data.json", "{\"links\": []}\n"),
        ],
    );
    let root = make_root();
    let r = root.path();
    let report = run_datasource(
        r,
        "{providers: [cdrom, config-drive], path: /oem}",
        &nobody,
        false,
    );
    assert_eq!(step(&report).outcome, Outcome::Ran, "{report:#?}");
    assert!(
        step(&report)
            .notes
            .contains(&"datasource config-drive answered".to_string()),
        "{:?}",
        step(&report).notes
    );
    assert_eq!(read(r, "/oem/userdata.yaml"), USER_DATA);
    assert_eq!(read(r, "/etc/hostname"), "from-config-drive\n");
    assert_eq!(read(r, "/root/.ssh/authorized_keys"), format!("{KEY_B}\n"));
    assert_eq!(
        read(r, "/run/config/network_data.json"),
        "{\"links\": []}\n"
    );
    drop(drive);

    // No volume at all: both are absent, by name.
    let root = make_root();
    let (why, _) = failing(root.path(), "{providers: [cdrom, config-drive]}", &nobody);
    assert!(
        why.contains("cdrom: no volume labelled cidata; config-drive: no volume labelled config-2"),
        "{why}"
    );
}

fn mounted_under(dir: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|m| m.starts_with(dir))
        })
}

/// A provider clb does not implement (yip's vultr) is skipped with a note; the next is asked.
#[test]
fn an_unsupported_provider_is_skipped_with_a_note() {
    let root = make_root();
    let r = root.path();
    std::fs::write(r.join("oem/seed.yaml"), USER_DATA).unwrap();
    let report = run_datasource(
        r,
        "{providers: [vultr, file], path: /oem/seed.yaml}",
        &closed_port(),
        false,
    );
    let fetch = step(&report);
    assert_eq!(fetch.outcome, Outcome::Ran, "{report:#?}");
    assert!(
        fetch.notes.contains(
            &"datasource provider \"vultr\" is not supported by clb: skipped".to_string()
        ),
        "{:?}",
        fetch.notes
    );
    assert_eq!(read(r, "/run/config/userdata.yaml"), USER_DATA);
}

//! The real Debian 12 of the OS recipe upgrades itself: `clb.service` (`clb daemon`, the unit
//! the .deb ships, enabled in the release layer) follows `debian:latest` on the test registry
//! with the `immediate` strategy, in QEMU (TCG, OVMF, 2 GiB), in one QEMU run.
//!
//! Every release layer carries `/etc/clb/config.yaml` (the image `10.0.2.100:80/debian:latest`,
//! plain HTTP, the cosign key, `strategy: immediate`, a 20 s interval, no jitter), the public
//! key, a static address for systemd-networkd, the persistent journal and two test units: a
//! report that prints one `CLB-DEBIAN ...` line after `clb-mark-good.service` ran, and a
//! journal follower that copies clb.service's journal to the serial console as it goes
//! (`CLB-DAEMON ...`, a live view only: it may miss the last lines before a reboot). The guest
//! reaches the registry only through QEMU user networking with `restrict=on` and a guestfwd of
//! 10.0.2.100:80 to the registry on 127.0.0.1.
//!
//! v1 is published as `debian:v1` and tagged `latest`; v2 (another release layer:
//! `/etc/clb-release` says v2) as `debian:v2`, signed with `clb sign`. v1 is deployed with
//! `clb deploy` while v2 is already `latest`. The daemon waits until v1's boot is committed
//! (health check passed, mark-good ran: `/run/clb/boot_committed`), so v1's report appears
//! first; then the daemon resolves v2, verifies the
//! signature, downloads v2's release layer (base and kernel are shared), stages slot b and
//! reboots through logind. v1's report never powers off by itself: it waits for that reboot
//! (after 300 s it dumps the journals and powers off, so a stuck daemon fails fast). v2 boots
//! from slot b, is marked good, its daemon finds `latest` up to date, and v2's report dumps the
//! daemon's and mark-good's journals of both boots (persistent journal) and powers off. The
//! test checks the order of v1's daemon messages, the registry's access log (the followed tag,
//! v2's signature, only small blobs) and, offline, `clb --disk status`: slot b active and good.
//!
//! This is also the regression test for a daemon that acted during a boot whose health was
//! not yet known (it used to stage and reboot before the health check and mark-good ran).
//!
//! Needs root, qemu-system-x86, ovmf, debootstrap (and the Debian archive apt uses), grub-efi,
//! mtools, squashfs-tools-ng, docker-registry, busybox, dpkg-dev. Missing ones fail the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clb_testsupport::{Registry, require_tool};
use clb_vm_tests::qemu::{Qemu, require_uefi_boot, restricted_net_args};
use clb_vm_tests::{clb, debian, kit};

use super::{files, get, line_with};

/// v1's boot, the daemon's upgrade and v2's boot, under TCG, generously.
const RUN: Duration = Duration::from_secs(900);

/// Where the guest finds the registry: `restricted_net_args` forwards 10.0.2.100:80.
const GUEST_REGISTRY: &str = "10.0.2.100:80";

/// The report: after `clb-mark-good.service` (Requires=, so an unhealthy boot reports
/// nothing). DefaultDependencies=no: multi-user.target wants it, and an implicit After= would
/// close a cycle through the health check (which runs after the default target).
const REPORT_UNIT: &str = "[Unit]
Description=clb test: report this boot on the serial console
DefaultDependencies=no
Requires=clb-mark-good.service
After=clb-mark-good.service

[Service]
Type=oneshot
ExecStart=/usr/lib/clb-test/report
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
";

/// v1 reports and waits for the daemon's reboot (its stop is the reboot); after 300 s it dumps
/// this boot's journal of the daemon, mark-good and logind and powers off, so a stuck daemon
/// fails the test fast. Any later release reports, waits for its daemon's first check ("up to
/// date"), dumps the daemon's and mark-good's journal of the previous boot (the persistent
/// journal) and of this one, and powers off.
const REPORT: &str = r#"#!/bin/sh
say() { echo "$*" > /dev/ttyS0; }
# journal BOOT UNIT PREFIX: the unit's messages of that boot on the console, one PREFIX line each.
journal() {
  journalctl -b "$1" --no-pager -o cat -u "$2" 2>&1 | sed "s/^/$3 /" > /dev/ttyS0
}
release=$(cat /etc/clb-release)
slot=$(cat /run/clb/booted_slot)
mode=none
for m in active passive recovery; do [ -e /run/clb/${m}_mode ] && mode=$m; done
say "CLB-DEBIAN release=$release slot=$slot mode=$mode mark_good=$(systemctl is-active clb-mark-good.service) daemon=$(systemctl is-active clb.service) health=$(systemctl is-active clb-health-check.service)"
if [ "$release" = v1 ]; then
  sleep 300
  say "CLB-DEBIAN-TIMEOUT release=$release: the daemon did not reboot the machine in 300 s"
  journal 0 clb.service CLB-NOW-DAEMON
  journal 0 clb-mark-good.service CLB-NOW-MARKGOOD
  journal 0 systemd-logind.service CLB-NOW-LOGIND
  systemctl --no-block poweroff
  exit 0
fi
i=0
until journalctl -b --no-pager -o cat -u clb.service | grep -q 'up to date'; do
  i=$((i + 1))
  [ $i -gt 120 ] && break
  sleep 2
done
uptodate=no
journalctl -b --no-pager -o cat -u clb.service | grep -q 'up to date' && uptodate=yes
say "CLB-DEBIAN-SETTLED release=$release uptodate=$uptodate daemon=$(systemctl is-active clb.service) boots=$(journalctl --list-boots --no-pager -q | wc -l)"
journal -1 clb.service CLB-PREV-DAEMON
journal -1 clb-mark-good.service CLB-PREV-MARKGOOD
journal 0 clb.service CLB-NOW-DAEMON
journal 0 clb-mark-good.service CLB-NOW-MARKGOOD
say "CLB-DEBIAN-END"
systemctl --no-block poweroff
"#;

/// clb.service's journal on the serial console as it is written, one `CLB-DAEMON` line per
/// entry (its own messages and systemd's about the unit). For watching a run; the checks read
/// the journals v2's report dumps.
const FOLLOW_UNIT: &str = "[Unit]
Description=clb test: clb.service's journal on the serial console
DefaultDependencies=no
After=systemd-journald.service systemd-journal-flush.service
Before=clb.service

[Service]
ExecStart=/bin/sh -c 'journalctl -b -f -n all --no-pager -o cat -u clb.service | sed -u \"s/^/CLB-DAEMON /\" > /dev/ttyS0'

[Install]
WantedBy=multi-user.target
";

/// A static address on the first Ethernet link: QEMU user networking's 10.0.2.0/24, where
/// the registry is 10.0.2.100 (no route beyond: `restrict=on`).
const NETWORK: &str = "[Match]
Name=en* eth*

[Network]
Address=10.0.2.15/24
LinkLocalAddressing=no
IPv6AcceptRA=no
";

/// The daemon's configuration: follow `image`, verified with the key shipped next to it.
fn config_yaml(image: &str) -> String {
    format!(
        "# clb test: follow the test registry, reboot as soon as an update is staged.\n\
         image: {image}\n\
         insecure: true\n\
         verify: true\n\
         keys: [/etc/clb/cosign.pub]\n\
         strategy: immediate\n\
         check_interval: 20s\n\
         check_jitter: 0s\n"
    )
}

/// Every release's extra files: the daemon's configuration and key, the network, the units.
fn release_files(work: &Path, image: &str, public_key: &str) -> PathBuf {
    let config = config_yaml(image);
    files(
        work,
        "files-daemon",
        &[
            ("etc/clb/config.yaml", &config, 0o644),
            ("etc/clb/cosign.pub", public_key, 0o644),
            ("etc/systemd/network/50-clb-test.network", NETWORK, 0o644),
            (
                "etc/systemd/system/clb-test-report.service",
                REPORT_UNIT,
                0o644,
            ),
            ("usr/lib/clb-test/report", REPORT, 0o755),
            (
                "etc/systemd/system/clb-test-follow.service",
                FOLLOW_UNIT,
                0o644,
            ),
            (
                "etc/systemd/journald.conf.d/clb-test.conf",
                "[Journal]\nStorage=persistent\n",
                0o644,
            ),
        ],
    )
}

/// The units every release enables.
const ENABLE: &[&str] = &[
    "clb.service",
    "systemd-networkd.service",
    "clb-test-report.service",
    "clb-test-follow.service",
];

/// `clb ARGS...` with an empty cosign password; panics with its output when it fails.
fn clb_cmd(clb: &Path, dir: &Path, args: &[&str]) {
    let out = Command::new(clb)
        .args(args)
        .current_dir(dir)
        .env("COSIGN_PASSWORD", "")
        .output()
        .expect("run clb");
    assert!(
        out.status.success(),
        "clb {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The position of the first console line containing `needle`; panics with the console when
/// there is none.
fn pos(console: &str, needle: &str) -> usize {
    console
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not on the console:\n{console}"))
}

/// Points `repo:to` at the manifest `repo:from` points at (the registry API: GET, then PUT
/// the same bytes), the way a release process moves a channel tag.
fn retag(reg: &Registry, repo: &str, from: &str, to: &str) {
    let accept = "application/vnd.oci.image.manifest.v1+json, \
                  application/vnd.docker.distribution.manifest.v2+json";
    let got = reg
        .request(
            "GET",
            &format!("/v2/{repo}/manifests/{from}"),
            &[("Accept", accept)],
            &[],
        )
        .unwrap();
    assert_eq!(got.status, 200, "GET {repo}:{from}: {}", got.text());
    let media_type = got.header("Content-Type").unwrap().to_string();
    reg.push_manifest(repo, to, &media_type, &got.body)
        .unwrap_or_else(|e| panic!("tag {repo}:{to}: {e}"));
}

/// Waits until `file` holds `needle` (true) or `done` says the VM has stopped (false).
fn wait_for(file: &Path, needle: &str, done: &dyn Fn() -> bool) -> bool {
    loop {
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap_or_default()).into_owned();
        if text.contains(needle) {
            return true;
        }
        if done() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The console lines with `prefix` (the prefix and one space removed).
fn lines_with<'a>(console: &'a str, prefix: &str) -> Vec<&'a str> {
    let p = format!("{prefix} ");
    console
        .lines()
        .filter_map(|l| l.find(&p).map(|i| &l[i + p.len()..]))
        .collect()
}

#[test]
fn debian_daemon_upgrades_itself_immediately() {
    require_uefi_boot();
    require_tool("debootstrap");
    require_tool("busybox");
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let kit = kit::prepare(work);
    let reg = Registry::start_plain();
    let recipe = debian::Recipe::prepare(work);
    let prepared = started.elapsed();

    // The signing key: v2 is signed with it, every release trusts its public half.
    clb_cmd(&kit.clb, work, &["keygen", "--output-key-prefix", "cosign"]);
    let public_key = std::fs::read_to_string(work.join("cosign.pub")).unwrap();
    let followed = format!("{GUEST_REGISTRY}/debian:latest");
    let extra = release_files(work, &followed, &public_key);

    // v1 is deployed; v2 is published, signed and already `latest` when v1 boots: the daemon
    // must still wait until v1's boot is committed before it upgrades.
    let v1 = recipe.publish(&reg, "v1", &[&extra], ENABLE);
    let v2 = recipe.publish_as(&reg, "debian:v2", "v2", &[&extra], ENABLE);
    let v2_image = v2.image.clone().unwrap();
    let v2_digest = v2.digest.clone().expect("the recipe printed the digest");
    clb_cmd(
        &kit.clb,
        work,
        &["sign", "--insecure", "--key", "cosign.key", &v2_image],
    );
    retag(&reg, "debian", "v2", "latest");
    let disk = work.join("disk.img");
    clb::deploy_bootable(
        &kit,
        &disk,
        &v1,
        2300,
        &[
            "--esp-size",
            "32",
            "--state-size",
            "1600",
            "--max-tries",
            "2",
        ],
    );
    let published = started.elapsed();

    // One QEMU run: v1 boots and reports; `latest` moves to v2; the daemon upgrades and
    // reboots; v2 boots, settles and powers off.
    let marker = reg.clear_log_marker();
    let vm = {
        let (disk, work, net) = (
            disk.clone(),
            work.to_path_buf(),
            restricted_net_args(reg.port()),
        );
        std::thread::spawn(move || {
            Qemu::new()
                .uefi()
                .memory(2048)
                .disk(&disk)
                .rebooting()
                .args(net)
                .boot(&work, "debian-daemon", RUN)
        })
    };
    let console_file = work.join("console-debian-daemon.log");
    wait_for(&console_file, "CLB-DEBIAN release=v1", &|| vm.is_finished());
    let moved = Instant::now();
    let boot = vm.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    let after_move = moved.elapsed();
    let c = boot.console;
    eprintln!(
        "---- reports and journals ----\n{}",
        c.lines()
            .filter(|l| l.contains("CLB-"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !c.contains("CLB-DEBIAN-TIMEOUT"),
        "the daemon never rebooted v1:\n{c}"
    );

    // v1 booted from slot a, its health check passed and mark-good committed it.
    let r1 = line_with(&c, "CLB-DEBIAN release=v1");
    assert_eq!(
        (
            get(&r1, "slot"),
            get(&r1, "mode"),
            get(&r1, "health"),
            get(&r1, "mark_good"),
            get(&r1, "daemon")
        ),
        ("a", "active", "active", "active", "active"),
        "{c}"
    );

    // Two boots through GRUB, a then b, each assembled by the image's own initrd.
    assert_eq!(c.matches("clb-grub: booting slot a from").count(), 1, "{c}");
    assert_eq!(c.matches("clb-grub: booting slot b from").count(), 1, "{c}");
    assert!(
        pos(&c, "clb-initrd: assembled slot a") < pos(&c, "CLB-DEBIAN release=v1")
            && pos(&c, "CLB-DEBIAN release=v1") < pos(&c, "clb-initrd: assembled slot b"),
        "{c}"
    );

    // v2 booted from slot b, was marked good, and its daemon finds `latest` up to date.
    let r2 = line_with(&c, "CLB-DEBIAN release=v2");
    assert_eq!(
        (
            get(&r2, "slot"),
            get(&r2, "mode"),
            get(&r2, "health"),
            get(&r2, "mark_good"),
            get(&r2, "daemon")
        ),
        ("b", "active", "active", "active", "active"),
        "{c}"
    );
    let settled = line_with(&c, "CLB-DEBIAN-SETTLED release=v2");
    assert_eq!(get(&settled, "uptodate"), "yes", "{c}");
    assert!(c.contains("CLB-DEBIAN-END"), "v2 dumped the journals:\n{c}");

    // v1's daemon, from the persistent journal: v2 was found under `latest`, verified with
    // the shipped key, downloaded (one layer), staged in slot b, and the machine rebooted
    // through logind.
    let prev = lines_with(&c, "CLB-PREV-DAEMON");
    let at = |needle: &str| {
        prev.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("v1's daemon never logged {needle:?}:\n{}", prev.join("\n")))
    };
    let resolved_v2 = at(&format!("digest={v2_digest}"));
    let verified = at("signatures verified");
    let staged = at("staged; waiting until the strategy allows the reboot");
    let rebooting = at("rebooting into the staged slot");
    assert!(
        resolved_v2 < verified && verified < staged && staged < rebooting,
        "v1's daemon: v2 resolved, verified, staged, rebooting:\n{}",
        prev.join("\n")
    );
    assert!(
        prev[staged].contains("slot=b") && prev[staged].contains("Immediate"),
        "{}",
        prev[staged]
    );
    assert_eq!(
        prev.iter()
            .filter(|l| l.contains("already in the store"))
            .count(),
        2,
        "base and kernel layers were there already:\n{}",
        prev.join("\n")
    );
    for bad in ["ERROR", "WARN", "reboot failed"] {
        assert!(
            !prev.iter().any(|l| l.contains(bad)),
            "v1's daemon logged {bad}:\n{}",
            prev.join("\n")
        );
    }
    let now = lines_with(&c, "CLB-NOW-DAEMON");
    assert!(
        now.iter().any(|l| l.contains("up to date"))
            && !now
                .iter()
                .any(|l| l.contains("ERROR") || l.contains("staging")),
        "v2's daemon checked and found nothing to do:\n{}",
        now.join("\n")
    );

    // The guest reached the registry through the guestfwd: the tag it follows, v2's
    // signature, and only small blobs (the release layer, the config, the signature bundle;
    // base and kernel are shared with v1).
    let requests = reg.requests_since(&marker);
    assert!(
        requests
            .iter()
            .any(|r| r.uri == "/v2/debian/manifests/latest" && r.status == 200),
        "the guest asked the registry for debian:latest: {requests:?}"
    );
    // v2's signature is a cosign v3 bundle (`clb sign`'s default): the guest asked the
    // referrers API, which distribution 2.8 lacks, then read the tag fallback's index.
    let referrers_api = format!("/v2/debian/referrers/{v2_digest}");
    assert!(
        requests.iter().any(|r| r.uri.starts_with(&referrers_api)),
        "the guest asked the referrers API {referrers_api}: {requests:?}"
    );
    let fallback_tag = format!(
        "/v2/debian/manifests/{}",
        v2_digest.replace("sha256:", "sha256-")
    );
    assert!(
        requests
            .iter()
            .any(|r| r.uri == fallback_tag && r.status == 200),
        "the guest read the referrers index {fallback_tag}: {requests:?}"
    );
    let fetches = reg.fetches_since(&marker);
    assert!(!fetches.is_empty(), "the guest fetched v2's blobs");
    for f in &fetches {
        assert!(
            f.bytes.unwrap_or(0) < 1 << 20,
            "only the release layer and small blobs are fetched: {fetches:?}"
        );
    }

    // Offline: slot b is active and good.
    let s = clb::status(&kit, &disk);
    assert_eq!(
        (&s["active"], &s["good"]),
        (&"b".into(), &true.into()),
        "{s}"
    );
    eprintln!(
        "debian daemon test: layers ready in {:.0} s, published and deployed in {:.0} s, \
         the VM ran {:.0} s ({:.0} s from v1's report to v2's poweroff), total {:.0} s",
        prepared.as_secs_f64(),
        (published - prepared).as_secs_f64(),
        boot.elapsed.as_secs_f64(),
        after_move.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

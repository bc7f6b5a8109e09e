//! QEMU (TCG, one vCPU) boots: direct (`-kernel`/`-initrd`, the hook decides and counts),
//! through SeaBIOS or OVMF and the disk's own bootloader. The serial console goes to a file
//! in the work directory; QEMU exits at poweroff or, with `-no-reboot`, at the first reboot,
//! and is killed and the test failed after a timeout.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::kit::Kit;

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// A QEMU boot: what was on the console and how long the VM ran.
pub struct Boot {
    pub console: String,
    pub elapsed: Duration,
}

/// A VM to boot: `-m 512`, no reboot, SeaBIOS unless [`Qemu::uefi`].
pub struct Qemu {
    args: Vec<OsString>,
    memory_mib: u32,
    machine: Option<String>,
    reboot: bool,
    uefi: bool,
}

impl Default for Qemu {
    fn default() -> Self {
        Qemu::new()
    }
}

impl Qemu {
    pub fn new() -> Qemu {
        Qemu {
            args: Vec::new(),
            memory_mib: 512,
            machine: None,
            reboot: false,
            uefi: false,
        }
    }

    /// The kit's kernel and initramfs with `-append "console=ttyS0 panic=5 loglevel=4 APPEND"`.
    pub fn direct(kit: &Kit, append: &str) -> Qemu {
        Qemu::new()
            .arg("-kernel")
            .arg(&kit.kernel)
            .arg("-initrd")
            .arg(&kit.initrd)
            .arg("-append")
            .arg(format!("console=ttyS0 panic=5 loglevel=4 {append}"))
    }

    /// `disk` as a raw virtio disk.
    pub fn disk(self, disk: &Path) -> Qemu {
        self.arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()))
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Qemu {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Qemu {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn memory(mut self, mib: u32) -> Qemu {
        self.memory_mib = mib;
        self
    }

    pub fn machine(mut self, machine: &str) -> Qemu {
        self.machine = Some(machine.into());
        self
    }

    /// Reboot on a kernel panic (`panic=5`) instead of exiting, as a real machine does: one
    /// run covers a series of failed boots and the rollback, until an init powers off.
    pub fn rebooting(mut self) -> Qemu {
        self.reboot = true;
        self
    }

    /// OVMF firmware, with fresh variables for each boot.
    pub fn uefi(mut self) -> Qemu {
        self.uefi = true;
        self
    }

    /// Boot and wait; `name` names the console log (`console-NAME.log` in `work`).
    pub fn boot(self, work: &Path, name: &str, timeout: Duration) -> Boot {
        let console = work.join(format!("console-{name}.log"));
        let stderr = work.join(format!("qemu-{name}.stderr"));
        let _ = std::fs::remove_file(&console);
        let mut cmd = Command::new("qemu-system-x86_64");
        if let Some(m) = &self.machine {
            cmd.args(["-machine", m]);
        }
        cmd.args(["-accel", "tcg", "-m", &self.memory_mib.to_string()])
            .args([
                "-smp",
                "1",
                "-nodefaults",
                "-display",
                "none",
                "-monitor",
                "none",
            ])
            .args(if self.reboot {
                &[][..]
            } else {
                &["-no-reboot"][..]
            })
            .arg("-serial")
            .arg(format!("file:{}", console.display()));
        if self.uefi {
            let vars = work.join(format!("ovmf-vars-{name}.fd"));
            std::fs::copy(OVMF_VARS, &vars)
                .unwrap_or_else(|e| panic!("copy {OVMF_VARS} (package ovmf): {e}"));
            cmd.arg("-drive")
                .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
                .arg("-drive")
                .arg(format!("if=pflash,format=raw,file={}", vars.display()));
        }
        let start = Instant::now();
        let mut child = cmd
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // A file, not a pipe nobody reads while QEMU runs: it cannot fill up and block.
            .stderr(std::fs::File::create(&stderr).expect("qemu stderr file"))
            .spawn()
            .expect("start qemu-system-x86_64");
        let timed_out = loop {
            if child.try_wait().expect("wait qemu").is_some() {
                break false;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                break true;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let elapsed = start.elapsed();
        // Firmware and GRUB write escape sequences and CRs: keep the text lossy.
        let text =
            String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default()).into_owned();
        let qemu_said = std::fs::read_to_string(&stderr).unwrap_or_default();
        eprintln!(
            "---- boot {name}: {:.1} s ----\n{}",
            elapsed.as_secs_f64(),
            text.lines()
                .filter(|l| [
                    "clb-initrd",
                    "clb-grub",
                    "CLB-TEST-OS",
                    "CLB-CLOUD-IMAGE",
                    "clb:",
                    "reboot:",
                    "panic"
                ]
                .iter()
                .any(|k| l.contains(k)))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            !timed_out,
            "boot {name} hung (killed after {timeout:?}):\n{text}\n{qemu_said}"
        );
        assert!(
            !text.is_empty(),
            "boot {name}: no console output; qemu said:\n{qemu_said}"
        );
        Boot {
            console: text,
            elapsed,
        }
    }
}

/// Fails the test (never skips it) unless QEMU, OVMF and what `clb deploy` needs to install
/// GRUB for EFI are here.
pub fn require_uefi_boot() {
    for tool in [
        "grub-mkimage",
        "mcopy",
        "grub-editenv",
        "qemu-system-x86_64",
    ] {
        clb_testsupport::require_tool(tool);
    }
    assert!(
        Path::new(OVMF_CODE).exists(),
        "missing test prerequisite: {OVMF_CODE} (package ovmf)"
    );
}

/// Direct boot of `disk` with the kit's kernel and initramfs.
pub fn boot_direct(
    kit: &Kit,
    disk: &Path,
    work: &Path,
    name: &str,
    append: &str,
    timeout: Duration,
) -> Boot {
    Qemu::direct(kit, append)
        .disk(disk)
        .boot(work, name, timeout)
}

/// Boot `disk` with QEMU's BIOS (whatever bootloader the disk has).
pub fn boot_bios(disk: &Path, work: &Path, name: &str, timeout: Duration) -> Boot {
    Qemu::new().disk(disk).boot(work, name, timeout)
}

/// Boot `disk` through OVMF: it finds `EFI/BOOT/BOOTX64.EFI` on the disk's ESP.
pub fn boot_uefi(disk: &Path, work: &Path, name: &str, timeout: Duration) -> Boot {
    Qemu::new().uefi().disk(disk).boot(work, name, timeout)
}

/// QEMU user networking that reaches only a server on the host: `restrict=on`, and
/// 10.0.2.100:80 forwarded (a `busybox nc` per connection) to 127.0.0.1:`port`.
pub fn restricted_net_args(port: u16) -> Vec<String> {
    forwarding_net("", "10.0.2.100", port)
}

/// QEMU user networking in 169.254.0.0/16 (the guest is 169.254.0.15) that reaches only a
/// cloud metadata service: `restrict=on`, and 169.254.169.254:80 forwarded to
/// 127.0.0.1:`port`. slirp forwards (and answers ARP for) addresses of its own network only,
/// hence the link-local network.
pub fn metadata_net_args(port: u16) -> Vec<String> {
    forwarding_net(",net=169.254.0.0/16", "169.254.169.254", port)
}

/// `restrict=on` user networking with `options`, where `guest_addr`:80 is forwarded (a
/// `busybox nc` per connection) to 127.0.0.1:`port`.
fn forwarding_net(options: &str, guest_addr: &str, port: u16) -> Vec<String> {
    let busybox = clb_testsupport::require_tool("busybox");
    vec![
        "-netdev".into(),
        format!(
            "user,id=n0,restrict=on{options},guestfwd=tcp:{guest_addr}:80-cmd:{} nc 127.0.0.1 {port}",
            busybox.display()
        ),
        "-device".into(),
        "virtio-net-pci,netdev=n0,romfile=".into(),
    ]
}

/// The hook's `clb-initrd: error:` lines.
pub fn error_lines(console: &str) -> Vec<&str> {
    console
        .lines()
        .filter(|l| l.contains("clb-initrd: error:"))
        .collect()
}

/// The hook's "switch_root after N ms" figure from a console; panics when it is missing.
pub fn hook_ms(console: &str) -> u64 {
    console
        .lines()
        .find_map(|l| {
            let r = l.split("switch_root after ").nth(1)?;
            r.strip_suffix(" ms")?.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no switch_root time on the console:\n{console}"))
}

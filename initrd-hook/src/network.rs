//! Network setup for an `http://` netboot source: the kernel's IP autoconfig (`ip=dhcp`) is
//! not built into distribution kernels (Debian: `CONFIG_IP_PNP` unset), so the hook does it
//! with the initramfs' static busybox: `ip` for addresses and routes, `udhcpc` for DHCP (its
//! script only writes the lease down; the hook applies it with `ip`, the same way as a
//! static `clb.ip=`).

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use clb_command::CommandError;

use crate::cmdline::IpSetting;
use crate::{Fatal, say};

const BUSYBOX: [&str; 3] = ["/bin/busybox", "/usr/bin/busybox", "/sbin/busybox"];
/// `type` of an Ethernet interface in /sys/class/net (ARPHRD_ETHER).
const ARPHRD_ETHER: &str = "1";

/// Bring up `netif` (or the first Ethernet interface to appear within `timeout`) with
/// `setting`. `work` is a writable directory for the DHCP script and lease.
pub fn configure(
    setting: IpSetting,
    netif: Option<&str>,
    timeout: Duration,
    work: &Path,
) -> Result<(), Fatal> {
    let bb = BUSYBOX
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Fatal(
                "netboot: the network setup needs busybox (ip, udhcpc) in the initramfs; \
                 clb mkinitrd adds a static busybox when one is installed"
                    .into(),
            )
        })?;
    let ifname = wait_for_interface(netif, timeout)?;
    busybox(&bb, &["ip", "link", "set", "lo", "up"])?;
    busybox(&bb, &["ip", "link", "set", &ifname, "up"])?;
    let (addr, prefix, gateway, how) = match setting {
        IpSetting::Static {
            addr,
            prefix,
            gateway,
        } => (addr, prefix, gateway, "static"),
        IpSetting::Dhcp => {
            let (a, p, g) = dhcp(&bb, &ifname, work)?;
            (a, p, g, "dhcp")
        }
    };
    busybox(
        &bb,
        &[
            "ip",
            "addr",
            "add",
            &format!("{addr}/{prefix}"),
            "dev",
            &ifname,
        ],
    )?;
    if let Some(gw) = gateway {
        busybox(
            &bb,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &gw.to_string(),
                "dev",
                &ifname,
            ],
        )?;
    }
    let via = gateway.map(|g| format!(" via {g}")).unwrap_or_default();
    say(format_args!(
        "network: {ifname} {addr}/{prefix}{via} ({how})"
    ));
    Ok(())
}

/// The named interface, or the first Ethernet interface (sorted by name), once it exists.
fn wait_for_interface(netif: Option<&str>, timeout: Duration) -> Result<String, Fatal> {
    let start = Instant::now();
    loop {
        let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        let found = match netif {
            Some(n) => names.iter().find(|x| x.as_str() == n).cloned(),
            None => names
                .iter()
                .find(|n| {
                    std::fs::read_to_string(format!("/sys/class/net/{n}/type"))
                        .is_ok_and(|t| t.trim() == ARPHRD_ETHER)
                        && n.as_str() != "lo"
                })
                .cloned(),
        };
        if let Some(n) = found {
            return Ok(n);
        }
        if start.elapsed() >= timeout {
            let want = netif.map_or("an Ethernet interface".to_string(), |n| n.to_string());
            return Err(Fatal(format!(
                "netboot: no {want} after {} s (interfaces: {}); add its driver \
                 (clb mkinitrd --add-modules virtio_net, e1000, ...) or set clb.netif=",
                timeout.as_secs(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(" ")
                }
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run `udhcpc` once (a few discovers) and return the lease: address, prefix, router.
fn dhcp(bb: &Path, ifname: &str, work: &Path) -> Result<(Ipv4Addr, u8, Option<Ipv4Addr>), Fatal> {
    let script = work.join("udhcpc.script");
    let lease = work.join("dhcp.lease");
    let text = format!(
        "#!{} sh\ncase \"$1\" in bound|renew) echo \"$ip $subnet $router\" > {} ;; esac\nexit 0\n",
        bb.display(),
        lease.display()
    );
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(&script)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| Fatal(format!("write {}: {e}", script.display())))?;
    let script_arg = script.display().to_string();
    let args = [
        "udhcpc",
        "-i",
        ifname,
        "-f",
        "-q",
        "-n",
        "-t",
        "5",
        "-T",
        "2",
        "-s",
        &script_arg,
    ];
    // A failed udhcpc is not an error here: the missing lease is, and its message carries
    // udhcpc's last words (busybox says "no lease, failing" on stdout, not stderr).
    let out =
        clb_command::output(Command::new(bb).args(args)).map_err(|e| command_failed(&args, &e))?;
    let text = std::fs::read_to_string(&lease).map_err(|_| no_lease(ifname, &out))?;
    parse_lease(&text).ok_or_else(|| Fatal(format!("netboot: bad DHCP lease {text:?}")))
}

/// The missing lease, with what udhcpc said last on either output.
fn no_lease(ifname: &str, out: &Output) -> Fatal {
    let mut said: Vec<&str> = Vec::new();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    said.extend(last_line(&stdout));
    said.extend(last_line(&stderr));
    let said = if said.is_empty() {
        "no output".to_string()
    } else {
        said.join("; ")
    };
    let status = if out.status.success() {
        String::new()
    } else {
        format!("udhcpc failed ({}): ", out.status)
    };
    Fatal(format!(
        "netboot: no DHCP lease on {ifname} ({status}{said}); set clb.ip=ADDR/PREFIX:GATEWAY"
    ))
}

/// `ADDR MASK [ROUTER...]` as written by the udhcpc script.
fn parse_lease(text: &str) -> Option<(Ipv4Addr, u8, Option<Ipv4Addr>)> {
    let mut it = text.split_whitespace();
    let addr: Ipv4Addr = it.next()?.parse().ok()?;
    let mask = u32::from(it.next()?.parse::<Ipv4Addr>().ok()?);
    let prefix = mask.leading_ones();
    if mask.count_ones() != prefix || prefix == 0 {
        return None;
    }
    let router = it.next().and_then(|r| r.parse().ok());
    Some((addr, u8::try_from(prefix).ok()?, router))
}

/// The last non-empty line of a program's output.
fn last_line(out: &str) -> Option<&str> {
    out.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

fn command_failed(args: &[&str], e: &CommandError) -> Fatal {
    Fatal(format!(
        "netboot: {}: {}",
        args.join(" "),
        clb_command::one_line(e)
    ))
}

/// Runs a busybox applet; Ok on exit 0.
fn busybox(bb: &Path, args: &[&str]) -> Result<(), Fatal> {
    clb_command::run_output(Command::new(bb).args(args))
        .map(|_| ())
        .map_err(|e| command_failed(args, &e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn leases() {
        assert_eq!(
            parse_lease("10.0.2.15 255.255.255.0 10.0.2.2\n"),
            Some((
                "10.0.2.15".parse().unwrap(),
                24,
                Some("10.0.2.2".parse().unwrap())
            ))
        );
        assert_eq!(
            parse_lease("192.168.1.9 255.255.0.0 \n"),
            Some(("192.168.1.9".parse().unwrap(), 16, None))
        );
        assert_eq!(parse_lease("10.0.2.15 255.0.255.0 x"), None);
        assert_eq!(parse_lease(""), None);
        assert_eq!(last_line("a\n b \n\n"), Some("b"));
        assert_eq!(last_line("\n"), None);
    }

    fn output(code: i32, stdout: &str, stderr: &str) -> Output {
        use std::os::unix::process::ExitStatusExt;
        Output {
            status: std::process::ExitStatus::from_raw(code << 8),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_missing_lease_says_what_udhcpc_said_on_either_output() {
        // busybox udhcpc explains itself on stdout.
        let out = output(
            1,
            "udhcpc: started, v1.36.1\nudhcpc: sending discover\nudhcpc: no lease, failing\n",
            "",
        );
        assert_eq!(
            no_lease("eth0", &out).0,
            "netboot: no DHCP lease on eth0 (udhcpc failed (exit status: 1): udhcpc: no lease, failing); \
             set clb.ip=ADDR/PREFIX:GATEWAY"
        );
        let out = output(
            1,
            "udhcpc: sending discover\n",
            "udhcpc: SIOCGIFINDEX: No such device\n",
        );
        assert_eq!(
            no_lease("eth0", &out).0,
            "netboot: no DHCP lease on eth0 (udhcpc failed (exit status: 1): udhcpc: sending discover; \
             udhcpc: SIOCGIFINDEX: No such device); set clb.ip=ADDR/PREFIX:GATEWAY"
        );
        assert_eq!(
            no_lease("eth0", &output(0, "", "")).0,
            "netboot: no DHCP lease on eth0 (no output); set clb.ip=ADDR/PREFIX:GATEWAY"
        );
    }

    #[test]
    fn a_program_that_did_not_start_keeps_its_cause() {
        let e = CommandError::Start {
            program: "busybox".into(),
            source: std::io::Error::from_raw_os_error(13),
        };
        assert_eq!(
            command_failed(&["ip", "link"], &e).0,
            "netboot: ip link: cannot start busybox: Permission denied (os error 13)"
        );
    }
}

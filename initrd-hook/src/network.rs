//! Network setup for an `http://` netboot source: the kernel's IP autoconfig (`ip=dhcp`) is
//! not built into distribution kernels (Debian: `CONFIG_IP_PNP` unset), so the hook does it
//! with the initramfs' static busybox: `ip` for addresses and routes, `udhcpc` for DHCP (its
//! script only writes the lease down; the hook applies it with `ip`, the same way as a
//! static `clb.ip=`).

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
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
    let out = busybox_output(
        bb,
        &[
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
        ],
    )?;
    let text = std::fs::read_to_string(&lease).map_err(|_| {
        Fatal(format!(
            "netboot: no DHCP lease on {ifname} ({}); set clb.ip=ADDR/PREFIX:GATEWAY",
            last_line(&out)
        ))
    })?;
    parse_lease(&text).ok_or_else(|| Fatal(format!("netboot: bad DHCP lease {text:?}")))
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

fn last_line(out: &str) -> &str {
    out.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
}

/// Runs a busybox applet; Ok(stdout and stderr). A failed `udhcpc` is not an error here: the
/// missing lease is, and its message carries udhcpc's last words.
fn busybox_output(bb: &Path, args: &[&str]) -> Result<String, Fatal> {
    match clb_command::run_output(Command::new(bb).args(args)) {
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            Ok(text)
        }
        Err(CommandError::Failed { stderr_tail, .. }) if args.first() == Some(&"udhcpc") => {
            Ok(stderr_tail)
        }
        Err(e) => Err(Fatal(format!("netboot: {}: {e}", args.join(" ")))),
    }
}

fn busybox(bb: &Path, args: &[&str]) -> Result<(), Fatal> {
    busybox_output(bb, args).map(|_| ())
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
        assert_eq!(last_line("a\nb\n\n"), "b");
    }
}

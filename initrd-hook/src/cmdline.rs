//! The `clb.*` options of the kernel command line (see docs/boot.md). Pure parsing, no I/O.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use clb_ondisk::SlotName;

use crate::http::Url;
use crate::persist;

/// Everything the hook reads from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub state_label: String,
    pub oem_label: String,
    pub persistent_label: String,
    pub recovery_label: String,
    /// `clb.mode=recovery`: boot the recovery slot whatever the boot state says.
    pub recovery: bool,
    /// How long to wait for the state partition to appear.
    pub timeout: Duration,
    /// `size=` of the tmpfs holding the overlay's upper and work directories.
    pub overlay_size: String,
    /// `clb.persistent_paths=`: the persistent paths, over any `persistent.env` (`None`: not
    /// given, the files or the defaults of `persist.rs` decide).
    pub persistent_paths: Option<Vec<PathBuf>>,
    pub debug: bool,
    /// `init=`: the program to exec in the new root.
    pub init: PathBuf,
    /// `clb.slot=`: the bootloader (GRUB) already chose and counted; boot this slot and leave
    /// the boot state alone.
    pub slot: Option<SlotName>,
    /// `clb.source=`: netboot from this layer-set manifest instead of a slot on COS_STATE.
    pub source: Option<Source>,
    /// `clb.digest=sha256:<hex>`: the digest the manifest bytes must have (required with
    /// `clb.source`).
    pub digest: Option<String>,
    /// `clb.ip=`: how the hook configures the network for an `http://` source.
    pub ip: Option<IpSetting>,
    /// The kernel's `ip=dhcp`, honoured like `clb.ip=dhcp` when the hook is PID 1.
    pub kernel_ip_dhcp: bool,
    /// `clb.netif=`: the interface to configure (default: the first one that appears).
    pub netif: Option<String>,
}

/// Where a netboot gets its manifest and layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `http://IP[:PORT]/PATH`
    Http(Url),
    /// `file://LABEL/PATH` (the filesystem labelled LABEL) or `file:///PATH` (a path the
    /// hook already sees, e.g. inside the initramfs). `path` is absolute.
    File { label: Option<String>, path: String },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Http(u) => write!(f, "{u}"),
            Source::File { label, path } => {
                write!(f, "file://{}{path}", label.as_deref().unwrap_or(""))
            }
        }
    }
}

/// `clb.ip=dhcp` or `clb.ip=ADDR/PREFIX[:GATEWAY]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpSetting {
    Dhcp,
    Static {
        addr: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
    },
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_label: "COS_STATE".into(),
            oem_label: "COS_OEM".into(),
            persistent_label: "COS_PERSISTENT".into(),
            recovery_label: "COS_RECOVERY".into(),
            recovery: false,
            timeout: Duration::from_secs(30),
            overlay_size: "25%".into(),
            persistent_paths: None,
            debug: false,
            init: PathBuf::from("/sbin/init"),
            slot: None,
            source: None,
            digest: None,
            ip: None,
            kernel_ip_dhcp: false,
            netif: None,
        }
    }
}

/// A `clb.*` option with a value we cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdlineError(pub String);

impl std::fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "kernel command line: {}", self.0)
    }
}

impl Config {
    /// Parse `/proc/cmdline`. Unknown words (other than `clb.*`) are ignored: they belong to
    /// the kernel or to the booted system. Unknown `clb.*` options are errors, so a typo does
    /// not silently boot with defaults. Later occurrences win, as with the kernel.
    pub fn parse(cmdline: &str) -> Result<Config, CmdlineError> {
        let mut cfg = Config::default();
        for word in split_words(cmdline) {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word.as_str(), None),
            };
            let need = |v: Option<&str>| -> Result<String, CmdlineError> {
                match v {
                    Some(v) if !v.is_empty() => Ok(v.to_string()),
                    _ => Err(CmdlineError(format!("{key} needs a value"))),
                }
            };
            match key {
                "init" => cfg.init = PathBuf::from(need(value)?),
                "clb.state_label" => cfg.state_label = need(value)?,
                "clb.oem_label" => cfg.oem_label = need(value)?,
                "clb.persistent_label" => cfg.persistent_label = need(value)?,
                "clb.recovery_label" => cfg.recovery_label = need(value)?,
                "clb.mode" => match value {
                    Some("recovery") => cfg.recovery = true,
                    Some("normal") | Some("") | None => cfg.recovery = false,
                    Some(other) => {
                        return Err(CmdlineError(format!(
                            "clb.mode={other}: expected recovery or normal"
                        )));
                    }
                },
                "clb.timeout" => {
                    let v = need(value)?;
                    let secs: u64 = v.parse().map_err(|_| {
                        CmdlineError(format!("clb.timeout={v}: expected whole seconds"))
                    })?;
                    cfg.timeout = Duration::from_secs(secs);
                }
                "clb.overlay" => {
                    let v = need(value)?;
                    let size = v.strip_prefix("tmpfs:").ok_or_else(|| {
                        CmdlineError(format!("clb.overlay={v}: expected tmpfs:SIZE"))
                    })?;
                    if !valid_size(size) {
                        return Err(CmdlineError(format!(
                            "clb.overlay={v}: SIZE is a number with an optional k, m, g or % suffix"
                        )));
                    }
                    cfg.overlay_size = size.to_string();
                }
                "clb.persistent_paths" => {
                    let paths = persist::parse_paths(value.unwrap_or(""), |c| c == ',')
                        .map_err(|e| CmdlineError(format!("clb.persistent_paths: {e}")))?;
                    cfg.persistent_paths = Some(paths);
                }
                "clb.debug" => cfg.debug = !matches!(value, Some("0")),
                "clb.slot" => {
                    let v = need(value)?;
                    cfg.slot = Some(SlotName::parse(&v).ok_or_else(|| {
                        CmdlineError(format!("clb.slot={v}: expected a, b or recovery"))
                    })?);
                }
                "clb.source" => cfg.source = Some(parse_source(&need(value)?)?),
                "clb.digest" => {
                    let v = need(value)?;
                    let ok = v.strip_prefix("sha256:").is_some_and(|h| {
                        h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                    });
                    if !ok {
                        return Err(CmdlineError(format!(
                            "clb.digest={v}: expected sha256: and 64 lowercase hex digits"
                        )));
                    }
                    cfg.digest = Some(v);
                }
                "clb.ip" => cfg.ip = Some(parse_ip(&need(value)?)?),
                "clb.netif" => cfg.netif = Some(need(value)?),
                // The kernel's own option (IP autoconfig is not built into most distribution
                // kernels); only `dhcp` is ours to act on, other forms are left alone.
                "ip" => cfg.kernel_ip_dhcp = matches!(value, Some("dhcp")),
                k if k.starts_with("clb.") => {
                    return Err(CmdlineError(format!("unknown option {k}")));
                }
                _ => {}
            }
        }
        match (&cfg.source, &cfg.digest) {
            (Some(_), None) => {
                return Err(CmdlineError(
                    "clb.source needs clb.digest=sha256:... (the manifest's digest)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(CmdlineError("clb.digest without clb.source".into()));
            }
            (Some(_), Some(_)) if cfg.slot.is_some() || cfg.recovery => {
                return Err(CmdlineError(
                    "clb.source (netboot) cannot be combined with clb.slot or clb.mode=recovery"
                        .into(),
                ));
            }
            _ => {}
        }
        Ok(cfg)
    }
}

/// `http://IP[:PORT]/PATH`, `file://LABEL/PATH` or `file:///PATH`.
fn parse_source(v: &str) -> Result<Source, CmdlineError> {
    if v.starts_with("http://") {
        return Url::parse(v)
            .map(Source::Http)
            .map_err(|e| CmdlineError(format!("clb.source={e}")));
    }
    let rest = v.strip_prefix("file://").ok_or_else(|| {
        CmdlineError(format!(
            "clb.source={v}: expected http://IP[:PORT]/PATH or file://[LABEL]/PATH"
        ))
    })?;
    let (label, path) = match rest.find('/') {
        Some(0) => (None, rest),
        Some(i) => (Some(rest[..i].to_string()), &rest[i..]),
        None => (Some(rest.to_string()), "/"),
    };
    if path.split('/').any(|c| c == "..") {
        return Err(CmdlineError(format!("clb.source={v}: .. in the path")));
    }
    Ok(Source::File {
        label,
        path: path.to_string(),
    })
}

/// `dhcp` or `ADDR/PREFIX[:GATEWAY]`.
fn parse_ip(v: &str) -> Result<IpSetting, CmdlineError> {
    if v == "dhcp" {
        return Ok(IpSetting::Dhcp);
    }
    let err = || {
        CmdlineError(format!(
            "clb.ip={v}: expected dhcp or ADDR/PREFIX[:GATEWAY] (IPv4, e.g. 10.0.2.15/24:10.0.2.2)"
        ))
    };
    let (cidr, gateway) = match v.split_once(':') {
        Some((c, g)) => (c, Some(g.parse::<Ipv4Addr>().map_err(|_| err())?)),
        None => (v, None),
    };
    let (addr, prefix) = cidr.split_once('/').ok_or_else(err)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=32).contains(p))
        .ok_or_else(err)?;
    Ok(IpSetting::Static {
        addr,
        prefix,
        gateway,
    })
}

/// Split like the kernel does: on spaces, with double quotes grouping (and removed).
fn split_words(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_ascii_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

fn valid_size(s: &str) -> bool {
    let digits = s.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', '%']);
    !digits.is_empty() && digits.len() + 1 >= s.len() && digits.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_with_no_options() {
        let c = Config::parse("BOOT_IMAGE=/vmlinuz console=ttyS0 panic=5 quiet\n").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.state_label, "COS_STATE");
        assert_eq!(c.init, PathBuf::from("/sbin/init"));
        assert_eq!(c.persistent_paths, None);
        assert_eq!(c.timeout, Duration::from_secs(30));
    }

    #[test]
    fn parses_every_option() {
        let c = Config::parse(
            "console=ttyS0 clb.state_label=MY_STATE clb.oem_label=O clb.persistent_label=P \
             clb.recovery_label=R clb.mode=recovery clb.timeout=7 clb.overlay=tmpfs:512m \
             clb.persistent_paths=/etc/ssh,/home/,/var/lib/x clb.debug init=/bin/sh",
        )
        .unwrap();
        assert_eq!(c.state_label, "MY_STATE");
        assert_eq!(c.oem_label, "O");
        assert_eq!(c.persistent_label, "P");
        assert_eq!(c.recovery_label, "R");
        assert!(c.recovery && c.debug);
        assert_eq!(c.timeout, Duration::from_secs(7));
        assert_eq!(c.overlay_size, "512m");
        assert_eq!(
            c.persistent_paths,
            Some(vec![
                PathBuf::from("/etc/ssh"),
                PathBuf::from("/home"),
                PathBuf::from("/var/lib/x")
            ])
        );
        assert_eq!(c.init, PathBuf::from("/bin/sh"));
    }

    #[test]
    fn empty_persistent_list_and_quotes_and_last_wins() {
        let c = Config::parse(
            "clb.persistent_paths= \"clb.state_label=A B\" clb.timeout=1 clb.timeout=2",
        )
        .unwrap();
        assert_eq!(c.persistent_paths, Some(vec![]));
        assert_eq!(c.state_label, "A B");
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(
            Config::parse("clb.overlay=tmpfs:25%").unwrap().overlay_size,
            "25%"
        );
    }

    #[test]
    fn rejects_bad_values_and_unknown_clb_options() {
        for bad in [
            "clb.timeout=soon",
            "clb.overlay=disk:1G",
            "clb.overlay=tmpfs:1G,mode=777",
            "clb.overlay=tmpfs:",
            "clb.mode=fast",
            "clb.persistent_paths=etc",
            "clb.persistent_paths=/etc/../x",
            "clb.persistent_paths=/",
            "clb.persistent_paths=/a:b",
            "clb.state_label=",
            "clb.stat_label=X",
            "init=",
        ] {
            let e = Config::parse(bad).unwrap_err();
            assert!(!e.to_string().is_empty(), "{bad}");
        }
        // Options of other programs are not ours to judge.
        assert!(Config::parse("rd.break cos.setup=/x root=LABEL=x").is_ok());
        assert_eq!(Config::parse("clb.slot=b").unwrap().slot, Some(SlotName::B));
        assert!(Config::parse("clb.slot=c").is_err());
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn netboot_options() {
        let c = Config::parse(&format!(
            "ip=dhcp clb.source=http://10.0.2.100/net/ clb.digest={D} clb.netif=eth1"
        ))
        .unwrap();
        let Some(Source::Http(u)) = &c.source else {
            panic!("{c:?}")
        };
        assert_eq!(u.path, "/net/");
        assert_eq!(c.digest.as_deref(), Some(D));
        assert!(c.kernel_ip_dhcp && c.ip.is_none());
        assert_eq!(c.netif.as_deref(), Some("eth1"));
        let c = Config::parse(&format!(
            "clb.ip=10.0.2.15/24:10.0.2.2 clb.source=file://CLBNET/oci/ clb.digest={D}"
        ))
        .unwrap();
        assert_eq!(
            c.ip,
            Some(IpSetting::Static {
                addr: "10.0.2.15".parse().unwrap(),
                prefix: 24,
                gateway: Some("10.0.2.2".parse().unwrap())
            })
        );
        assert_eq!(
            c.source,
            Some(Source::File {
                label: Some("CLBNET".into()),
                path: "/oci/".into()
            })
        );
        assert_eq!(c.source.unwrap().to_string(), "file://CLBNET/oci/");
        let c = Config::parse(&format!("clb.source=file:///net/m.json clb.digest={D}")).unwrap();
        assert_eq!(
            c.source,
            Some(Source::File {
                label: None,
                path: "/net/m.json".into()
            })
        );
        assert_eq!(
            Config::parse("clb.ip=dhcp").unwrap().ip,
            Some(IpSetting::Dhcp)
        );
        assert!(
            !Config::parse("ip=10.0.2.15::10.0.2.2")
                .unwrap()
                .kernel_ip_dhcp
        );
        for bad in [
            "clb.source=http://10.0.2.100/".to_string(), // no digest
            format!("clb.digest={D}"),                   // no source
            format!("clb.source=http://h.example/ clb.digest={D}"),
            format!("clb.source=ftp://1.2.3.4/ clb.digest={D}"),
            format!("clb.source=file://L/../x clb.digest={D}"),
            format!("clb.source=http://1.2.3.4/ clb.digest={D} clb.slot=a"),
            format!("clb.source=http://1.2.3.4/ clb.digest={D} clb.mode=recovery"),
            "clb.source=http://1.2.3.4/ clb.digest=sha256:ABC".to_string(),
            "clb.ip=10.0.2.15".to_string(),
            "clb.ip=10.0.2.15/33".to_string(),
            "clb.ip=10.0.2.15/24:gw".to_string(),
        ] {
            assert!(Config::parse(&bad).is_err(), "{bad}");
        }
    }
}

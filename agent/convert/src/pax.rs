//! PAX extended headers, parsed by their length prefixes.
//!
//! A record is `"%d %s=%s\n"` where the length counts the whole record, itself and the
//! newline included, so a value may hold any byte: a newline, `=`, NUL. The tar crate (0.4)
//! splits records on newlines instead (tar-rs #428, #452), which fails on a file capability
//! whose bytes contain 0x0a and lets such a value smuggle records that the crate then honours
//! (a `path` inside an xattr value). So the converter reads PAX itself, here.

use std::collections::BTreeMap;

use base64::Engine as _;

use crate::ConvertError;

/// xattrs as (name, value) pairs; names are raw bytes like everything in tar.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Go's archive/tar and GNU tar bound extended headers too; a real one is a few KiB (Linux
/// caps one inode's xattrs at 64 KiB), and the bound keeps a hostile layer from filling memory.
pub(crate) const MAX_HEADER: u64 = 1024 * 1024;

const SCHILY_XATTR: &[u8] = b"SCHILY.xattr.";
const LIBARCHIVE_XATTR: &[u8] = b"LIBARCHIVE.xattr.";
const SCHILY_ACL: &[u8] = b"SCHILY.acl.";
const GNU_SPARSE: &[u8] = b"GNU.sparse.";

/// What one local PAX header says about the entry after it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Pax {
    pub path: Option<Vec<u8>>,
    pub linkpath: Option<Vec<u8>>,
    pub size: Option<u64>,
    pub uid: Option<u64>,
    pub gid: Option<u64>,
    pub mtime: Option<i64>,
    /// Sorted by name, one value per name; `SCHILY.xattr` wins over `LIBARCHIVE.xattr`.
    pub xattrs: Xattrs,
    /// Keywords of ACLs GNU tar stores as text (`SCHILY.acl.access`, ...), which SquashFS
    /// cannot keep; the caller reports them with the other dropped xattrs.
    pub acls: Vec<Vec<u8>>,
    /// `GNU.sparse.*` records: GNU tar's PAX sparse formats, where the data holds a map.
    pub sparse: bool,
}

/// Appends one record to a PAX header body.
pub(crate) fn record(body: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // The length prefix counts itself, so grow it until it is stable.
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    body.extend_from_slice(len.to_string().as_bytes());
    body.push(b' ');
    body.extend_from_slice(key);
    body.push(b'=');
    body.extend_from_slice(value);
    body.push(b'\n');
}

/// A (keyword, value) pair.
type Record<'a> = (&'a [u8], &'a [u8]);

/// Splits a PAX header body into records.
fn records(body: &[u8]) -> Result<Vec<Record<'_>>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let rest = &body[at..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || rest.get(digits) != Some(&b' ') {
            return Err(format!(
                "PAX record at byte {at} does not start with a decimal length and a space"
            ));
        }
        let len: usize = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("PAX record at byte {at}: length out of range"))?;
        if len > rest.len() {
            return Err(format!(
                "PAX record at byte {at}: length {len} runs past the end of the header ({} bytes left)",
                rest.len()
            ));
        }
        // The shortest record is "<len> k=\n".
        if len < digits + 4 || rest[len - 1] != b'\n' {
            return Err(format!(
                "PAX record at byte {at}: length {len} does not end on a newline"
            ));
        }
        let kv = &rest[digits + 1..len - 1];
        match kv.iter().position(|b| *b == b'=') {
            Some(0) | None => {
                return Err(format!(
                    "PAX record at byte {at}: no keyword=value in its {len} bytes"
                ));
            }
            Some(eq) => out.push((&kv[..eq], &kv[eq + 1..])),
        }
        at += len;
    }
    Ok(out)
}

/// Parses a local PAX header. Later records win over earlier ones with the same keyword; an
/// empty value unsets a standard keyword (POSIX), so the ustar field applies again.
pub(crate) fn parse(body: &[u8]) -> Result<Pax, ConvertError> {
    let mut pax = Pax::default();
    // Maps, not lists: a 1 MiB header holds tens of thousands of records, and de-duplicating
    // a list on every record would cost quadratic time.
    let mut schily: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut libarchive: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let records = records(body).map_err(ConvertError::Corrupt)?;
    for (key, value) in records {
        let set = (!value.is_empty()).then_some(value);
        match key {
            b"path" => pax.path = set.map(<[u8]>::to_vec),
            b"linkpath" => pax.linkpath = set.map(<[u8]>::to_vec),
            b"size" => pax.size = set.map(|v| number(key, v)).transpose()?,
            b"uid" => pax.uid = set.map(|v| number(key, v)).transpose()?,
            b"gid" => pax.gid = set.map(|v| number(key, v)).transpose()?,
            b"mtime" => {
                pax.mtime = set
                    .map(|v| parse_time(v).ok_or_else(|| bad_value(key, v)))
                    .transpose()?;
            }
            _ => {
                if let Some(name) = key.strip_prefix(SCHILY_XATTR) {
                    schily.insert(name.to_vec(), value.to_vec());
                } else if let Some(name) = key.strip_prefix(LIBARCHIVE_XATTR) {
                    let value = base64_lenient()
                        .decode(value)
                        .map_err(|_| bad_value(key, value))?;
                    libarchive.insert(percent_decode(name), value);
                } else if key.starts_with(SCHILY_ACL) {
                    pax.acls.push(key.to_vec());
                } else if key.starts_with(GNU_SPARSE) {
                    pax.sparse = true;
                }
            }
        }
    }
    // The same xattr may come both ways; SCHILY (raw bytes) wins.
    for (name, value) in libarchive {
        schily.entry(name).or_insert(value);
    }
    pax.xattrs = schily.into_iter().collect();
    pax.acls.sort();
    pax.acls.dedup();
    Ok(pax)
}

fn bad_value(key: &[u8], value: &[u8]) -> ConvertError {
    ConvertError::Corrupt(format!(
        "PAX record {}: bad value {:?}",
        String::from_utf8_lossy(key),
        String::from_utf8_lossy(&value[..value.len().min(40)])
    ))
}

fn number(key: &[u8], v: &[u8]) -> Result<u64, ConvertError> {
    std::str::from_utf8(v)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad_value(key, v))
}

fn base64_lenient() -> base64::engine::GeneralPurpose {
    // libarchive writes base64 without padding; accept it either way.
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
}

/// libarchive percent-encodes xattr names in PAX keys.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// PAX times are decimal seconds with an optional fraction; squashfs keeps whole seconds.
fn parse_time(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t: i64 = whole.parse().ok()?;
    // "-1.5" is 1.5 s before the epoch: round toward minus infinity like tar does.
    if whole.starts_with('-') && frac.bytes().any(|b| b != b'0') {
        return t.checked_sub(1);
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str, v: &[u8]) -> Vec<u8> {
        body(&[(k, v)])
    }

    fn body(records: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in records {
            record(&mut out, k.as_bytes(), v);
        }
        out
    }

    #[test]
    fn values_hold_any_byte() {
        let cap = [
            1u8, 0, 0, 2, 0x0a, 0, 0, 0, 0, 0, 0, 0, b'\n', b'=', 0, 0xff,
        ];
        let mut body = rec("SCHILY.xattr.security.capability", &cap);
        body.extend(rec("SCHILY.xattr.user.eq", b"a=b=c"));
        body.extend(rec("path", b"dir/with\nnewline"));
        body.extend(rec("SCHILY.xattr.user.nl", b"\n"));
        let got = records(&body).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].1, cap);
        assert_eq!(got[1], (&b"SCHILY.xattr.user.eq"[..], &b"a=b=c"[..]));
        let pax = parse(&body).unwrap();
        assert_eq!(pax.path.as_deref(), Some(&b"dir/with\nnewline"[..]));
        let names: Vec<&[u8]> = pax.xattrs.iter().map(|(n, _)| &n[..]).collect();
        assert_eq!(names, [&b"security.capability"[..], b"user.eq", b"user.nl"]);
        assert_eq!(pax.xattrs[0].1, cap);
        assert_eq!(pax.xattrs[2].1, b"\n");
    }

    #[test]
    fn smuggled_record_stays_inside_its_value() {
        // Split on newlines, this value would read as a record of its own: "13 path=evil".
        let body = rec("SCHILY.xattr.user.v", b"x\n13 path=evil");
        let pax = parse(&body).unwrap();
        assert_eq!(pax.path, None);
        assert_eq!(
            pax.xattrs,
            [(b"user.v".to_vec(), b"x\n13 path=evil".to_vec())]
        );
    }

    #[test]
    fn lying_lengths_are_corrupt() {
        let good = rec("path", b"a\nb");
        for bad in [
            b"99 path=x\n".to_vec(),                     // runs past the end
            b"8 path=xy\n".to_vec(),                     // ends before the newline
            b"3 p\n".to_vec(),                           // shorter than any record
            b"0 \n".to_vec(),                            // zero
            b"x path=a\n".to_vec(),                      // no length
            b"10path=ab\n".to_vec(),                     // no space
            b"10 pathab\n".to_vec(),                     // no '='
            b"9 =value\n".to_vec(),                      // empty keyword
            b"99999999999999999999999 a=b\n".to_vec(),   // overflow
            [good.clone(), b"\0\0\0".to_vec()].concat(), // trailing garbage
        ] {
            let err = parse(&bad).unwrap_err();
            assert!(
                matches!(&err, ConvertError::Corrupt(m) if m.starts_with("PAX record")),
                "{:?}: {err:?}",
                String::from_utf8_lossy(&bad)
            );
            assert!(err.is_invalid_input());
        }
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let mut body = rec("SCHILY.xattr.user.a", b"1\n2=3");
        body.extend(rec("mtime", b"1700000000.5"));
        for cut in 1..body.len() {
            let _ = records(&body[..cut]);
            let _ = parse(&body[..cut]);
        }
        assert!(records(&body[..body.len() - 1]).is_err());
        assert_eq!(records(b"").unwrap(), []);
    }

    #[test]
    fn standard_keywords() {
        let pax = parse(&body(&[
            ("size", b"12"),
            ("uid", b"5000000"),
            ("gid", b"7"),
            ("mtime", b"-1.5"),
            ("linkpath", b"target"),
            ("uid", b"6"),
            ("gid", b""),
            ("atime", b"ignored"),
        ]))
        .unwrap();
        assert_eq!(pax.size, Some(12));
        assert_eq!(pax.uid, Some(6));
        assert_eq!(pax.gid, None);
        assert_eq!(pax.mtime, Some(-2));
        assert_eq!(pax.linkpath.as_deref(), Some(&b"target"[..]));
        for (k, v) in [("size", &b"-1"[..]), ("uid", b"1x"), ("mtime", b"soon")] {
            let err = parse(&rec(k, v)).unwrap_err();
            assert!(matches!(err, ConvertError::Corrupt(_)), "{k}: {err:?}");
        }
    }

    #[test]
    fn libarchive_acl_and_sparse_records() {
        let pax = parse(&body(&[
            ("LIBARCHIVE.xattr.user.a%3Db", b"eQ"),
            ("LIBARCHIVE.xattr.user.both", b"bGli"),
            ("SCHILY.xattr.user.both", b"schily"),
            ("SCHILY.acl.access", b"user::rw-\nuser:42:r--\n"),
            ("GNU.sparse.major", b"1"),
        ]))
        .unwrap();
        assert_eq!(
            pax.xattrs,
            [
                (b"user.a=b".to_vec(), b"y".to_vec()),
                (b"user.both".to_vec(), b"schily".to_vec())
            ]
        );
        assert_eq!(pax.acls, [b"SCHILY.acl.access".to_vec()]);
        assert!(pax.sparse);
        let err = parse(&rec("LIBARCHIVE.xattr.user.x", b"!!")).unwrap_err();
        assert!(matches!(err, ConvertError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn many_xattrs_and_repeated_names() {
        // About what fits in MAX_HEADER: 35k distinct names, one of them given three times, and
        // a LIBARCHIVE record that SCHILY overrides whichever comes first.
        let mut b = rec("LIBARCHIVE.xattr.user.7", b"bGli");
        for i in 0..35_000 {
            record(&mut b, format!("SCHILY.xattr.user.{i}").as_bytes(), b"v");
        }
        b.extend(rec("SCHILY.xattr.user.12", b"second"));
        b.extend(rec("SCHILY.xattr.user.12", b"third"));
        b.extend(rec("LIBARCHIVE.xattr.user.12", b"bGli"));
        b.extend(rec("LIBARCHIVE.xattr.user.only", b"bGli"));
        b.extend(rec("LIBARCHIVE.xattr.user.only", b"bGliMg"));
        assert!(b.len() as u64 <= MAX_HEADER, "{}", b.len());
        let pax = parse(&b).unwrap();
        assert_eq!(pax.xattrs.len(), 35_001);
        assert!(pax.xattrs.windows(2).all(|w| w[0].0 < w[1].0), "not sorted");
        let get = |name: &[u8]| {
            let i = pax
                .xattrs
                .binary_search_by(|(n, _)| n[..].cmp(name))
                .unwrap();
            pax.xattrs[i].1.clone()
        };
        assert_eq!(get(b"user.12"), b"third");
        assert_eq!(get(b"user.7"), b"v");
        assert_eq!(get(b"user.34999"), b"v");
        assert_eq!(get(b"user.only"), b"lib2");
    }

    #[test]
    fn empty_values() {
        let pax = parse(&body(&[
            ("path", b"p"),
            ("path", b""),
            ("SCHILY.xattr.user.empty", b""),
        ]))
        .unwrap();
        assert_eq!(pax.path, None);
        assert_eq!(pax.xattrs, [(b"user.empty".to_vec(), Vec::new())]);
    }

    #[test]
    fn times() {
        assert_eq!(parse_time(b"1700000000.123"), Some(1_700_000_000));
        assert_eq!(parse_time(b"-1.5"), Some(-2));
        assert_eq!(parse_time(b"-1.0"), Some(-1));
        assert_eq!(parse_time(b"-3"), Some(-3));
        assert_eq!(parse_time(b"x"), None);
        assert_eq!(parse_time(b"1.x"), None);
    }

    #[test]
    fn percent() {
        assert_eq!(percent_decode(b"user.a%3Db"), b"user.a=b");
        assert_eq!(percent_decode(b"user.%zz"), b"user.%zz");
    }
}

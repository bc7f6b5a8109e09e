//! Minimal PEM reading and writing.
//!
//! Written here rather than reusing the `pem` crate's encoder because that
//! one emits CRLF line endings by default, while cosign writes LF; key files
//! should look like cosign's.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// One PEM block: its label (`PUBLIC KEY`, …) and decoded DER contents.
pub(crate) struct PemBlock {
    pub label: String,
    pub der: Vec<u8>,
}

/// Parses every PEM block in `data`. Text outside blocks is ignored (OpenSSL
/// writes "EC PARAMETERS" blocks and comments next to keys).
pub(crate) fn parse_all(data: &[u8]) -> Result<Vec<PemBlock>, String> {
    let text = std::str::from_utf8(data).map_err(|_| "not a PEM file (not UTF-8)".to_string())?;
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut closed = false;
        for l in lines.by_ref() {
            if l == end {
                closed = true;
                break;
            }
            // RFC 1421 headers (Proc-Type: …) mean legacy OpenSSL
            // encryption, which cosign never writes.
            if l.contains(':') {
                return Err(format!("unsupported PEM headers in {label} block"));
            }
            body.push_str(l);
        }
        if !closed {
            return Err(format!("PEM block {label} is not terminated"));
        }
        let der = STANDARD
            .decode(body.as_bytes())
            .map_err(|e| format!("PEM block {label} is not valid base64: {e}"))?;
        blocks.push(PemBlock {
            label: label.to_string(),
            der,
        });
    }
    if blocks.is_empty() {
        return Err("no PEM block found".to_string());
    }
    Ok(blocks)
}

/// Parses the first PEM block.
pub(crate) fn parse_one(data: &[u8]) -> Result<PemBlock, String> {
    parse_all(data)?
        .into_iter()
        .next()
        .ok_or_else(|| "no PEM block found".to_string())
}

/// Encodes a PEM block with 64-column lines and LF endings, as Go's
/// `encoding/pem` (and therefore cosign) does.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn roundtrip() {
        let der: Vec<u8> = (0..=200).collect();
        let text = encode("PUBLIC KEY", &der);
        assert!(!text.contains('\r'));
        let b = parse_one(text.as_bytes()).unwrap();
        assert_eq!(b.label, "PUBLIC KEY");
        assert_eq!(b.der, der);
    }

    #[test]
    fn unterminated() {
        assert!(parse_all(b"-----BEGIN X-----\nAAAA\n").is_err());
        assert!(parse_all(b"nothing").is_err());
    }
}

//! Image references, parsed without a regular expression. oci-spec's parser (`str::parse`)
//! compiles one whose Unicode-aware tag class (`[\w][\w.-]{0,127}`) becomes a 4.4 MiB
//! automaton that stays resident for the rest of the process: a fourteenth of the 64 MiB a
//! host's staging may use (docs/performance.md). This is the same grammar (distribution's
//! reference grammar, with `\w` ASCII-only as in Docker's Go code), the same Docker Hub
//! normalization and the same errors; a test checks it against oci-spec's parser.

use oci_client::{ParseError, Reference};

const NAME_TOTAL_LENGTH_MAX: usize = 255;
const TAG_MAX: usize = 128;
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";

pub fn parse(text: &str) -> Result<Reference, ParseError> {
    if text.is_empty() {
        return Err(ParseError::NameEmpty);
    }
    // Neither a name nor a tag holds an `@`, nor does a digest: at most one split.
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) if is_digest(digest) => (rest, Some(digest)),
        Some(_) => return Err(ParseError::ReferenceInvalidFormat),
        None => (text, None),
    };
    // A tag follows the last `:` after the last `/`; a `:` before a `/` is a registry port.
    let after_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[after_slash..].rfind(':') {
        Some(i) => (&rest[..after_slash + i], Some(&rest[after_slash + i + 1..])),
        None => (rest, None),
    };
    if tag.is_some_and(|t| !is_tag(t)) || !is_name(name) {
        return Err(ParseError::ReferenceInvalidFormat);
    }
    let (registry, repository) = split_domain(name);
    if repository.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(ParseError::NameTooLong);
    }
    if let Some(digest) = digest {
        check_digest_length(digest)?;
    }
    Ok(match (tag, digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(registry, repository, tag.into(), digest.into())
        }
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest.into()),
        (tag, None) => Reference::with_tag(registry, repository, tag.unwrap_or("latest").into()),
    })
}

/// `[domain/]path-component(/path-component)*`; a first component that could be either is
/// fine as either (which one it is, `split_domain` decides, as Docker does).
fn is_name(name: &str) -> bool {
    let is_path = |s: &str| s.split('/').all(is_path_component);
    is_path(name)
        || name
            .split_once('/')
            .is_some_and(|(domain, path)| is_domain(domain) && is_path(path))
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &b[start..i];
        let ok = matches!(sep, b"." | b"_" | b"__") || sep.iter().all(|&c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Host labels (`[a-zA-Z0-9]` at both ends, `-` inside) joined by `.`, then `:port`.
fn is_domain(s: &str) -> bool {
    let (host, port) = match s.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (s, None),
    };
    let label = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
    };
    host.split('.').all(label)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
}

/// `[\w][\w.-]{0,127}`, `\w` being `[A-Za-z0-9_]`.
fn is_tag(s: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_MAX
        && word(b[0])
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// `algorithm:hex`: the algorithm is `[A-Za-z][A-Za-z0-9]*` runs joined by one of `-_+.`, the
/// hex part at least 32 digits.
fn is_digest(s: &str) -> bool {
    let Some((algorithm, hex)) = s.split_once(':') else {
        return false;
    };
    let component = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    };
    algorithm.split(['-', '_', '+', '.']).all(component)
        && hex.len() >= 32
        && hex.bytes().all(|c| c.is_ascii_hexdigit())
}

/// Digests are hex-encoded, so their hex part has twice the hash's length in bytes.
fn check_digest_length(digest: &str) -> Result<(), ParseError> {
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or(ParseError::DigestInvalidFormat)?;
    let want = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(ParseError::DigestUnsupported),
    };
    if hex.len() == want {
        Ok(())
    } else {
        Err(ParseError::DigestInvalidLength)
    }
}

/// Docker's normalization: no registry means Docker Hub, whose one-component repositories
/// live under `library/`.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.split_once('/') {
        Some((left, right)) if left.contains(['.', ':']) || left == "localhost" => {
            (left.to_string(), right.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    if domain == DOCKER_HUB_LEGACY {
        domain = DOCKER_HUB.into();
    }
    if domain == DOCKER_HUB && !remainder.contains('/') {
        remainder = format!("library/{remainder}");
    }
    (domain, remainder)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// oci-spec's parser as the oracle: the same fields, or the same error. True when both
    /// accept `text`.
    fn same_as_oci_spec(text: &str) -> bool {
        let ours = parse(text);
        let theirs = text.parse::<Reference>();
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => {
                assert_eq!(
                    (a.registry(), a.repository(), a.tag(), a.digest()),
                    (b.registry(), b.repository(), b.tag(), b.digest()),
                    "{text:?}"
                );
                assert_eq!(a.whole(), b.whole(), "{text:?}");
                true
            }
            (Err(a), Err(b)) => {
                assert_eq!(a, b, "{text:?}");
                false
            }
            _ => panic!("{text:?}: ours {ours:?}, oci-spec {theirs:?}"),
        }
    }

    const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn agrees_with_oci_spec_on_known_cases() {
        let cases = [
            "busybox",
            "busybox:latest",
            "test.com:tag",
            "test.com:5000",
            "test.com/repo:tag",
            "test:5000/repo",
            "test:5000/repo:tag",
            "127.0.0.1:5000/os:v1",
            "localhost/os",
            "localhost:5000/a/b/c:v1.2-rc_3",
            "index.docker.io/busybox",
            "docker.io/library/busybox",
            "docker.io/user/img",
            "lowercase:Uppercase",
            "Uppercase:tag",
            "foo_bar.com:8080",
            "foo_bar.com:8080/repo",
            "sub-dom1.foo.com/bar/baz/quux",
            "a__b/c--d/e.f",
            "a___b",
            "a..b",
            "-a",
            "a-",
            "a/",
            "/a",
            "a//b",
            ":tag",
            "a:",
            "a:.tag",
            "a:_tag",
            "a:b:c",
            "a@",
            "@sha256:00",
            "a@sha256:abc",
            "a@md5:0123456789abcdef0123456789abcdef",
            "a@sha512:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            "a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg",
            "a@sha256+b64:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a@1sha:0123456789abcdef0123456789abcdef",
            "a@@sha256:0123",
            "-host.com/a",
            "host-.com/a",
            "ho-st.com:/a",
            "ho-st.com:x/a",
            "[::1]:5000/a",
            "a b",
            "a\n",
            "",
            "\u{e9}",
        ];
        let accepted = cases.iter().filter(|c| same_as_oci_spec(c)).count();
        assert_eq!(accepted, 19, "the valid known cases");
        for name in ["os", "127.0.0.1:5000/os", "docker.io/library/os"] {
            same_as_oci_spec(&format!("{name}@{SHA}"));
            same_as_oci_spec(&format!("{name}:v1@{SHA}"));
        }
        let long = "a".repeat(250);
        same_as_oci_spec(&long);
        same_as_oci_spec(&format!("x/{long}"));
        same_as_oci_spec(&format!("a:{}", "t".repeat(128)));
        same_as_oci_spec(&format!("a:{}", "t".repeat(129)));
    }

    /// Random strings over the characters the grammar cares about.
    #[test]
    fn agrees_with_oci_spec_on_random_strings() {
        // Lowercase letters and digits weigh more, so that many strings are valid references.
        let alphabet = b"ab09lab09la09.-_:/@+AB";
        let mut seed: u64 = 0x2026_1202;
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut s = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 14) as usize;
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push(alphabet[(seed % alphabet.len() as u64) as usize] as char);
            }
            accepted += usize::from(same_as_oci_spec(&s));
        }
        // Valid references too, not only strings both parsers refuse.
        assert!(
            accepted > 2_000,
            "only {accepted} valid references generated"
        );
    }

    /// Where this parser differs on purpose: oci-spec 0.10 takes Unicode letters in a tag (its
    /// `\w` is Unicode); Docker's grammar and registries do not.
    #[test]
    fn tags_are_ascii() {
        assert_eq!(
            parse("os:v\u{e9}").err(),
            Some(ParseError::ReferenceInvalidFormat)
        );
        assert!(parse("os:v_e-1.0").is_ok());
    }
}

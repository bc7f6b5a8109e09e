//! The fuzz targets of clb: one function per parser of untrusted bytes.
//! `fuzz/libfuzzer/fuzz_targets/` hands each to libFuzzer (`scripts/fuzz NAME`); `tests/smoke.rs` replays the committed
//! corpora and a bounded mutation run through the same functions on stable Rust, in CI.
//!
//! A target returns normally for any input the parser refuses: only a panic, a hang or
//! unbounded memory is a finding. Where a parser can also write what it read, the target
//! checks that the two agree (a round trip), so a parse that silently changes meaning is a
//! finding too.

use std::io::Cursor;
use std::sync::OnceLock;

use clb::registry::{Manifest, Platform};
use clb_ondisk::{BootState, EnvBlock, SlotManifest};

/// A fuzz target: takes any bytes, returns normally or panics on a finding.
pub type Target = fn(&[u8]);

/// Every target by the name of its `fuzz/libfuzzer/fuzz_targets/NAME.rs` and of its corpus
/// directory `fuzz/corpus/NAME`.
pub const TARGETS: &[(&str, Target)] = &[
    ("boot_state", boot_state),
    ("slot_manifest", slot_manifest),
    ("oci_manifest", oci_manifest),
    ("cosign_signature", cosign_signature),
    ("cosign_bundle", cosign_bundle),
    ("cloud_config", cloud_config),
    ("kernel_cmdline", kernel_cmdline),
    ("hook_http", hook_http),
    ("tar_rewrite", tar_rewrite),
];

const ENV_HEADER: &[u8] = b"# GRUB Environment Block\n";

/// The GRUB environment block and the boot state in it: the input as a whole block, and as
/// the body of a well-formed block (so that most inputs reach the variable parser).
pub fn boot_state(data: &[u8]) {
    let mut block = ENV_HEADER.to_vec();
    block.extend(
        data.iter()
            .take(clb_ondisk::envblock::ENV_BLOCK_SIZE - ENV_HEADER.len()),
    );
    block.resize(clb_ondisk::envblock::ENV_BLOCK_SIZE, b'#');
    for block in [data, &block[..]] {
        if let Ok(env) = EnvBlock::parse(block)
            && let Ok(written) = env.to_block()
        {
            assert_eq!(
                EnvBlock::parse(&written).ok(),
                Some(env),
                "env block round trip"
            );
        }
        if let Ok(state) = BootState::parse(block) {
            let mut next = state.clone();
            let _ = next.decide_boot();
            if let Ok(written) = state.to_block() {
                assert_eq!(
                    BootState::parse(&written).ok(),
                    Some(state),
                    "boot state round trip"
                );
            }
        }
    }
}

/// A slot's manifest (`slots/<slot>.json`).
pub fn slot_manifest(data: &[u8]) {
    if let Ok(slot) = SlotManifest::from_json(data) {
        let _ = slot.layer_digests().count();
        let again = SlotManifest::from_json(&slot.to_json()).ok();
        assert_eq!(again, Some(slot), "slot manifest round trip");
    }
}

/// A registry's manifest or index, as `clb upgrade` resolves it.
pub fn oci_manifest(data: &[u8]) {
    static PLATFORM: OnceLock<Option<Platform>> = OnceLock::new();
    let Some(platform) = PLATFORM.get_or_init(|| Platform::parse("linux/amd64").ok()) else {
        return;
    };
    match clb::registry::manifest::parse(data, "fuzz", platform) {
        Ok(Manifest::Image(m)) => {
            for layer in &m.layers {
                // What the store makes of a digest must stay one file name.
                let name = clb_ondisk::layout::digest_file_name(&layer.digest);
                assert!(!name.contains('/') && name != "." && name != "..", "{name}");
                let _ = clb::pull::layer_kind(&layer.media_type);
            }
        }
        Ok(Manifest::Index(digest)) => assert!(!digest.contains('/'), "{digest}"),
        Err(_) => {}
    }
}

const DIGEST: &str = "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// A cosign signature manifest (`.sig` tag), its layers' annotations (legacy keyless
/// bundles), a simple-signing payload, and a referrers index.
pub fn cosign_signature(data: &[u8]) {
    if let Ok(layers) = clb_cosign::parse_signature_manifest(data) {
        for d in layers {
            let layer = clb_cosign::SignatureLayer {
                payload: data.to_vec(),
                signature_b64: d.signature_b64().to_string(),
                media_type: d.media_type.clone(),
                annotations: d.annotations.clone(),
            };
            if clb_cosign::is_keyless(&layer) {
                let _ = clb_cosign::legacy_bundle(&layer);
            }
        }
    }
    let _ = clb_cosign::check_signed_payload(data, DIGEST);
    let _ = clb_cosign::bundle_referrers(data);
    let _ = clb_cosign::untyped_referrers(data);
    let _ = clb_cosign::bundle_layer(data, DIGEST);
}

/// A public key to verify bundles with: cosign2.pub of containers/image's test data
/// (shared/corpus/sigstore/containers-image).
const KEY_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEwOkOF9xpfG8ghueIhnZ66ooujwt1
+ReV3HupgKnGFYnEh3Hh1YTg5L6kN1Yakkt5WltRoav8/R3hpCtUO3Rldw==
-----END PUBLIC KEY-----
";

/// A Sigstore bundle (cosign v3), verified for an image digest with a key (logged or not)
/// and keyless against Sigstore's public-good root. No input may verify: nothing here is
/// signed by the key or issued by the root for [`DIGEST`].
pub fn cosign_bundle(data: &[u8]) {
    static ROOT: OnceLock<Option<clb_cosign::SigstoreRoot>> = OnceLock::new();
    let Some(root) = ROOT.get_or_init(|| {
        clb_cosign::SigstoreRoot::from_json(clb_cosign::embedded_trusted_root(false)).ok()
    }) else {
        return;
    };
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    let key = clb_cosign::Signer::Key {
        pem: KEY_PEM.to_string(),
        require_log: false,
    };
    let keyless = clb_cosign::Signer::Identity {
        identity: clb_cosign::Matcher::Exact("fuzz@example.com".into()),
        issuer: clb_cosign::Matcher::Exact("https://accounts.example.com".into()),
    };
    for signer in [&key, &keyless] {
        let verified = clb_cosign::verify_image_bundle(json, root, DIGEST, signer);
        assert!(verified.is_err(), "an unsigned input verified");
    }
}

/// A cloud-config file: the YAML loader, and the template engine over it.
pub fn cloud_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = clb_cloud_config::parse_str("fuzz.yaml", text);
    let values = serde_json::json!({"Values": {"os": {"hostname": "h"}, "list": [1, 2, 3]}});
    if let Ok(rendered) = clb_cloud_config::render_template(text, &values) {
        let _ = clb_cloud_config::parse_str("fuzz.yaml", &rendered);
    }
}

/// The kernel command line, as the initrd hook reads it.
pub fn kernel_cmdline(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = clb_initrd::cmdline::Config::parse(&text);
}

/// A server's response to the hook's netboot client, and the layer-set manifest it carries.
pub fn hook_http(data: &[u8]) {
    static URL: OnceLock<Option<clb_initrd::http::Url>> = OnceLock::new();
    let Some(url) = URL.get_or_init(|| clb_initrd::http::Url::parse("http://127.0.0.1:1/m").ok())
    else {
        return;
    };
    let mut body = Vec::new();
    let outcome = clb_initrd::http::read_response(&mut Cursor::new(data), &mut body, url);
    if let Ok(clb_initrd::http::Outcome::Body(n)) = outcome {
        assert_eq!(n, body.len() as u64, "body size");
        let _ = clb_initrd::netboot::parse_manifest(&body);
    }
    let _ = clb_initrd::netboot::parse_manifest(data);
}

/// An image layer (tar; gzip, zstd or plain) through the rewriting pass of the converter.
pub fn tar_rewrite(data: &[u8]) {
    let _ = clb_convert::rewrite_layer(data, std::io::sink());
}

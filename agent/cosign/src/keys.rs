//! Key handling: generation, private signing keys, trusted public keys.
//!
//! Only ECDSA P-256 with SHA-256 is accepted, on purpose: it is what
//! `cosign generate-key-pair` produces, and cosign verifies every
//! non-RSA/Ed25519 key with SHA-256 whereas sigstore-rs would pick SHA-384
//! for P-384; restricting to P-256 keeps both implementations agreeing on
//! exactly what a signature means.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};
use sigstore::crypto::signing_key::KeyPair as _;
use sigstore::crypto::signing_key::ecdsa::ec::{EcdsaKeys, EcdsaSigner};
use sigstore::crypto::signing_key::ecdsa::{ECDSAKeys, EllipticCurve};
use sigstore::crypto::signing_key::kdf;
use sigstore::crypto::{CosignVerificationKey, SigStoreSigner};

use crate::error::CosignError;
use crate::pem;

/// PEM label cosign (v2+) writes for encrypted private keys.
const SIGSTORE_ENCRYPTED_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// PEM label older cosign (v1) wrote; still accepted.
const COSIGN_ENCRYPTED_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";

/// A freshly generated key pair, as `cosign generate-key-pair` writes it.
#[derive(Clone)]
pub struct KeyPairPem {
    /// `ENCRYPTED SIGSTORE PRIVATE KEY` PEM (cosign.key).
    pub private_key_pem: String,
    /// SPKI `PUBLIC KEY` PEM (cosign.pub).
    pub public_key_pem: String,
    /// sha256 hex of the SPKI DER, as [`TrustedKey::fingerprint`].
    pub fingerprint: String,
}

impl std::fmt::Debug for KeyPairPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key is encrypted, but keep it out of logs anyway.
        f.debug_struct("KeyPairPem")
            .field("public_key_pem", &self.public_key_pem)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn fingerprint(spki_der: &[u8]) -> String {
    hex::encode(Sha256::digest(spki_der))
}

fn bad_key(e: impl std::fmt::Display) -> CosignError {
    CosignError::BadKey(e.to_string())
}

/// Generates an ECDSA P-256 key pair: the private key encrypted with
/// `password` in cosign's format (scrypt KDF + NaCl secretbox, JSON, PEM
/// label `ENCRYPTED SIGSTORE PRIVATE KEY`) and the SPKI public key PEM.
/// An empty password is allowed, as with `COSIGN_PASSWORD=`.
pub fn generate_key_pair(password: &[u8]) -> Result<KeyPairPem, CosignError> {
    let keys =
        EcdsaKeys::new(EllipticCurve::P256).map_err(|e| CosignError::Signing(e.to_string()))?;
    let pkcs8 = keys
        .private_key_to_der()
        .map_err(|e| CosignError::Signing(e.to_string()))?;
    let spki = keys
        .public_key_to_der()
        .map_err(|e| CosignError::Signing(e.to_string()))?;
    // kdf::encrypt produces the JSON document cosign stores inside the PEM;
    // the PEM framing is ours so lines end in LF like cosign's files.
    let sealed = kdf::encrypt(&pkcs8, password).map_err(|e| CosignError::Signing(e.to_string()))?;
    Ok(KeyPairPem {
        private_key_pem: pem::encode(SIGSTORE_ENCRYPTED_LABEL, &sealed),
        public_key_pem: pem::encode("PUBLIC KEY", &spki),
        fingerprint: fingerprint(&spki),
    })
}

/// A private ECDSA P-256 key ready to sign payloads.
pub struct SigningKey {
    signer: SigStoreSigner,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads a private key PEM:
    /// * `ENCRYPTED SIGSTORE PRIVATE KEY` / `ENCRYPTED COSIGN PRIVATE KEY`
    ///   (cosign's format), decrypted with `password`,
    /// * unencrypted PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY` (e.g. made
    ///   with openssl or a KMS export); `password` is ignored for these.
    ///
    /// A wrong password, a corrupted file, or a key that is not ECDSA P-256
    /// gives [`CosignError::BadKey`].
    pub fn from_encrypted_pem(pem_data: &[u8], password: &[u8]) -> Result<Self, CosignError> {
        let block = pem::parse_one(pem_data).map_err(bad_key)?;
        let pkcs8 = match block.label.as_str() {
            SIGSTORE_ENCRYPTED_LABEL | COSIGN_ENCRYPTED_LABEL => kdf::decrypt(&block.der, password)
                .map_err(|e| {
                    CosignError::BadKey(format!(
                        "cannot decrypt private key (wrong password or corrupted key file): {e}"
                    ))
                })?,
            "PRIVATE KEY" => {
                if !password.is_empty() {
                    tracing::debug!("private key is not encrypted; password ignored");
                }
                block.der
            }
            "EC PRIVATE KEY" => sec1_to_pkcs8_p256(&block.der),
            other => {
                return Err(CosignError::BadKey(format!(
                    "unsupported private key PEM label {other:?} (want {SIGSTORE_ENCRYPTED_LABEL}, PRIVATE KEY or EC PRIVATE KEY)"
                )));
            }
        };
        Self::from_pkcs8_der(&pkcs8)
    }

    /// Loads an unencrypted private key PEM (`PRIVATE KEY`/`EC PRIVATE KEY`)
    /// or a cosign key encrypted with the empty password.
    pub fn from_pem(pem_data: &[u8]) -> Result<Self, CosignError> {
        Self::from_encrypted_pem(pem_data, b"")
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, CosignError> {
        let keys = EcdsaKeys::from_pkcs8_der(der)
            .map_err(|e| CosignError::BadKey(format!("cannot parse private key: {e}")))?;
        let ECDSAKeys::P256(keys) = keys.to_wrapped_ecdsa_keys().map_err(bad_key)? else {
            return Err(CosignError::BadKey(
                "private key is not ECDSA P-256 (the only key type clb signs with)".into(),
            ));
        };
        let spki_der = keys.public_key_to_der().map_err(bad_key)?;
        let signer = SigStoreSigner::ECDSA_P256_SHA256_ASN1(
            EcdsaSigner::from_ecdsa_keys(&keys).map_err(bad_key)?,
        );
        Ok(Self { signer, spki_der })
    }

    /// Signs `payload` (ECDSA P-256, SHA-256) and returns the base64 of the
    /// ASN.1 DER signature: the exact string cosign stores in the
    /// `dev.cosignproject.cosign/signature` annotation.
    pub fn sign(&self, payload: &[u8]) -> Result<String, CosignError> {
        let der = self
            .signer
            .sign(payload)
            .map_err(|e| CosignError::Signing(e.to_string()))?;
        Ok(STANDARD.encode(der))
    }

    /// The matching public key as SPKI PEM (what goes into cosign.pub).
    pub fn public_key_pem(&self) -> String {
        pem::encode("PUBLIC KEY", &self.spki_der)
    }

    /// sha256 hex of the public key's SPKI DER.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.spki_der)
    }

    /// The key hint a Sigstore bundle carries: base64 of the SPKI DER's sha256, as
    /// sigstore-go (and so cosign v3) writes it. Verifiers treat it as opaque.
    pub fn hint(&self) -> String {
        STANDARD.encode(Sha256::digest(&self.spki_der))
    }

    /// The matching public key as a [`TrustedKey`] labelled `source`.
    pub fn trusted_key(&self, source: &str) -> Result<TrustedKey, CosignError> {
        TrustedKey::from_spki_der(&self.spki_der, source)
    }
}

/// Wraps a SEC1 `ECPrivateKey` into a PKCS#8 `PrivateKeyInfo` for P-256, the
/// only form the crypto backend imports. If the SEC1 key is on another
/// curve, its embedded parameters contradict the P-256 algorithm identifier
/// and the import fails, which is the desired outcome.
fn sec1_to_pkcs8_p256(sec1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { id-ecPublicKey, prime256v1 }
    const ALG_ID: &[u8] = &[
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
        0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    let mut body = vec![0x02, 0x01, 0x00]; // version 0
    body.extend_from_slice(ALG_ID);
    body.push(0x04); // OCTET STRING privateKey
    der_len(&mut body, sec1.len());
    body.extend_from_slice(sec1);
    let mut out = vec![0x30];
    der_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
}

/// A public key trusted to sign releases.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Where the key came from (file path or label); recorded in the slot
    /// metadata as "verified with".
    pub source: String,
    /// sha256 hex of the SPKI DER: a stable identifier independent of PEM
    /// formatting.
    pub fingerprint: String,
    pub(crate) key: CosignVerificationKey,
    spki_der: Vec<u8>,
}

impl TrustedKey {
    fn from_spki_der(der: &[u8], source: &str) -> Result<Self, CosignError> {
        let key = CosignVerificationKey::try_from_der(der)
            .map_err(|e| CosignError::BadKey(format!("{source}: cannot parse public key: {e}")))?;
        if !matches!(key, CosignVerificationKey::ECDSA_P256_SHA256_ASN1(_)) {
            return Err(CosignError::BadKey(format!(
                "{source}: public key is not ECDSA P-256 (the only key type accepted)"
            )));
        }
        Ok(Self {
            source: source.to_string(),
            fingerprint: fingerprint(der),
            key,
            spki_der: der.to_vec(),
        })
    }

    /// The key as SPKI PEM (one `PUBLIC KEY` block), as bundle verification takes it.
    pub fn public_key_pem(&self) -> String {
        pem::encode("PUBLIC KEY", &self.spki_der)
    }
}

/// Loads one trusted public key from a PEM file's contents (`PUBLIC KEY`,
/// SPKI, as cosign.pub). If the file holds several blocks, the first
/// `PUBLIC KEY` is used; see [`load_trusted_keys`] to load them all.
pub fn load_trusted_key(pem_data: &[u8], source: &str) -> Result<TrustedKey, CosignError> {
    load_trusted_keys(pem_data, source)?
        .into_iter()
        .next()
        .ok_or_else(|| CosignError::BadKey(format!("{source}: no PUBLIC KEY block")))
}

/// Loads every `PUBLIC KEY` block of a PEM file (a key bundle used during
/// rotation). Each key's `source` is `source` (with `#N` appended, N from 1,
/// when the file holds more than one key).
pub fn load_trusted_keys(pem_data: &[u8], source: &str) -> Result<Vec<TrustedKey>, CosignError> {
    let blocks =
        pem::parse_all(pem_data).map_err(|e| CosignError::BadKey(format!("{source}: {e}")))?;
    let publics: Vec<_> = blocks.iter().filter(|b| b.label == "PUBLIC KEY").collect();
    if publics.is_empty() {
        let labels: Vec<&str> = blocks.iter().map(|b| b.label.as_str()).collect();
        return Err(CosignError::BadKey(format!(
            "{source}: no PUBLIC KEY block (found {})",
            labels.join(", ")
        )));
    }
    let many = publics.len() > 1;
    publics
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let src = if many {
                format!("{source}#{}", i + 1)
            } else {
                source.to_string()
            };
            TrustedKey::from_spki_der(&b.der, &src)
        })
        .collect()
}

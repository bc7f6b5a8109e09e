#!/usr/bin/env python3
"""A private Sigstore instance for tests, written from Sigstore's published formats.

No network, no Fulcio, no Rekor: this script plays all three offline so that keyless
signatures can be made for images in a test registry and verified against the instance's
own trusted_root.json. It shares no code with the Rust implementation (agent/cosign): it
builds every structure from the specifications below, with the Python standard library and
`cryptography` (the Debian one, 38.x, is enough). It imports the registry push code and the
simple-signing payload of tests/cosign_signer.py, by path.

Formats, and where they are specified:
  trusted root  protobuf-specs protos/sigstore_trustroot.proto (TrustedRoot, mediaType
                application/vnd.dev.sigstore.trustedroot+json;version=0.1), as protojson:
                tlogs/ctlogs = TransparencyLogInstance {baseUrl, hashAlgorithm SHA2_256,
                publicKey {rawBytes = DER SPKI, keyDetails PKIX_ECDSA_P256_SHA_256, validFor},
                logId {keyId = SHA-256(DER SPKI)}} (RFC 6962 s3.2 log ID);
                certificateAuthorities = {subject, uri, certChain {certificates: intermediate,
                root}, validFor {start}}. Times RFC 3339, bytes standard base64.
  CA, leaf      Fulcio: root and intermediate ECDSA P-384 (as public-good's), leaf for an
                ephemeral ECDSA P-256 key, empty subject, critical SAN (URI if the identity
                contains "://", else email), key usage digitalSignature (critical), EKU
                codeSigning, SKI/AKI, 10 minutes of validity (fulcio docs/certificate-
                specification.md); OIDC issuer in 1.3.6.1.4.1.57264.1.1 (raw string, deprecated)
                and 1.3.6.1.4.1.57264.1.8 (DER UTF8String) (fulcio docs/oid-info.md).
  SCT           RFC 6962 s3.2/s3.3: v1 SCT from the CT log key over the precertificate
                entry (issuer_key_hash = SHA-256 of the intermediate's SPKI, TBSCertificate
                = the final TBS without the SCT list extension), embedded as
                SignedCertificateTimestampList in extension 1.3.6.1.4.1.11129.2.4.2;
                signature ecdsa/sha256 (TLS SignatureAndHashAlgorithm 4/3).
  Rekor entry   rekor pkg/types/hashedrekord/v0.0.1 (hashedrekord_v0_0_1_schema.json):
                {"apiVersion":"0.0.1","kind":"hashedrekord","spec":{"data":{"hash":
                {"algorithm":"sha256","value":HEX}},"signature":{"content":B64(SIG),
                "publicKey":{"content":B64(PEM certificate)}}}}, canonical JSON (RFC 8785:
                sorted keys, no whitespace; all strings here are ASCII).
  SET           Rekor's signed entry timestamp: ECDSA (SHA-256, DER) by the Rekor key over
                the canonical JSON {"body":B64(body),"integratedTime":T,"logID":HEX(log id),
                "logIndex":N}.
  Merkle tree   RFC 6962 s2.1 (= RFC 9162 s2.1): leaf hash SHA-256(0x00||body), node
                SHA-256(0x01||l||r), audit path PATH(m, D[n]). The log's leaves persist in
                DIR/rekor-log.json (init adds a few unrelated leaves so proofs have hashes).
  checkpoint    C2SP tlog-checkpoint.md + signed-note.md (transparency-dev/formats
                log/README.md): "<origin>\\n<size>\\n<b64 root>\\n" then "\\n— <name>
                b64(keyID[4] || sig)\\n"; origin "<host> - <tree id>" as Rekor v1 writes it;
                ECDSA key ID = first 4 bytes of SHA-256(DER SPKI) (signed-note type 0x02).
  bundle        protobuf-specs protos/sigstore_bundle.proto v0.3, as protojson
                (application/vnd.dev.sigstore.bundle.v0.3+json): verificationMaterial
                {certificate {rawBytes}, tlogEntries [{logIndex, logId {keyId},
                kindVersion, integratedTime, inclusionPromise {signedEntryTimestamp},
                inclusionProof {logIndex, rootHash, treeSize, hashes, checkpoint {envelope}},
                canonicalizedBody}]}, messageSignature {messageDigest {algorithm SHA2_256,
                digest}, signature}; int64 fields as decimal strings.
                The message signature is ECDSA P-256 over the manifest digest, prehashed
                (the signed data is the manifest, whose SHA-256 is the digest).
  legacy .sig   cosign's keyless "classic" layer (see tests/cosign_signer.py and
                /work/shared/corpus/sigstore/containers-image/README.md): simple-signing
                payload signed by the leaf key (ECDSA SHA-256 over the payload bytes),
                annotations dev.cosignproject.cosign/signature, dev.sigstore.cosign/
                certificate (leaf PEM), dev.sigstore.cosign/chain (intermediate then root
                PEM), dev.sigstore.cosign/bundle {"SignedEntryTimestamp": B64, "Payload":
                {"body": B64, "integratedTime": T, "logIndex": N, "logID": HEX}} with a
                hashedrekord body over SHA-256(payload).

Subcommands:
  init DIR [--ca-valid-from RFC3339]
        -> DIR/{root,intermediate}.{key,pem}, DIR/{ctlog,rekor}.key, DIR/rekor-log.json,
           DIR/trusted_root.json (every validFor starts at --ca-valid-from, default a day ago)
  sign-bundle DIR --digest sha256:HEX --identity ID --issuer ISS --out FILE [--tamper KIND]
        -> a v0.3 bundle for the manifest digest. KIND:
           expired          integratedTime after the certificate's notAfter (SET valid)
           untrusted        the leaf is issued by a CA that is not in the trusted root
           proof            one hash of the inclusion proof flipped
           checkpoint       the checkpoint's signature broken
           checkpoint-root  a validly signed checkpoint over another root hash
           no-proof         tlogEntries empty
           set              the SET broken (the inclusion proof is kept)
           sct              the embedded SCT names the CT log but is signed by another key
  sign-legacy DIR --digest D --identity ID --issuer ISS --registry HOST:PORT --repo REPO
        [--tamper expired|untrusted|set|sct]
        -> pushes a keyless layer to HOST:PORT/REPO:sha256-<hex>.sig (appends, plain HTTP)
  attach-bundle --bundle FILE --registry HOST:PORT --repo REPO --digest D [--no-referrers-tag]
        -> pushes FILE as cosign v3 attaches a bundle (artifact manifest with subject D, plus
           the sha256-<hex> referrers fallback index); prints the manifest digest
"""

import argparse
import base64
import datetime
import hashlib
import importlib.util
import json
import os
import struct
import sys

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, utils
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
except ImportError as e:  # fail loudly: tests must not silently skip
    sys.stderr.write(f"sigstore_instance.py: python3 'cryptography' is required: {e}\n")
    sys.exit(3)

TRUSTED_ROOT_MT = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
BUNDLE_MT = "application/vnd.dev.sigstore.bundle.v0.3+json"
OID_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OID_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
OID_SCT_LIST = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
REKOR_HOST = "rekor.clb.test"
CTLOG_URL = "https://ctfe.clb.test"
FULCIO_URL = "https://fulcio.clb.test"
ORG = "clb-test-sigstore"
LEAF_LIFETIME = datetime.timedelta(minutes=10)
FILLER_LEAVES = 6
BUNDLE_TAMPERS = ("expired", "untrusted", "proof", "checkpoint", "checkpoint-root",
                  "no-proof", "set", "sct")
LEGACY_TAMPERS = ("expired", "untrusted", "set", "sct")
CERT_ANN = "dev.sigstore.cosign/certificate"
CHAIN_ANN = "dev.sigstore.cosign/chain"
REKOR_BUNDLE_ANN = "dev.sigstore.cosign/bundle"


def die(msg):
    sys.stderr.write(f"sigstore_instance.py: {msg}\n")
    sys.exit(2)


def load_cosign_signer():
    """tests/cosign_signer.py as a module (its registry and payload code)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cosign_signer.py")
    spec = importlib.util.spec_from_file_location("cosign_signer", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --- encodings -------------------------------------------------------------------------

def b64(data):
    return base64.b64encode(data).decode("ascii")


def canonical_json(obj):
    """RFC 8785 for the ASCII-only objects written here: sorted keys, no whitespace."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def proto_json(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def der_length(n):
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def der_tlv(tag, content):
    return bytes([tag]) + der_length(len(content)) + content


def spki_der(public_key):
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def log_id(public_key):
    """RFC 6962 s3.2: SHA-256 of the log's DER SubjectPublicKeyInfo."""
    return hashlib.sha256(spki_der(public_key)).digest()


def cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def rfc3339(t):
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text):
    try:
        t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        die(f"not an RFC 3339 time: {text!r}")
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def flip_b64(text, at=None):
    """The base64 of the same bytes with one byte flipped (the middle one by default)."""
    raw = bytearray(base64.b64decode(text))
    i = len(raw) // 2 if at is None else at
    raw[i] ^= 0x01
    return b64(bytes(raw))


# --- keys and certificates ---------------------------------------------------------------

def write_key(path, key):
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def read_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def read_cert(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def ca_name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn, key, issuer_cert, issuer_key, not_before, path_length):
    """A CA certificate as Fulcio's: root self-signed (issuer_cert None) or intermediate."""
    ca_usage = x509.KeyUsage(digital_signature=False, content_commitment=False,
                             key_encipherment=False, data_encipherment=False,
                             key_agreement=False, key_cert_sign=True, crl_sign=True,
                             encipher_only=False, decipher_only=False)
    subject = ca_name(cn)
    b = (x509.CertificateBuilder()
         .subject_name(subject)
         .issuer_name(issuer_cert.subject if issuer_cert else subject)
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(not_before)
         .not_valid_after(not_before + datetime.timedelta(days=3650))
         .add_extension(ca_usage, critical=True)
         .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                        critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             (issuer_key or key).public_key()), critical=False))
    if issuer_cert is not None:
        # Fulcio's intermediate is restricted to code signing.
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
                            critical=False)
    return b.sign(issuer_key or key, hashes.SHA384())


def make_ca_pair(prefix, not_before):
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = make_ca(f"{prefix}-root", root_key, None, None, not_before, 1)
    inter_key = ec.generate_private_key(ec.SECP384R1())
    inter = make_ca(f"{prefix}-intermediate", inter_key, root, root_key, not_before, 0)
    return root_key, root, inter_key, inter


def sct_list_extension(ct_key, ct_log_id, tbs_precert, issuer_spki, timestamp_ms):
    """RFC 6962 s3.2: a v1 SCT for a precertificate entry, as a one-element
    SignedCertificateTimestampList (s3.3), DER-wrapped for the X.509 extension."""
    extensions = b""
    signed = (b"\x00"                                     # sct_version v1
              + b"\x00"                                   # signature_type certificate_timestamp
              + struct.pack(">Q", timestamp_ms)
              + struct.pack(">H", 1)                      # entry_type precert_entry
              + hashlib.sha256(issuer_spki).digest()      # issuer_key_hash
              + len(tbs_precert).to_bytes(3, "big") + tbs_precert
              + struct.pack(">H", len(extensions)) + extensions)
    signature = ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
    sct = (b"\x00" + ct_log_id + struct.pack(">Q", timestamp_ms)
           + struct.pack(">H", len(extensions)) + extensions
           + b"\x04\x03"                                   # hash sha256, signature ecdsa
           + struct.pack(">H", len(signature)) + signature)
    serialized = struct.pack(">H", len(sct)) + sct
    sct_list = struct.pack(">H", len(serialized)) + serialized
    return x509.UnrecognizedExtension(OID_SCT_LIST, der_tlv(0x04, sct_list))


def issue_leaf(ca_key, ca_cert, leaf_public, identity, issuer, not_before, ct_key, ct_log_id):
    """A Fulcio-like code signing certificate with an embedded SCT."""
    if "://" in identity:
        san = x509.UniformResourceIdentifier(identity)
    else:
        san = x509.RFC822Name(identity)
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=False, crl_sign=False, encipher_only=False,
                          decipher_only=False)
    extensions = [
        (usage, True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False),
        (x509.SubjectKeyIdentifier.from_public_key(leaf_public), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
        (x509.SubjectAlternativeName([san]), True),
        (x509.UnrecognizedExtension(OID_ISSUER_V1, issuer.encode()), False),
        (x509.UnrecognizedExtension(OID_ISSUER_V2, der_tlv(0x0C, issuer.encode())), False),
    ]
    serial = x509.random_serial_number()

    def builder(extra):
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([]))
             .issuer_name(ca_cert.subject)
             .public_key(leaf_public)
             .serial_number(serial)
             .not_valid_before(not_before)
             .not_valid_after(not_before + LEAF_LIFETIME))
        for ext, critical in extensions + extra:
            b = b.add_extension(ext, critical=critical)
        return b

    # The precertificate's TBSCertificate is the final one without the SCT list extension
    # (RFC 6962 s3.2); the SCT extension comes last, so removing it gives exactly this TBS.
    precert = builder([]).sign(ca_key, hashes.SHA384())
    issuer_spki = spki_der(ca_cert.public_key())
    sct = sct_list_extension(ct_key, ct_log_id, precert.tbs_certificate_bytes, issuer_spki,
                             int(not_before.timestamp() * 1000))
    return builder([(sct, False)]).sign(ca_key, hashes.SHA384())


# --- the instance on disk ------------------------------------------------------------------

class Instance:
    def __init__(self, directory):
        self.dir = directory
        p = lambda name: os.path.join(directory, name)  # noqa: E731
        if not os.path.exists(p("trusted_root.json")):
            die(f"{directory} is not an instance (run init)")
        self.root_key = read_key(p("root.key"))
        self.root = read_cert(p("root.pem"))
        self.inter_key = read_key(p("intermediate.key"))
        self.inter = read_cert(p("intermediate.pem"))
        self.ct_key = read_key(p("ctlog.key"))
        self.rekor_key = read_key(p("rekor.key"))
        self.log_path = p("rekor-log.json")
        with open(self.log_path) as f:
            self.log = json.load(f)

    def append_leaf(self, body):
        """Appends an entry; returns (index, tree size, root, audit path) of the new tree."""
        leaves = [bytes.fromhex(h) for h in self.log["leaves"]]
        leaves.append(leaf_hash(body))
        index = len(leaves) - 1
        self.log["leaves"].append(leaves[-1].hex())
        tmp = self.log_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.log, f)
        os.replace(tmp, self.log_path)
        return index, len(leaves), tree_hash(leaves), audit_path(index, leaves)

    def checkpoint(self, size, root):
        """A signed note (C2SP signed-note, tlog-checkpoint) by the Rekor key."""
        origin = f"{REKOR_HOST} - {self.log['treeId']}"
        text = f"{origin}\n{size}\n{b64(root)}\n"
        sig = self.rekor_key.sign(text.encode(), ec.ECDSA(hashes.SHA256()))
        key_id = log_id(self.rekor_key.public_key())[:4]
        return f"{text}\n\u2014 {REKOR_HOST} {b64(key_id + sig)}\n"

    def set_for(self, body, integrated_time, index):
        payload = canonical_json({
            "body": b64(body),
            "integratedTime": integrated_time,
            "logID": log_id(self.rekor_key.public_key()).hex(),
            "logIndex": index,
        })
        return b64(self.rekor_key.sign(payload, ec.ECDSA(hashes.SHA256())))


# RFC 6962 s2.1 Merkle hash trees, over leaf hashes.

def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def tree_hash(leaves):
    if len(leaves) == 1:
        return leaves[0]
    k = split_point(len(leaves))
    return node_hash(tree_hash(leaves[:k]), tree_hash(leaves[k:]))


def audit_path(m, leaves):
    if len(leaves) <= 1:
        return []
    k = split_point(len(leaves))
    if m < k:
        return audit_path(m, leaves[:k]) + [tree_hash(leaves[k:])]
    return audit_path(m - k, leaves[k:]) + [tree_hash(leaves[:k])]


def hashedrekord_body(data_sha256, signature, leaf):
    return canonical_json({
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": data_sha256.hex()}},
            "signature": {"content": b64(signature),
                          "publicKey": {"content": b64(cert_pem(leaf))}},
        },
    })


def cmd_init(args):
    os.makedirs(args.dir, exist_ok=True)
    start = (parse_rfc3339(args.ca_valid_from) if args.ca_valid_from
             else now_utc() - datetime.timedelta(days=1))
    root_key, root, inter_key, inter = make_ca_pair("clb-test-fulcio", start)
    ct_key = ec.generate_private_key(ec.SECP256R1())
    rekor_key = ec.generate_private_key(ec.SECP256R1())
    p = lambda name: os.path.join(args.dir, name)  # noqa: E731
    write_key(p("root.key"), root_key)
    write_key(p("intermediate.key"), inter_key)
    write_key(p("ctlog.key"), ct_key)
    write_key(p("rekor.key"), rekor_key)
    for name, cert in (("root.pem", root), ("intermediate.pem", inter)):
        with open(p(name), "wb") as f:
            f.write(cert_pem(cert))
    # A log that already holds unrelated entries, so that inclusion proofs are not empty.
    log = {"treeId": int.from_bytes(os.urandom(7), "big"),
           "leaves": [leaf_hash(os.urandom(32)).hex() for _ in range(FILLER_LEAVES)]}
    with open(p("rekor-log.json"), "w") as f:
        json.dump(log, f)

    valid_for = {"start": rfc3339(start)}

    def log_instance(url, key):
        return {
            "baseUrl": url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": b64(spki_der(key.public_key())),
                          "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                          "validFor": valid_for},
            "logId": {"keyId": b64(log_id(key.public_key()))},
        }

    trusted_root = {
        "mediaType": TRUSTED_ROOT_MT,
        "tlogs": [log_instance(f"https://{REKOR_HOST}", rekor_key)],
        "certificateAuthorities": [{
            "subject": {"organization": ORG, "commonName": "clb-test-fulcio-root"},
            "uri": FULCIO_URL,
            "certChain": {"certificates": [{"rawBytes": b64(cert_der(inter))},
                                           {"rawBytes": b64(cert_der(root))}]},
            "validFor": valid_for,
        }],
        "ctlogs": [log_instance(CTLOG_URL, ct_key)],
    }
    with open(p("trusted_root.json"), "w") as f:
        json.dump(trusted_root, f, indent=2)
        f.write("\n")
    print(p("trusted_root.json"))
    return 0


class Signing:
    """The certificate, key and times of one signing event, tampered as asked."""

    def __init__(self, inst, identity, issuer, tamper):
        now = now_utc()
        self.key = ec.generate_private_key(ec.SECP256R1())
        if tamper == "expired":
            # Issued an hour ago, so expired 50 minutes ago; logged 10 minutes ago.
            not_before = now - datetime.timedelta(hours=1)
            self.integrated_time = int((now - datetime.timedelta(minutes=10)).timestamp())
        else:
            not_before = now - datetime.timedelta(minutes=1)
            self.integrated_time = int((now - datetime.timedelta(seconds=30)).timestamp())
        ca_key, ca_cert, self.chain = inst.inter_key, inst.inter, [inst.inter, inst.root]
        if tamper == "untrusted":
            rogue_start = now - datetime.timedelta(days=1)
            rogue_root_key, rogue_root, ca_key, ca_cert = make_ca_pair("clb-test-rogue",
                                                                       rogue_start)
            self.chain = [ca_cert, rogue_root]
        ct_key = inst.ct_key
        if tamper == "sct":
            # Claims the CT log's ID, signed by another key.
            ct_key = ec.generate_private_key(ec.SECP256R1())
        self.leaf = issue_leaf(ca_key, ca_cert, self.key.public_key(), identity, issuer,
                               not_before, ct_key, log_id(inst.ct_key.public_key()))


def check_digest(digest):
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64:
        die(f"digest must be sha256:<64 hex>, not {digest!r}")
    try:
        return bytes.fromhex(hexpart)
    except ValueError:
        die(f"digest must be sha256:<64 hex>, not {digest!r}")


def cmd_sign_bundle(args):
    inst = Instance(args.dir)
    digest = check_digest(args.digest)
    s = Signing(inst, args.identity, args.issuer, args.tamper)
    # A message signature over the manifest: ECDSA over its SHA-256, i.e. prehashed.
    signature = s.key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    body = hashedrekord_body(digest, signature, s.leaf)
    index, size, root, path = inst.append_leaf(body)
    set_b64 = inst.set_for(body, s.integrated_time, index)
    checkpoint = inst.checkpoint(size, root)
    hashes_b64 = [b64(h) for h in path]

    if args.tamper == "set":
        set_b64 = flip_b64(set_b64)
    elif args.tamper == "proof":
        if not hashes_b64:
            die("the log is too small for a proof with hashes")
        hashes_b64[0] = flip_b64(hashes_b64[0])
    elif args.tamper == "checkpoint":
        note, _, sig_line = checkpoint.rstrip("\n").rpartition("\n")
        prefix, _, sig = sig_line.rpartition(" ")
        # Flip a byte of the ECDSA signature (after the 4-byte key ID and DER header).
        checkpoint = f"{note}\n{prefix} {flip_b64(sig, at=12)}\n"
    elif args.tamper == "checkpoint-root":
        checkpoint = inst.checkpoint(size, hashlib.sha256(root).digest())

    entry = {
        "logIndex": str(index),
        "logId": {"keyId": b64(log_id(inst.rekor_key.public_key()))},
        "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
        "integratedTime": str(s.integrated_time),
        "inclusionPromise": {"signedEntryTimestamp": set_b64},
        "inclusionProof": {
            "logIndex": str(index),
            "rootHash": b64(root),
            "treeSize": str(size),
            "hashes": hashes_b64,
            "checkpoint": {"envelope": checkpoint},
        },
        "canonicalizedBody": b64(body),
    }
    bundle = {
        "mediaType": BUNDLE_MT,
        "verificationMaterial": {
            "certificate": {"rawBytes": b64(cert_der(s.leaf))},
            "tlogEntries": [] if args.tamper == "no-proof" else [entry],
        },
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": b64(digest)},
            "signature": b64(signature),
        },
    }
    with open(args.out, "wb") as f:
        f.write(proto_json(bundle))
    print(args.out)
    return 0


def cmd_sign_legacy(args):
    cs = load_cosign_signer()
    inst = Instance(args.dir)
    check_digest(args.digest)
    s = Signing(inst, args.identity, args.issuer, args.tamper)
    payload = cs.build_payload(f"{args.registry}/{args.repo}", args.digest)
    signature = s.key.sign(payload, ec.ECDSA(hashes.SHA256()))
    body = hashedrekord_body(hashlib.sha256(payload).digest(), signature, s.leaf)
    index, _, _, _ = inst.append_leaf(body)
    set_b64 = inst.set_for(body, s.integrated_time, index)
    if args.tamper == "set":
        set_b64 = flip_b64(set_b64)
    # Go's encoding/json of cosign's bundle.RekorBundle (field order as declared).
    rekor_bundle = cs.go_json({
        "SignedEntryTimestamp": set_b64,
        "Payload": {
            "body": b64(body),
            "integratedTime": s.integrated_time,
            "logIndex": index,
            "logID": log_id(inst.rekor_key.public_key()).hex(),
        },
    }).decode()
    annotations = {
        cs.SIG_ANNOTATION: b64(signature),
        CERT_ANN: cert_pem(s.leaf).decode(),
        CHAIN_ANN: b"".join(cert_pem(c) for c in s.chain).decode(),
        REKOR_BUNDLE_ANN: rekor_bundle,
    }
    base = f"http://{args.registry}"
    tag = cs.signature_tag(args.digest)
    layers = cs.existing_layers(base, args.repo, tag)
    pdigest = cs.push_blob(base, args.repo, payload)
    layers.append((pdigest, len(payload), annotations))
    config = cs.config_blob([l[0] for l in layers])
    cs.push_blob(base, args.repo, config)
    manifest = cs.manifest_bytes(config, layers)
    cs.put_manifest(base, args.repo, tag, cs.OCI_MANIFEST, manifest)
    print(f"{args.registry}/{args.repo}:{tag}")
    return 0


def cmd_attach_bundle(args):
    """Pushes a bundle file as cosign v3 attaches one (cosign_signer.py's format 2)."""
    cs = load_cosign_signer()
    check_digest(args.digest)
    with open(args.bundle, "rb") as f:
        bundle = f.read()
    try:
        parsed = json.loads(bundle)
    except ValueError:
        die(f"{args.bundle} is not JSON")
    base = f"http://{args.registry}"
    try:
        subject_mt, subject_size = cs.head_manifest(base, args.repo, args.digest)
    except cs.urllib.error.HTTPError as e:
        die(f"HEAD {args.repo}@{args.digest}: HTTP {e.code}")
    config = b"{}"
    cs.push_blob(base, args.repo, config)
    bundle_digest = cs.push_blob(base, args.repo, bundle)
    created = now_utc().strftime("%Y-%m-%dT%H:%M:%SZ")
    if "dsseEnvelope" in parsed:
        annotations = {cs.ANN_CONTENT: "dsse-envelope",
                       cs.ANN_PREDICATE: cs.COSIGN_SIGN_PREDICATE, cs.ANN_CREATED: created}
    else:
        annotations = {cs.ANN_CONTENT: "message-signature", cs.ANN_CREATED: created}
    manifest = cs.go_json({
        "schemaVersion": 2,
        "mediaType": cs.OCI_MANIFEST,
        "config": {"mediaType": cs.OCI_EMPTY, "size": len(config),
                   "digest": cs.sha256_digest(config), "artifactType": BUNDLE_MT},
        "layers": [{"mediaType": BUNDLE_MT, "size": len(bundle), "digest": bundle_digest}],
        "annotations": dict(sorted(annotations.items())),
        "subject": {"mediaType": subject_mt, "size": subject_size, "digest": args.digest},
        "artifactType": BUNDLE_MT,
    })
    manifest_digest = cs.sha256_digest(manifest)
    cs.put_manifest(base, args.repo, manifest_digest, cs.OCI_MANIFEST, manifest)
    if not args.no_referrers_tag and not cs.registry_has_referrers_api(base, args.repo,
                                                                        args.digest):
        desc = {"mediaType": cs.OCI_MANIFEST, "size": len(manifest),
                "digest": manifest_digest, "artifactType": BUNDLE_MT}
        cs.update_referrers_tag(base, args.repo, args.digest, desc)
    print(manifest_digest)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    i = sub.add_parser("init")
    i.add_argument("dir")
    i.add_argument("--ca-valid-from", help="RFC 3339; default: a day ago")

    for name, tampers in (("sign-bundle", BUNDLE_TAMPERS), ("sign-legacy", LEGACY_TAMPERS)):
        s = sub.add_parser(name)
        s.add_argument("dir")
        s.add_argument("--digest", required=True)
        s.add_argument("--identity", required=True)
        s.add_argument("--issuer", required=True)
        s.add_argument("--tamper", choices=tampers)
        if name == "sign-bundle":
            s.add_argument("--out", required=True)
        else:
            s.add_argument("--registry", required=True)
            s.add_argument("--repo", required=True)

    a = sub.add_parser("attach-bundle")
    a.add_argument("--bundle", required=True)
    a.add_argument("--registry", required=True)
    a.add_argument("--repo", required=True)
    a.add_argument("--digest", required=True)
    a.add_argument("--no-referrers-tag", action="store_true")

    args = p.parse_args()
    return {
        "init": cmd_init,
        "sign-bundle": cmd_sign_bundle,
        "sign-legacy": cmd_sign_legacy,
        "attach-bundle": cmd_attach_bundle,
    }[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Independent cosign test signer, written from the cosign format.

Debian's skopeo is built without sigstore signing, so signatures made outside
clb's own code come from this script. It deliberately shares no code with the
Rust implementation (agent/cosign): it rebuilds the simple-signing payload, the
signature and the signature manifest from the format description, using only
the Python standard library and `cryptography`.

Format (cosign "classic" attached signatures, key-based, no Rekor bundle):
  payload  = {"critical":{"identity":{"docker-reference":REPO},
              "image":{"docker-manifest-digest":DIGEST},
              "type":"cosign container image signature"},"optional":null}
             (compact, Go encoding/json escaping)
  signature = base64(ASN.1 DER ECDSA P-256 / SHA-256 over the payload bytes)
  tag       = DIGEST with ':' replaced by '-', plus ".sig"
  manifest  = OCI image manifest; config = go-containerregistry's empty image
              config with rootfs.diff_ids = [payload digests]; one layer per
              signature, media type application/vnd.dev.cosign.simplesigning.v1+json,
              annotation dev.cosignproject.cosign/signature = signature

Subcommands:
  keygen OUT_PREFIX [--format pkcs8|sec1]   -> OUT_PREFIX.key, OUT_PREFIX.pub
  payload --repo R --digest D               -> payload bytes on stdout
  sign-local --key K --repo R --digest D [--payload-digest-override D2]
             [--payload-out FILE]           -> base64 signature on stdout
  sign --key K --registry HOST:PORT --repo REPO --digest D
       [--docker-reference R] [--payload-digest-override D2]
                                            -> pushes to HOST:PORT/REPO:sha256-<hex>.sig
                                               (appends to an existing .sig manifest)
  verify --pub P --payload FILE --sig B64   -> exit 0 if valid, 1 if not
"""

import argparse
import base64
import hashlib
import json
import sys
import urllib.error
import urllib.request

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
except ImportError as e:  # fail loudly: tests must not silently skip
    sys.stderr.write(f"cosign_signer.py: python3 'cryptography' is required: {e}\n")
    sys.exit(3)

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIG_ANNOTATION = "dev.cosignproject.cosign/signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
ZERO_TIME = "0001-01-01T00:00:00Z"


def go_json(obj):
    """Compact JSON as Go's encoding/json writes it (HTML-safe escapes)."""
    s = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        s = s.replace(ch, esc)
    return s.encode("utf-8")


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_payload(docker_reference, digest):
    # dicts keep insertion order: critical{identity, image, type}, optional,
    # which is the Go struct field order cosign serialises.
    return go_json({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    })


def load_private(path):
    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        sys.exit("cosign_signer.py: key must be ECDSA P-256")
    return key


def sign_bytes(key, payload):
    der = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(der).decode("ascii")


def signature_tag(digest):
    algo, _, hexpart = digest.partition(":")
    if not hexpart:
        sys.exit(f"cosign_signer.py: bad digest {digest!r}")
    return f"{algo}-{hexpart}.sig"


def config_blob(diff_ids):
    return go_json({
        "architecture": "",
        "created": ZERO_TIME,
        "history": [{"created": ZERO_TIME} for _ in diff_ids],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "config": {},
    })


def manifest_bytes(config, layers):
    """layers: list of (payload_digest, payload_size, annotations dict)."""
    return go_json({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": sha256_digest(config)},
        "layers": [
            {"mediaType": SIMPLE_SIGNING, "size": size, "digest": dg,
             "annotations": dict(sorted(ann.items()))}
            for dg, size, ann in layers
        ],
    })


# --- registry (OCI distribution API over plain HTTP) ---------------------------

def http(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    return urllib.request.urlopen(req, timeout=30)


def push_blob(base, repo, data):
    digest = sha256_digest(data)
    try:
        with http("HEAD", f"{base}/v2/{repo}/blobs/{digest}"):
            return digest
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise
    with http("POST", f"{base}/v2/{repo}/blobs/uploads/", data=b"") as r:
        location = r.headers["Location"]
    if location.startswith("/"):
        location = base + location
    sep = "&" if "?" in location else "?"
    with http("PUT", f"{location}{sep}digest={digest}", data=data,
              headers={"Content-Type": "application/octet-stream",
                       "Content-Length": str(len(data))}):
        pass
    return digest


def existing_layers(base, repo, tag):
    """Layers of the current .sig manifest, to append like cosign does."""
    try:
        with http("GET", f"{base}/v2/{repo}/manifests/{tag}",
                  headers={"Accept": OCI_MANIFEST}) as r:
            m = json.loads(r.read())
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return []
        raise
    return [(l["digest"], l["size"], l.get("annotations") or {}) for l in m.get("layers", [])]


def cmd_sign(args, push):
    key = load_private(args.key)
    reference = args.docker_reference or (
        f"{args.registry}/{args.repo}" if push else args.repo)
    payload = build_payload(reference, args.payload_digest_override or args.digest)
    sig = sign_bytes(key, payload)
    if args.payload_out:
        with open(args.payload_out, "wb") as f:
            f.write(payload)
    if not push:
        print(sig)
        return 0
    base = f"http://{args.registry}"
    tag = signature_tag(args.digest)
    layers = existing_layers(base, args.repo, tag)
    pdigest = push_blob(base, args.repo, payload)
    layers.append((pdigest, len(payload), {SIG_ANNOTATION: sig}))
    config = config_blob([l[0] for l in layers])
    push_blob(base, args.repo, config)
    manifest = manifest_bytes(config, layers)
    with http("PUT", f"{base}/v2/{args.repo}/manifests/{tag}", data=manifest,
              headers={"Content-Type": OCI_MANIFEST}):
        pass
    print(f"{args.registry}/{args.repo}:{tag}")
    return 0


def cmd_keygen(args):
    key = ec.generate_private_key(ec.SECP256R1())
    fmt = (serialization.PrivateFormat.PKCS8 if args.format == "pkcs8"
           else serialization.PrivateFormat.TraditionalOpenSSL)
    with open(args.out_prefix + ".key", "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, fmt,
                                  serialization.NoEncryption()))
    with open(args.out_prefix + ".pub", "wb") as f:
        f.write(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return 0


def cmd_verify(args):
    with open(args.pub, "rb") as f:
        pub = serialization.load_pem_public_key(f.read())
    with open(args.payload, "rb") as f:
        payload = f.read()
    try:
        der = base64.b64decode(args.sig, validate=True)
        pub.verify(der, payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError) as e:
        print(f"signature INVALID: {type(e).__name__} {e}", file=sys.stderr)
        return 1
    print("signature OK")
    return 0


def cmd_payload(args):
    sys.stdout.buffer.write(build_payload(args.repo, args.digest))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    k = sub.add_parser("keygen")
    k.add_argument("out_prefix")
    k.add_argument("--format", choices=["pkcs8", "sec1"], default="pkcs8")

    for name in ("sign", "sign-local"):
        s = sub.add_parser(name)
        s.add_argument("--key", required=True)
        s.add_argument("--repo", required=True)
        s.add_argument("--digest", required=True)
        s.add_argument("--docker-reference")
        s.add_argument("--payload-digest-override")
        s.add_argument("--payload-out")
        if name == "sign":
            s.add_argument("--registry", required=True)

    v = sub.add_parser("verify")
    v.add_argument("--pub", required=True)
    v.add_argument("--payload", required=True)
    v.add_argument("--sig", required=True)

    pl = sub.add_parser("payload")
    pl.add_argument("--repo", required=True)
    pl.add_argument("--digest", required=True)

    args = p.parse_args()
    if args.cmd == "keygen":
        return cmd_keygen(args)
    if args.cmd == "sign":
        return cmd_sign(args, push=True)
    if args.cmd == "sign-local":
        return cmd_sign(args, push=False)
    if args.cmd == "verify":
        return cmd_verify(args)
    return cmd_payload(args)


if __name__ == "__main__":
    sys.exit(main())

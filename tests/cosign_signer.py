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

Format 2 (cosign v3 "new bundle format", what `cosign sign --key K --tlog-upload=false`
pushes for REPO@D; the default since cosign v3.0). Described from cosign v3.1.2 (go.mod:
go-containerregistry v0.21.7, sigstore-go v1.2.x, protobuf-specs v0.5.x), paths in those repos:
  statement = in-toto Statement v1 (in-toto/attestation protos/in_toto_attestation/v1/
              statement.proto, resource_descriptor.proto), as protojson writes it: fields in
              proto declaration order, map keys sorted, empty/unset fields left out:
      {"_type":"https://in-toto.io/Statement/v1",
       "subject":[{"digest":{"sha256":HEX(D)},"annotations":{}}],
       "predicateType":"https://sigstore.dev/cosign/sign/v1",
       "predicate":{}}
      - cosign cmd/cosign/cli/sign/sign.go signDigestBundle: subject = ResourceDescriptor
        {Digest: {algo: hex}, Annotations: structpb.NewStruct(-a annotations)}. There is NO
        "name": cosign never sets it. With no -a flags the Struct is empty but set, so protojson
        writes "annotations":{} (cosign < 3.0.3 had no Annotations: key absent).
      - predicateType = types.CosignSignPredicateType (pkg/types/predicate.go); "predicate":{}
        is &structpb.Struct{} (cosign >= 3.0.5; before, no predicate key).
  PAE       = "DSSEv1 <len(type)> <type> <len(payload)> <payload>" (byte lengths; sigstore-go
              pkg/sign/content.go DSSEData.PreAuthEncoding), type = application/vnd.in-toto+json
              (cosign cmd/cosign/cli/signcommon/common.go NewAttestationBundle)
  signature = ASN.1 DER ECDSA P-256 over SHA-256(PAE) (cosign internal/key/svkeypair.go SignData)
  bundle    = protojson of dev.sigstore.bundle.v1.Bundle (protobuf-specs protos/sigstore_bundle.proto,
              envelope.proto, sigstore_common.proto; built by sigstore-go pkg/sign/signer.go Bundle,
              written by cosign pkg/cosign/bundle/sign.go SignData):
      {"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json",
       "verificationMaterial":{"publicKey":{"hint":HINT}},
       "dsseEnvelope":{"payload":B64(statement),"payloadType":"application/vnd.in-toto+json",
                       "signatures":[{"sig":B64(signature)}]}}
      - HINT = std-base64(SHA-256(DER SubjectPublicKeyInfo of the public key)) (cosign
        internal/key/svkeypair.go NewSignerVerifierKeypair; the same rule as sigstore-go
        pkg/sign/keys.go for ephemeral keys)
      - no "keyid"; "tlogEntries" and "timestampVerificationData" are ABSENT (protojson leaves
        out empty lists/unset messages): with --tlog-upload=false the signing config has no
        Rekor and, without --timestamp-server-url, no TSA (cosign signcommon/common.go
        NewSigningConfigFromKeyOpts); B64 = standard base64 with padding (protojson bytes)
  config    = blob "{}" (uploaded by cosign as application/vnd.oci.image.config.v1+json, but the
              descriptor says application/vnd.oci.empty.v1+json; pkg/oci/remote/write.go
              writeEmptyConfigLayer)
  manifest  = Go encoding/json of cosign's referrerManifest (pkg/oci/remote/write.go
              WriteAttestationNewBundleFormat -> WriteReferrer; go-containerregistry
              pkg/v1/manifest.go field order), PUT by its own digest:
      {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
       "config":{"mediaType":"application/vnd.oci.empty.v1+json","size":2,
                 "digest":"sha256:44136fa3...8a","artifactType":BUNDLE_MT},
       "layers":[{"mediaType":BUNDLE_MT,"size":len(bundle),"digest":sha256(bundle)}],
       "annotations":{"dev.sigstore.bundle.content":"dsse-envelope",
                      "dev.sigstore.bundle.predicateType":PREDICATE_TYPE,
                      "org.opencontainers.image.created":RFC 3339 UTC, seconds, "Z"},
       "subject":{"mediaType":MT,"size":S,"digest":D},
       "artifactType":BUNDLE_MT}
      - BUNDLE_MT = application/vnd.dev.sigstore.bundle.v0.3+json (sigstore-go
        pkg/bundle MediaTypeString("0.3")); subject = go-containerregistry remote.Head of REPO@D
        (Content-Type and Content-Length); the config descriptor carries artifactType too.
  referrers = go-containerregistry v0.21.7 pkg/v1/remote/write.go commitManifest and
              commitSubjectReferrers, after the manifest PUT:
      GET /v2/REPO/referrers/D: 200 -> nothing more (the registry keeps the list);
      404 or 400 -> GET tag sha256-HEX(D) (distribution-spec spec.md "Referrers Tag Schema");
      404 -> start {"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
      "manifests":[]}, else it must be schemaVersion 2 and that mediaType; nothing to do if the
      digest is already listed; append {"mediaType":"application/vnd.oci.image.manifest.v1+json",
      "size":N,"digest":DG,"artifactType":BUNDLE_MT}; sort "manifests" by digest; PUT at the tag.
      - NO annotations in that descriptor, although distribution-spec "Pushing Manifests with
        Subject" step 5 says they MUST be copied (--index-annotations adds them).
      - cosign <= 3.0.6 (go-containerregistry < 0.21.6) wrote "artifactType" = config.mediaType
        = application/vnd.oci.empty.v1+json there (--legacy-index-artifact-type).
  Not confirmed (no cosign binary here): the exact bytes of protojson output. protojson
  deliberately inserts random-but-per-binary-stable spaces (its "detrand"), so the statement and
  bundle bytes cosign writes may differ in whitespace; this script writes them compact. The
  statement is signed as the bytes carried in the envelope, so any form verifies.

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
  sign-bundle --key K --registry HOST:PORT --repo REPO --digest D
       [--subject-media-type MT] [--statement-digest-override D2] [--predicate-type T]
       [--no-referrers-tag] [--index-annotations] [--legacy-index-artifact-type]
       [--bundle-out FILE]                  -> pushes format 2 for REPO@D; prints the
                                               artifact manifest digest
  check-bundle --pub P --registry HOST:PORT --repo REPO --digest D
                                            -> checks every manifest listed at tag
                                               sha256-<hex>; one line each (OK, or the first
                                               failed check); exit 0 if one passes, else 1
"""

import argparse
import base64
import datetime
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


# --- format 2: cosign v3 Sigstore bundle attached as an OCI 1.1 referrer -------

BUNDLE_MT = "application/vnd.dev.sigstore.bundle.v0.3+json"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ANN_CONTENT = "dev.sigstore.bundle.content"
ANN_PREDICATE = "dev.sigstore.bundle.predicateType"
ANN_CREATED = "org.opencontainers.image.created"
MANIFEST_ACCEPT = ", ".join([
    OCI_MANIFEST, OCI_INDEX,
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


def proto_json(obj):
    """Compact JSON for protojson output (no HTML escaping, unlike encoding/json)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def b64(data):
    return base64.b64encode(data).decode("ascii")


def pae(payload_type, payload):
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def key_hint(public_key):
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return b64(hashlib.sha256(der).digest())


def split_digest(digest):
    algo, _, hexpart = digest.partition(":")
    if not algo or not hexpart:
        sys.exit(f"cosign_signer.py: bad digest {digest!r}")
    return algo, hexpart


def build_statement(digest, predicate_type):
    algo, hexpart = split_digest(digest)
    # Proto declaration order: _type, subject, predicateType, predicate; ResourceDescriptor:
    # (name, uri unset) digest, annotations.
    return proto_json({
        "_type": STATEMENT_V1,
        "subject": [{"digest": {algo: hexpart}, "annotations": {}}],
        "predicateType": predicate_type,
        "predicate": {},
    })


def build_bundle(key, statement):
    sig = key.sign(pae(INTOTO_PAYLOAD_TYPE, statement), ec.ECDSA(hashes.SHA256()))
    return proto_json({
        "mediaType": BUNDLE_MT,
        "verificationMaterial": {"publicKey": {"hint": key_hint(key.public_key())}},
        "dsseEnvelope": {
            "payload": b64(statement),
            "payloadType": INTOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": b64(sig)}],
        },
    })


def descriptor_json(d):
    """A descriptor in go-containerregistry's v1.Descriptor field order (unknown fields drop)."""
    out = {"mediaType": d.get("mediaType", ""), "size": d.get("size", 0),
           "digest": d.get("digest", "")}
    for k in ("data", "urls"):
        if d.get(k):
            out[k] = d[k]
    if d.get("annotations"):
        out["annotations"] = dict(sorted(d["annotations"].items()))
    if d.get("platform"):
        out["platform"] = d["platform"]
    if d.get("artifactType"):
        out["artifactType"] = d["artifactType"]
    return out


def head_manifest(base, repo, digest):
    """(media type, size) of REPO@digest, as go-containerregistry's remote.Head reads them."""
    with http("HEAD", f"{base}/v2/{repo}/manifests/{digest}",
              headers={"Accept": MANIFEST_ACCEPT}) as r:
        mt = (r.headers.get("Content-Type") or "").split(";")[0].strip()
        return mt, int(r.headers["Content-Length"])


def put_manifest(base, repo, reference, media_type, body):
    with http("PUT", f"{base}/v2/{repo}/manifests/{reference}", data=body,
              headers={"Content-Type": media_type}):
        pass


def registry_has_referrers_api(base, repo, digest):
    try:
        with http("GET", f"{base}/v2/{repo}/referrers/{digest}",
                  headers={"Accept": OCI_INDEX}):
            return True
    except urllib.error.HTTPError as e:
        if e.code in (400, 404):
            return False
        raise


def update_referrers_tag(base, repo, subject_digest, desc):
    algo, hexpart = split_digest(subject_digest)
    tag = f"{algo}-{hexpart}"
    try:
        with http("GET", f"{base}/v2/{repo}/manifests/{tag}",
                  headers={"Accept": OCI_INDEX}) as r:
            index = json.loads(r.read())
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    if index.get("schemaVersion") != 2 or index.get("mediaType") != OCI_INDEX:
        sys.exit(f"cosign_signer.py: {repo}:{tag} is not an OCI image index")
    manifests = [descriptor_json(m) for m in index.get("manifests") or []]
    if any(m["digest"] == desc["digest"] for m in manifests):
        return
    manifests.append(descriptor_json(desc))
    manifests.sort(key=lambda m: m["digest"])
    out = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    if index.get("annotations"):
        out["annotations"] = dict(sorted(index["annotations"].items()))
    if index.get("subject"):
        out["subject"] = descriptor_json(index["subject"])
    if index.get("artifactType"):
        out["artifactType"] = index["artifactType"]
    put_manifest(base, repo, tag, OCI_INDEX, go_json(out))


def cmd_sign_bundle(args):
    key = load_private(args.key)
    base = f"http://{args.registry}"
    predicate_type = args.predicate_type or COSIGN_SIGN_PREDICATE
    statement = build_statement(args.statement_digest_override or args.digest, predicate_type)
    bundle = build_bundle(key, statement)
    if args.bundle_out:
        with open(args.bundle_out, "wb") as f:
            f.write(bundle)

    try:
        subject_mt, subject_size = head_manifest(base, args.repo, args.digest)
    except urllib.error.HTTPError as e:
        sys.exit(f"cosign_signer.py: HEAD {args.repo}@{args.digest}: HTTP {e.code}")
    subject_mt = args.subject_media_type or subject_mt
    config = b"{}"
    push_blob(base, args.repo, config)
    bundle_digest = push_blob(base, args.repo, bundle)
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    annotations = {ANN_CONTENT: "dsse-envelope", ANN_PREDICATE: predicate_type,
                   ANN_CREATED: created}
    manifest = go_json({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_EMPTY, "size": len(config),
                   "digest": sha256_digest(config), "artifactType": BUNDLE_MT},
        "layers": [{"mediaType": BUNDLE_MT, "size": len(bundle), "digest": bundle_digest}],
        "annotations": dict(sorted(annotations.items())),
        "subject": {"mediaType": subject_mt, "size": subject_size, "digest": args.digest},
        "artifactType": BUNDLE_MT,
    })
    manifest_digest = sha256_digest(manifest)
    put_manifest(base, args.repo, manifest_digest, OCI_MANIFEST, manifest)

    if not args.no_referrers_tag and not registry_has_referrers_api(base, args.repo, args.digest):
        desc = {"mediaType": OCI_MANIFEST, "size": len(manifest), "digest": manifest_digest,
                "artifactType": OCI_EMPTY if args.legacy_index_artifact_type else BUNDLE_MT}
        if args.index_annotations:
            desc["annotations"] = annotations
        update_referrers_tag(base, args.repo, args.digest, desc)
    print(manifest_digest)
    return 0


class CheckFailed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise CheckFailed(what)


def fetch(base, path, accept=None):
    try:
        with http("GET", f"{base}{path}",
                  headers={"Accept": accept} if accept else {}) as r:
            return r.read(), (r.headers.get("Content-Type") or "").split(";")[0].strip()
    except urllib.error.HTTPError as e:
        raise CheckFailed(f"GET {path}: HTTP {e.code}") from None


def check_one(base, repo, subject_digest, pub, digest):
    """Raises CheckFailed naming the first check a listed referrer fails."""
    raw, _ = fetch(base, f"/v2/{repo}/manifests/{digest}", OCI_MANIFEST)
    expect(sha256_digest(raw) == digest, "manifest digest mismatch")
    try:
        m = json.loads(raw)
    except ValueError:
        raise CheckFailed("manifest is not JSON") from None
    expect(m.get("schemaVersion") == 2, "manifest schemaVersion != 2")
    expect(m.get("mediaType") == OCI_MANIFEST, f"manifest mediaType {m.get('mediaType')!r}")
    expect(m.get("artifactType") == BUNDLE_MT, f"artifactType {m.get('artifactType')!r}")
    cfg = m.get("config") or {}
    expect(cfg.get("mediaType") == OCI_EMPTY, f"config mediaType {cfg.get('mediaType')!r}")
    expect(cfg.get("digest") == OCI_EMPTY_DIGEST, f"config digest {cfg.get('digest')!r}")
    expect(cfg.get("size") == 2, f"config size {cfg.get('size')!r}")
    layers = m.get("layers") or []
    expect(len(layers) == 1, f"{len(layers)} layers, want 1")
    layer = layers[0]
    expect(layer.get("mediaType") == BUNDLE_MT, f"layer mediaType {layer.get('mediaType')!r}")
    subj = m.get("subject") or {}
    expect(subj.get("digest") == subject_digest, f"subject digest {subj.get('digest')!r}")
    ann = m.get("annotations") or {}
    expect(ann.get(ANN_CONTENT) == "dsse-envelope", f"annotation {ANN_CONTENT} {ann.get(ANN_CONTENT)!r}")
    expect(ann.get(ANN_PREDICATE) == COSIGN_SIGN_PREDICATE,
           f"annotation {ANN_PREDICATE} {ann.get(ANN_PREDICATE)!r}")
    try:
        datetime.datetime.strptime(ann.get(ANN_CREATED, ""), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise CheckFailed(f"annotation {ANN_CREATED} {ann.get(ANN_CREATED)!r}") from None

    blob, _ = fetch(base, f"/v2/{repo}/blobs/{layer.get('digest')}")
    expect(sha256_digest(blob) == layer.get("digest"), "bundle blob digest mismatch")
    expect(len(blob) == layer.get("size"), "bundle blob size mismatch")
    try:
        bundle = json.loads(blob)
    except ValueError:
        raise CheckFailed("bundle is not JSON") from None
    expect(bundle.get("mediaType") == BUNDLE_MT, f"bundle mediaType {bundle.get('mediaType')!r}")
    env = bundle.get("dsseEnvelope")
    expect(isinstance(env, dict), "bundle has no dsseEnvelope")
    expect(env.get("payloadType") == INTOTO_PAYLOAD_TYPE, f"payloadType {env.get('payloadType')!r}")
    try:
        payload = base64.b64decode(env.get("payload", ""), validate=True)
        statement = json.loads(payload)
    except ValueError:
        raise CheckFailed("DSSE payload is not base64 JSON") from None
    expect(statement.get("_type") == STATEMENT_V1, f"statement _type {statement.get('_type')!r}")
    expect(statement.get("predicateType") == COSIGN_SIGN_PREDICATE,
           f"predicateType {statement.get('predicateType')!r}")
    subjects = statement.get("subject") or []
    expect(len(subjects) == 1, f"{len(subjects)} statement subjects, want 1")
    algo, hexpart = split_digest(subject_digest)
    got = (subjects[0].get("digest") or {}).get(algo)
    expect(got == hexpart, f"statement subject digest {algo}:{got}")
    sigs = env.get("signatures") or []
    expect(len(sigs) == 1, f"{len(sigs)} DSSE signatures, want 1")
    try:
        der = base64.b64decode(sigs[0].get("sig", ""), validate=True)
        pub.verify(der, pae(env["payloadType"], payload), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise CheckFailed("signature does not verify with the key") from None


def cmd_check_bundle(args):
    with open(args.pub, "rb") as f:
        pub = serialization.load_pem_public_key(f.read())
    base = f"http://{args.registry}"
    algo, hexpart = split_digest(args.digest)
    tag = f"{algo}-{hexpart}"
    try:
        raw, _ = fetch(base, f"/v2/{args.repo}/manifests/{tag}", OCI_INDEX)
        index = json.loads(raw)
        expect(index.get("mediaType") == OCI_INDEX and index.get("schemaVersion") == 2,
               f"{tag} is not an OCI image index")
    except (CheckFailed, ValueError) as e:
        print(f"FAIL referrers index {args.repo}:{tag}: {e}")
        return 1
    ok = 0
    for desc in index.get("manifests") or []:
        digest = desc.get("digest")
        try:
            check_one(base, args.repo, args.digest, pub, digest)
        except CheckFailed as e:
            print(f"FAIL {digest}: {e}")
            continue
        print(f"OK {digest}")
        ok += 1
    if not index.get("manifests"):
        print(f"FAIL referrers index {args.repo}:{tag}: no manifests listed")
    return 0 if ok else 1


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

    sb = sub.add_parser("sign-bundle")
    sb.add_argument("--key", required=True)
    sb.add_argument("--registry", required=True)
    sb.add_argument("--repo", required=True)
    sb.add_argument("--digest", required=True)
    sb.add_argument("--subject-media-type")
    sb.add_argument("--statement-digest-override")
    sb.add_argument("--predicate-type")
    sb.add_argument("--no-referrers-tag", action="store_true")
    sb.add_argument("--index-annotations", action="store_true",
                    help="copy the manifest annotations into the referrers-tag descriptor "
                         "(distribution-spec MUST; cosign does not)")
    sb.add_argument("--legacy-index-artifact-type", action="store_true",
                    help="referrers-tag descriptor artifactType = config mediaType, "
                         "as cosign <= 3.0.6 wrote it")
    sb.add_argument("--bundle-out")

    cb = sub.add_parser("check-bundle")
    cb.add_argument("--pub", required=True)
    cb.add_argument("--registry", required=True)
    cb.add_argument("--repo", required=True)
    cb.add_argument("--digest", required=True)

    args = p.parse_args()
    if args.cmd == "sign-bundle":
        return cmd_sign_bundle(args)
    if args.cmd == "check-bundle":
        return cmd_check_bundle(args)
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

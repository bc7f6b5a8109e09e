#!/usr/bin/env python3
"""Docker token-auth server for clb's tests (the `auth: token:` flow of distribution 2.8).

The registry answers unauthenticated requests with
  401  WWW-Authenticate: Bearer realm="http://127.0.0.1:PORT/token",service="...",scope="..."
and a client then asks this server for a token:
  GET /token?service=SERVICE&scope=repository:NAME:pull,push   [Authorization: Basic ...]

Answers:
  - right Basic credentials: 200 {"token", "access_token", "expires_in", "issued_at"} whose
    JWT grants every requested `repository` action out of {pull, push};
  - no Authorization header (anonymous): 200 with a token granting nothing, so the registry
    refuses the retried request (401 insufficient_scope) instead of this server refusing the
    token; that is what real token services (Docker Hub, Harbor, ...) do for anonymous users;
  - wrong credentials, or a header that is not Basic: 401;
  - a `service` other than ours: 400.

The JWT is ES256 over a fresh P-256 key whose self-signed certificate is written to
--cert-out for the registry's `rootcertbundle`. The header carries `x5c` (the certificate,
which distribution verifies against the bundle and prefers over everything else) and `kid`
(the libtrust fingerprint of the key, distribution's fallback lookup); either alone would
do, both make the token acceptable to any distribution 2.x.

Every /token request is appended to --log as one JSON line
  {"user": "alice"|null, "outcome": "granted"|"anonymous"|"bad-credentials"|"bad-service",
   "status": 200, "scopes": ["repository:os:pull"], "access": [...], "jti": "..."}
so tests can prove the bearer path was taken and for which scopes.

Startup: prints the listening port (bound on 127.0.0.1:0 by this process, so there is no
race for a free port) as the first stdout line, after the certificate is written.
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import http.server
import json
import os
import secrets
import sys
import threading
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

TOKEN_LIFETIME = 300
ALLOWED_ACTIONS = ("pull", "push")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def libtrust_key_id(public_key) -> str:
    """libtrust's key ID: base32 of the first 240 bits of SHA-256(DER SubjectPublicKeyInfo),
    in 12 colon-separated groups of 4 characters."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii").rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


def make_key_and_cert(issuer: str):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Back-dated so a slightly skewed clock cannot make the registry reject it.
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def sign_jwt(key, cert, claims: dict) -> str:
    header = {
        "typ": "JWT",
        "alg": "ES256",
        "kid": libtrust_key_id(key.public_key()),
        "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()],
    }
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    der = key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    # JWS wants the raw r || s (32 bytes each), not the DER that `cryptography` returns.
    r, s = decode_dss_signature(der)
    return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def granted_access(scopes):
    """Every requested repository action we know, merged per repository name."""
    by_name = {}
    for scope in scopes:
        # TYPE:NAME:ACTIONS; only `repository` resources are granted (never
        # `registry:catalog:*`). NAME is everything between the first and last ':'.
        parts = scope.split(":")
        if len(parts) < 3 or parts[0] != "repository":
            continue
        name = ":".join(parts[1:-1])
        actions = [a for a in parts[-1].split(",") if a in ALLOWED_ACTIONS]
        merged = by_name.setdefault(name, [])
        merged.extend(a for a in actions if a not in merged)
    return [
        {"type": "repository", "name": n, "actions": a} for n, a in by_name.items() if a
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--service", required=True)
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--cert-out", required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()

    key, cert = make_key_and_cert(args.issuer)
    tmp = args.cert_out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, args.cert_out)
    log_lock = threading.Lock()
    expected_auth = "Basic " + base64.b64encode(
        f"{args.user}:{args.password}".encode()
    ).decode("ascii")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):  # stderr goes to the fixture's log file
            sys.stderr.write("token-server: " + (fmt % a) + "\n")

        def reply(self, status, body: dict, extra_headers=()):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra_headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def record(self, entry):
            with log_lock, open(args.log, "a") as f:
                f.write(json.dumps(entry) + "\n")

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if url.path != "/token":
                self.reply(404, {"error": "not found"})
                return
            query = urllib.parse.parse_qs(url.query)
            scopes = [s for v in query.get("scope", []) for s in v.split(" ") if s]
            entry = {"user": None, "scopes": scopes, "access": [], "jti": None}
            if query.get("service", [None])[0] != args.service:
                self.record({**entry, "outcome": "bad-service", "status": 400})
                self.reply(400, {"error": "unknown service"})
                return
            header = self.headers.get("Authorization")
            if header is None:
                outcome, user, access = "anonymous", None, []
            elif hmac.compare_digest(header.encode(), expected_auth.encode()):
                outcome, user, access = "granted", args.user, granted_access(scopes)
            else:
                self.record({**entry, "outcome": "bad-credentials", "status": 401})
                self.reply(
                    401,
                    {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]},
                    [("WWW-Authenticate", 'Basic realm="clb-test-token"')],
                )
                return
            now = int(time.time())
            jti = secrets.token_hex(16)
            claims = {
                "iss": args.issuer,
                "sub": user or "",
                "aud": args.service,
                "exp": now + TOKEN_LIFETIME,
                "nbf": now - 1,
                "iat": now,
                "jti": jti,
                "access": access,
            }
            token = sign_jwt(key, cert, claims)
            self.record(
                {**entry, "user": user, "access": access, "jti": jti,
                 "outcome": outcome, "status": 200}
            )
            issued = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
            self.reply(
                200,
                {
                    "token": token,
                    "access_token": token,
                    "expires_in": TOKEN_LIFETIME,
                    "issued_at": issued.strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
            )

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

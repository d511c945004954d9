"""Better Auth's keys, played locally: signing keys like its JWT plugin's, a JWKS server that publishes
them (or a decoy's) and records every request, and tokens built by hand."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

JWKS_PATH = "/api/auth/jwks"  # where Better Auth publishes its keys, below BETTER_AUTH_URL


def b64url(data: bytes | dict[str, Any]) -> str:
    """Unpadded base64url of `data`, a dict as its JSON."""
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hand_signed(header: dict[str, Any], payload: dict[str, Any], secret: str | bytes | None) -> str:
    """HMAC-SHA256 over exactly this header and payload with `secret`, or unsigned when it is None."""
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    if secret is None:
        return signing_input + "."
    key = secret.encode() if isinstance(secret, str) else secret
    return f"{signing_input}.{b64url(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


@dataclass(frozen=True)
class SigningKey:
    """A key pair like one of Better Auth's JWT plugin keys: a `kid` and one algorithm."""

    kid: str
    alg: str
    private: Any

    @classmethod
    def generate(cls, alg: str, kid: str | None = None) -> SigningKey:
        private = {
            "EdDSA": ed25519.Ed25519PrivateKey.generate,
            "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
            "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "PS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        }[alg]()
        return cls(uuid.uuid4().hex if kid is None else kid, alg, private)

    def jwk(self) -> dict[str, Any]:
        """The public key as Better Auth's /jwks lists it: the JWK plus `kid` and `alg`."""
        public = jwt.get_algorithm_by_name(self.alg).to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "alg": self.alg}

    def pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, payload: dict[str, Any], *, alg: str | None = None, **header: Any) -> str:
        """A token over exactly `payload` (no claim is added or checked), with our `kid` unless
        another (or None, for none) is given."""
        alg = alg or self.alg
        header = {name: value for name, value in {"alg": alg, "kid": self.kid, **header}.items() if value is not None}
        signing_input = f"{b64url(header)}.{b64url(payload)}"
        signature = jwt.get_algorithm_by_name(alg).sign(signing_input.encode(), self.private)
        return f"{signing_input}.{b64url(signature)}"


class JwksServer:
    """A local HTTP server answering with `document` (JSON, or bytes as they are), `status` and `headers`
    at `path` (JWKS_PATH; None for every path, elsewhere it is a 404), recording every path asked for."""

    def __init__(self, *keys: SigningKey, path: str | None = JWKS_PATH) -> None:
        self.document: Any = {"keys": [key.jwk() for key in keys]}
        self.status = 200
        self.headers: dict[str, str] = {}
        self.requests: list[str] = []
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.requests.append(self.path)
                document = jwks.document
                body = document if isinstance(document, bytes) else json.dumps(document).encode()
                self.send_response(jwks.status if path is None or self.path == path else 404)
                for name, value in {"Content-Type": "application/json", **jwks.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def publish(self, *keys: SigningKey) -> None:
        self.document = {"keys": [key.jwk() for key in keys]}

    def fetches(self) -> int:
        return self.requests.count(JWKS_PATH)

    def requests_within(self, seconds: float) -> list[str]:
        """The paths asked for, once one is or after `seconds`: a request that must never come can only
        be watched for during a window, and this one ends at the first sign of it."""
        deadline = time.monotonic() + seconds
        while not self.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.requests

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

"""Helpers for client assertion tests: key pairs, assertions signed with them, and a real HTTP
server on a loopback port that serves a JWK Set (for ``jwks_uri``)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_URL = "http://testserver/auth/token"

_KTY = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


@dataclass(frozen=True)
class KeyPair:
    alg: str
    kid: str
    private: Any

    @property
    def public_jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.alg)
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        jwk["kid"] = self.kid
        return jwk

    @property
    def private_jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.alg)
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private))
        jwk["kid"] = self.kid
        return jwk


@cache
def _private_key(kind: str) -> Any:
    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "RSA-b":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "P-256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "P-384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "P-384-b":
        return ec.generate_private_key(ec.SECP384R1())
    return ed25519.Ed25519PrivateKey.generate()


def key_pair(alg: str = "ES384", kid: str | None = None, *, other: bool = False) -> KeyPair:
    """A key pair for ``alg`` (cached per kind, so tests share the slow RSA generation); ``other``
    gives a second, different key of the same kind."""
    kind = {"RS": "RSA", "PS": "RSA", "Ed": "Ed25519"}.get(alg[:2]) or (
        "P-256" if alg == "ES256" else "P-384"
    )
    if other:
        kind += "-b"
    return KeyPair(alg, kid or f"{alg}-{'b' if other else 'a'}", _private_key(kind))


def jwk_set(*pairs: KeyPair) -> dict[str, Any]:
    return {"keys": [pair.public_jwk for pair in pairs]}


def assertion_client(*pairs: KeyPair, **fields: Any) -> dict[str, Any]:
    """A Client that authenticates with assertions signed by ``pairs`` (inline jwks unless ``fields``
    give a jwks_uri instead)."""
    body: dict[str, Any] = {
        "grant_types": ["client_credentials"],
        "auth": {"client_credentials": {"client_assertion_types": [JWT_BEARER]}},
    }
    if pairs:
        body["jwks"] = jwk_set(*pairs)
    body.update(fields)
    return body


def assertion(
    pair: KeyPair,
    client_id: str,
    *,
    aud: Any = TOKEN_URL,
    headers: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    now: float | None = None,
    **claims: Any,
) -> str:
    """A client assertion as RFC 7523 §3 describes it, valid unless the arguments say otherwise."""
    moment = int(now if now is not None else time.time())
    body: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "exp": moment + 120,
        "iat": moment,
        "jti": uuid.uuid4().hex,
    }
    body.update(claims)
    for name in drop:
        body.pop(name, None)
    return jwt.encode(body, pair.private, algorithm=pair.alg, headers={"kid": pair.kid, **(headers or {})})


def token_form(signed: str, **params: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": signed,
        **params,
    }


@dataclass
class JwksServer:
    """What the loopback server answers on every path, and how often it was asked."""

    body: bytes = b'{"keys": []}'
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200
    delay: float = 0.0
    requests: int = 0
    url: str = ""

    def serve(self, document: dict[str, Any], **headers: str) -> None:
        self.body = json.dumps(document).encode()
        self.headers = {"Content-Type": "application/json", **headers}
        self.status = 200


@contextmanager
def jwks_server() -> Iterator[JwksServer]:
    """A real HTTP server on a loopback port, serving ``JwksServer.body`` at ``JwksServer.url``."""
    state = JwksServer()
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            if state.delay:
                stop.wait(state.delay)
            self.send_response(state.status)
            for name, value in state.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            try:
                self.wfile.write(state.body)
            except OSError:
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        server.shutdown()
        server.server_close()

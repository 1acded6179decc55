"""Helpers for the OAuth tests: Clients and tokens."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote_plus

import httpx

from tests.support import ROOT

SECRET = "verysecret"


def client_body(**auth: Any) -> dict[str, Any]:
    """A client_credentials Client with the guide's secret and ``auth.client_credentials`` settings."""
    body: dict[str, Any] = {"secret": SECRET, "grant_types": ["client_credentials"]}
    if auth:
        body["auth"] = {"client_credentials": auth}
    return body


def form_basic(client_id: str, secret: str) -> dict[str, str]:
    """A Basic header as RFC 6749 §2.3.1 builds it (form-urlencoded id and secret)."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def put_client(http: httpx.AsyncClient, client_id: str, body: dict[str, Any]) -> None:
    response = await http.put(f"/Client/{client_id}", json=body, auth=ROOT)
    assert response.status_code in (200, 201), response.text


async def get_token(http: httpx.AsyncClient, client_id: str, **params: str) -> dict[str, Any]:
    response = await http.post(
        "/auth/token",
        json={"grant_type": "client_credentials", "client_id": client_id, "client_secret": SECRET, **params},
    )
    assert response.status_code == 200, response.text
    token: dict[str, Any] = response.json()
    return token

"""Fixtures shared by the OAuth tests."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.oauth.support import client_body, get_token, put_client


@pytest.fixture(params=["jwt", "opaque"])
async def refreshing(client: httpx.AsyncClient, request: pytest.FixtureRequest) -> dict[str, Any]:
    """A token response (with a refresh token) for ``api-client``, once as JWTs and once opaque."""
    settings: dict[str, Any] = {"refresh_token": True}
    if request.param == "jwt":
        settings["token_format"] = "jwt"
    await put_client(client, "api-client", client_body(**settings))
    return await get_token(client, "api-client")

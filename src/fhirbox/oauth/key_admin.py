"""``GET /auth/keys`` and ``POST /auth/keys/rotate`` (root routes): the signing keys' public facts and
their rotation, as ``fhirbox keys list`` and ``fhirbox keys rotate`` give them on the command line.
No private key material is ever answered."""

from __future__ import annotations

from typing import Any

from fhirbox.auth.principal import Principal
from fhirbox.http.errors import HttpError
from fhirbox.http.request import Request
from fhirbox.http.responses import Response, render
from fhirbox.models.session import iso
from fhirbox.oauth.keys import KeyRing, SigningKey, rotate_keys, stored_keys


def _when(moment: float | None) -> str | None:
    return iso(moment) if moment is not None else None


class KeyAdmin:
    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys

    def describe(self, key: SigningKey, source: str) -> dict[str, Any]:
        status = (
            "signing" if key.kid == self.keys.active.kid else "active" if key.retired is None else "retired"
        )
        return {
            "kid": key.kid,
            "alg": key.alg,
            "status": status,
            "source": source,
            "created": _when(key.created) if key.created else None,
            "retired": _when(key.retired),
            "published_until": _when(key.drop_after),
        }

    async def list(self, request: Request, principal: Principal | None) -> Response:
        keys = [
            SigningKey.from_body(body, self.keys.encryption) for body in await stored_keys(self.keys.store)
        ]
        described = [self.describe(key, "database") for key in sorted(keys, key=lambda k: -k.created)]
        if self.keys.key_file:
            described.insert(0, self.describe(self.keys.active, "FHIRBOX_SIGNING_KEY_FILE"))
        return render(request, 200, {"keys": described})

    async def rotate(self, request: Request, principal: Principal | None) -> Response:
        if self.keys.key_file:
            raise HttpError(
                409, "The signing key comes from FHIRBOX_SIGNING_KEY_FILE: replace the file to rotate"
            )
        key = await rotate_keys(
            self.keys.store, self.keys.alg, self.keys.default_lifetime, self.keys.encryption, self.keys.audit
        )
        await self.keys.load()
        return render(request, 200, {"kid": key.kid, "alg": key.alg})

"""The console's HTML: Jinja2 templates (autoescaped), and the headers every console response carries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from fhirbox.http.request import Request
from fhirbox.http.responses import Response

HERE = Path(__file__).parent
# No inline script or style anywhere (CSP), no framing, no sniffing, no referrer, no caching.
SECURITY_HEADERS = (
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
)
HTML = b"text/html; charset=utf-8"


def console_response(
    status: int, body: bytes, content_type: bytes = HTML, headers: dict[str, str] | None = None
) -> Response:
    raw = [(b"content-type", content_type), *SECURITY_HEADERS]
    for name, value in (headers or {}).items():
        raw.append((name.encode("latin-1"), value.encode("latin-1")))
    return Response(status, body, raw)


def redirect(location: str, headers: dict[str, str] | None = None) -> Response:
    """303 See Other: after a form, the browser GETs ``location`` (a path under /ui)."""
    return console_response(303, b"", headers={"Location": location, **(headers or {})})


class Templates:
    """The page templates, compiled once; every value is HTML-escaped unless marked safe."""

    def __init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.ChainableUndefined,  # resources are sparse: a missing field shows as nothing
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, name: str, **context: Any) -> bytes:
        return self.env.get_template(name).render(**context).encode()

    def page(self, status: int, name: str, headers: dict[str, str] | None = None, **context: Any) -> Response:
        return console_response(status, self.render(name, **context), headers=headers)


def cookie_header(request: Request, name: str, value: str, path: str, max_age: int | None = None) -> str:
    """A ``Set-Cookie`` value: HttpOnly, SameSite=Strict, and Secure when the request came over https
    (as the trusted-proxy rules resolve ``request.base_url``)."""
    parts = [f"{name}={value}", f"Path={path}", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if request.base_url.startswith("https://"):
        parts.append("Secure")
    return "; ".join(parts)

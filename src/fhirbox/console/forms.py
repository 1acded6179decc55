"""HTML form bodies (``application/x-www-form-urlencoded``), read within the request's body limit."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fhirbox.http.errors import HttpError
from fhirbox.http.formats import FORM_TYPE, media_type
from fhirbox.http.request import Request

MAX_FIELDS = 200


class Form:
    """A form's fields by name, repeated names (checkboxes) kept in order."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.fields: dict[str, list[str]] = {}
        for name, value in pairs:
            self.fields.setdefault(name, []).append(value)

    def first(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[0] if values else default

    def text(self, name: str) -> str:
        """The field stripped of surrounding whitespace ("" when absent)."""
        return self.first(name).strip()

    def all(self, name: str) -> list[str]:
        return list(self.fields.get(name, ()))

    def checked(self, name: str) -> bool:
        return name in self.fields


async def read_form(request: Request) -> Form:
    """The request's form body; 400 for another content type, undecodable text or too many fields."""
    if request.method != "POST":
        return Form([])
    if media_type(request.headers.get("content-type")) != FORM_TYPE:
        raise HttpError(415, "Console forms are sent as application/x-www-form-urlencoded")
    body = await request.body()
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HttpError(400, f"Unreadable form: {exc}") from None
    return Form(pairs)

"""The log line formats and the access log's redaction of credentials in query strings."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhirbox.logs import (
    ACCESS_FIELDS,
    ACCESS_LOGGER,
    FLUSH_AFTER,
    FLUSH_LINES,
    SECRET_PARAMETERS,
    JsonFormatter,
    LineHandler,
    TextFormatter,
    access_path,
    redact_query,
)

# One text line: key=value fields, a value bare or a JSON string.
TEXT_LINE = re.compile(
    r'[a-z_]+=(?:"(?:[^"\\\n]|\\.)*"|[^\s"=\\]+)(?: [a-z_]+=(?:"(?:[^"\\\n]|\\.)*"|[^\s"=\\]+))*'
)


def record(message: str, *args: object, **attributes: object) -> logging.LogRecord:
    made = logging.LogRecord("fhirbox.test", logging.WARNING, __file__, 1, message, args, None)
    for name, value in attributes.items():
        setattr(made, name, value)
    return made


@pytest.mark.parametrize("name", sorted(SECRET_PARAMETERS))
def test_every_credential_parameter_is_redacted(name: str) -> None:
    query = f"_format=json&{name}=s3cr3t-value&count=2"
    assert redact_query(query) == f"_format=json&{name}=***&count=2"


@pytest.mark.parametrize(
    "query",
    [
        "access_token=s3cr3t-value&access_token=s3cr3t-value",  # repeated
        "ACCESS_TOKEN=s3cr3t-value",  # another case
        "acc%65ss_token=s3cr3t-value",  # percent-encoded name
        "client+secret=x&client_secret=s3cr3t-value",
        "a=1;token=s3cr3t-value",  # ";" separated
        "token=s3cr3t-value=more",  # "=" in the value
        "%zz=1&refresh_token=s3cr3t-value&%ff%fe=2",  # undecodable names around it
        "client_assertion=s3cr3t-value#fragment",
    ],
)
def test_hostile_queries_do_not_leak_a_credential(query: str) -> None:
    assert "s3cr3t-value" not in redact_query(query)


@given(st.text(max_size=100), st.sampled_from(sorted(SECRET_PARAMETERS)), st.text(max_size=100))
def test_a_credential_amid_any_text_is_redacted(before: str, name: str, after: str) -> None:
    assert "SeCrEt" not in redact_query(f"{before}&{name}=SeCrEt{after}")


@given(st.text(max_size=200))
def test_a_query_without_credential_names_is_kept(query: str) -> None:
    if not any(name in query.lower() for name in SECRET_PARAMETERS) and "%" not in query:
        assert redact_query(query) == query


def test_an_access_path_is_one_line_without_spaces_or_quotes() -> None:
    path = access_path('/Patient/a b"\n', "x=1 2&token=abc")
    assert path == "/Patient/a%20b%22%0A?x=1%202&token=***"


def test_json_lines_have_the_promised_keys_and_the_fields() -> None:
    line = JsonFormatter().format(
        record("answered %s", "ok", request_id="rid-1", fields={"status": 200, "path": "/x"})
    )
    parsed = json.loads(line)
    assert parsed["level"] == "WARNING" and parsed["logger"] == "fhirbox.test"
    assert parsed["message"] == "answered ok"
    assert parsed["request_id"] == "rid-1"
    assert parsed["status"] == 200 and parsed["path"] == "/x"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", parsed["time"])


def test_a_traceback_stays_on_one_line_in_both_formats() -> None:
    try:
        raise ValueError('bad "thing"\nsecond line')
    except ValueError:
        made = record("failed")
        made.exc_info = sys.exc_info()
    text = TextFormatter().format(made)
    assert "\n" not in text and TEXT_LINE.fullmatch(text)
    made.exc_text = None
    assert "ValueError" in json.loads(JsonFormatter().format(made))["exception"]


def test_a_text_line_has_no_request_id_when_there_is_none() -> None:
    text = TextFormatter().format(record("message with = and spaces"))
    assert TEXT_LINE.fullmatch(text)
    assert "request_id" not in text
    assert 'message="message with = and spaces"' in text


@pytest.mark.parametrize("formatter", [TextFormatter, JsonFormatter])
@given(
    rid=st.one_of(st.none(), st.text(max_size=20)),
    path=st.text(max_size=30),
    client=st.text(max_size=10),
)
def test_an_access_line_made_directly_is_the_line_its_record_would_make(
    formatter: type[TextFormatter | JsonFormatter], rid: str | None, path: str, client: str
) -> None:
    values = ("10.0.0.1", "GET", path or "/", 200, 12, 1.25, client or "-")
    made = logging.LogRecord(ACCESS_LOGGER, logging.INFO, "", 0, "request", None, None)
    made.fields, made.request_id = dict(zip(ACCESS_FIELDS, values, strict=True)), rid
    assert formatter().access_line(made.created, rid, values) == formatter().format(made)


def test_access_lines_wait_to_be_written_together_and_records_go_at_once() -> None:
    stream = io.StringIO()
    handler = LineHandler(stream)
    handler.setFormatter(TextFormatter())

    async def lines() -> tuple[str, str, str]:
        handler.write("first")
        handler.write("second")
        waiting = stream.getvalue()
        handler.emit(record("trouble"))  # a record: written at once, after what waited
        at_once = stream.getvalue()
        handler.write("third")
        await asyncio.sleep(FLUSH_AFTER * 4)  # the flush armed for it has run
        return waiting, at_once, stream.getvalue()

    waiting, at_once, after = asyncio.run(lines())
    assert waiting == ""
    assert at_once.splitlines()[:2] == ["first", "second"] and "message=trouble" in at_once.splitlines()[2]
    assert after.splitlines()[3:] == ["third"]
    handler.write("no loop running")  # outside a loop: written at once
    assert stream.getvalue().endswith("no loop running\n")


def test_many_access_lines_are_written_without_waiting_for_the_timer() -> None:
    stream = io.StringIO()
    handler = LineHandler(stream)

    async def burst() -> int:
        for n in range(FLUSH_LINES):
            handler.write(f"line {n}")
        return len(stream.getvalue().splitlines())

    assert asyncio.run(burst()) == FLUSH_LINES

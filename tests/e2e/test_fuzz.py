"""Generated requests to every route of a real server: never a 5xx, every error in its documented
format, and the server still healthy afterwards.

``make test`` sends ``FHIRBOX_FUZZ_EXAMPLES`` requests per backend (default 2,000); ``make fuzz`` sends
as many as asked.
"""

from __future__ import annotations

import base64
import json
import os
import string
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

import httpx
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.oauth.support import SECRET, client_body
from tests.support import ROOT, ROOT_ID, ROOT_SECRET, ServerProcess

EXAMPLES = int(os.environ.get("FHIRBOX_FUZZ_EXAMPLES", "2000"))
OAUTH_PATHS = ("/auth/token", "/auth/revoke")

# -- what a request is made of -------------------------------------------------------------------
text = st.text(max_size=40)
ascii_word = st.text(string.ascii_letters + string.digits + "-._~", min_size=1, max_size=20)
segment = st.one_of(
    st.sampled_from(["Patient", "Session", "Client", "AccessPolicy", "SigningKey", "Observation"]),
    st.sampled_from(["pt-1", "api-client", "root", "_history", "1", "2", "0", "-1", "a" * 65]),
    st.sampled_from(["auth", "token", "revoke", "test-policy", ".well-known", "jwks.json", "ui"]),
    ascii_word,
    st.text(min_size=1, max_size=40).map(lambda t: quote(t, safe="")),
)
path = st.one_of(
    st.sampled_from(
        [
            "/Patient", "/Patient/pt-1", "/Patient/pt-1/_history", "/Patient/pt-1/_history/1", "/Session",
            "/Client/api-client", "/AccessPolicy/api-client", "/auth/token", "/auth/revoke",
            "/auth/test-policy", "/.well-known/jwks.json", "/.well-known/oauth-authorization-server",
            "/.well-known/smart-configuration",
            "/health", "/ready", "/", "/ui", "/ui/sign-in", "/ui/clients", "/ui/token", "/ui/sign-out",
        ]
    ),
    st.lists(segment, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts)),
)  # fmt: skip
param_name = st.one_of(
    st.sampled_from(
        ["_count", "_page", "_sort", "_elements", "_id", "_lastUpdated", "_format", "_total", "_bogus",
         "name", "client.id", "active", "resource/id", "resource/type", "vid", "a.b.c", "grant_type"]
    ),
    ascii_word,
    st.lists(ascii_word, min_size=2, max_size=20).map(".".join),
    text,
)  # fmt: skip
param_value = st.one_of(
    st.sampled_from(["", "1", "0", "-1", "1000000000000000000000", "gt2020-01-01", "name", "true",
                     "9999-12-31T23:59:59-01:00", "-_lastUpdated", "json", "yaml", "\x00", "%00"]),
    text,
)  # fmt: skip
query = st.lists(st.tuples(param_name, param_value), max_size=6)

json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)
resource = st.fixed_dictionaries(
    {},
    optional={
        "resourceType": st.sampled_from(["Patient", "Client", "Session", "AccessPolicy", "Other"]) | text,
        "id": st.sampled_from(["pt-1", "x\n", "", "a" * 80]) | text,
        "secret": text,
        "grant_types": st.lists(st.sampled_from(["basic", "client_credentials", "refresh_token"]) | text),
        "engine": st.sampled_from(["allow", "matcho", "json-schema", "complex", "nope"]),
        "matcho": json_value,
        "auth": json_value,
        "meta": json_value,
        "active": json_value,
    },
).flatmap(lambda fixed: st.dictionaries(text, json_value, max_size=3).map(lambda extra: {**extra, **fixed}))
oauth_params = st.dictionaries(
    st.sampled_from(["grant_type", "client_id", "client_secret", "scope", "audience", "resource",
                     "refresh_token", "token", "client_assertion", "client_assertion_type"]) | text,
    st.sampled_from(["client_credentials", "refresh_token", "api-client", SECRET, "root", ""]) | text,
    max_size=5,
)  # fmt: skip


YAML_ODDITIES = [
    b"a: &x [1]\nb: *x\n",
    b"NO: 12:30\n",
    b"- - - - [\n",
    b"!!python/object:os.system 1",
    b"a: 0777\nb: 2024-01-01\n",
]


def yaml_of(document: Any) -> str:
    return yaml.safe_dump(document)


body = st.one_of(
    st.just((None, b"")),
    resource.map(lambda doc: ("application/json", json.dumps(doc).encode())),
    resource.map(lambda doc: ("text/yaml", yaml_of(doc).encode())),
    oauth_params.map(lambda p: ("application/x-www-form-urlencoded", "&".join(
        f"{quote(k)}={quote(v)}" for k, v in p.items()).encode())),
    oauth_params.map(lambda p: ("application/json", json.dumps(p).encode())),
    st.tuples(st.sampled_from(["application/json", "text/yaml", "application/x-www-form-urlencoded",
                               "application/json-patch+json", "application/merge-patch+json",
                               "text/plain", "multipart/form-data", "application/json; charset=latin-1"]),
              st.binary(max_size=200)),
    st.tuples(st.just("text/yaml"), st.sampled_from(YAML_ODDITIES)),
)  # fmt: skip


def basic_header(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def authorization(bearer: str) -> st.SearchStrategy[str | None]:
    return st.one_of(
        st.none(),
        st.just(basic_header(ROOT_ID, ROOT_SECRET)),
        st.just(basic_header("api-client", SECRET)),
        st.just(f"Bearer {bearer}"),
        st.sampled_from(["Bearer", "Basic", "Basic !!!", "Bearer a.b.c", "Digest x", "Bearer x y"]),
        st.text(string.ascii_letters + string.digits + "-._~+/=", min_size=1).map(lambda t: "Bearer " + t),
    )


# Methods the HTTP parser knows (it answers an unknown one with its own 400 before fhirbox sees it).
method = st.sampled_from(
    ["GET", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "PURGE"]
)


def assert_documented_error(path: str, method: str, response: httpx.Response) -> None:
    assert response.status_code < 500, (method, path, response.status_code, response.text[:500])
    if response.status_code < 400 or method == "HEAD":
        return
    content_type = response.headers["content-type"]
    served = unquote(path.partition("?")[0])
    if served == "/ui" or served.startswith("/ui/"):
        # The console's errors are its pages, with its security headers.
        assert content_type.startswith(("text/html", "text/plain")), (method, path, content_type)
        assert response.headers["content-security-policy"] == "default-src 'self'; frame-ancestors 'none'"
        return
    if content_type.startswith("text/yaml"):
        body = yaml.safe_load(response.text)
    else:
        assert content_type.startswith("application/json"), (method, path, content_type, response.text)
        body = response.json()
    if path in OAUTH_PATHS and method == "POST":
        assert isinstance(body.get("error"), str) or body.get("resourceType") == "OperationOutcome", body
    else:
        assert body["resourceType"] == "OperationOutcome", body
        assert body["issue"][0]["diagnostics"]


def fuzz(server: ServerProcess, examples: int) -> int:
    sent = 0
    with server.client(auth=ROOT) as admin:
        admin.put("/Patient/pt-1", json={"name": [{"family": "Doe"}]})
        admin.put("/Client/api-client", json={**client_body(refresh_token=True), "grant_types": [
            "basic", "client_credentials"]})  # fmt: skip
        admin.put(
            "/AccessPolicy/api-client", json={"engine": "allow", "link": [{"reference": "Client/api-client"}]}
        )
        grant = {"grant_type": "client_credentials"}
        bearer = admin.post("/auth/token", data=grant, auth=("api-client", SECRET)).json()["access_token"]

    http = httpx.Client(base_url=server.url, timeout=30.0)

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(method=method, path=path, query=query, body=body, auth=authorization(bearer),
           accept=st.sampled_from([None, "application/json", "text/yaml", "*/*", "text/html", "x"]),
           if_match=st.sampled_from([None, "*", 'W/"1"', "garbage"]))  # fmt: skip
    def one_request(
        method: str,
        path: str,
        query: list[tuple[str, str]],
        body: tuple[str | None, bytes],
        auth: str | None,
        accept: str | None,
        if_match: str | None,
    ) -> None:
        nonlocal sent
        content_type, content = body
        headers = {
            name: value
            for name, value in (("Content-Type", content_type), ("Authorization", auth), ("Accept", accept),
                                ("If-Match", if_match))
            if value is not None
        }  # fmt: skip
        query_string = "&".join(f"{quote(name, safe='/._')}={quote(value, safe='')}" for name, value in query)
        url = path + (f"?{query_string}" if query_string else "")
        response = http.request(method, url, content=content, headers=headers)
        sent += 1
        assert_documented_error(path, method, response)

    try:
        one_request()
    finally:
        http.close()
    return sent


def test_generated_requests_never_get_a_5xx(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory()
    sent = fuzz(server, EXAMPLES)
    assert sent >= EXAMPLES
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
    assert server.proc is not None and server.proc.poll() is None

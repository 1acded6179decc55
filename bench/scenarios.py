"""What is measured: each scenario's request, and the seeding through the API that it needs.

fhirbox is seeded as a user would set it up, through its REST API as root: the clients of the seed
guide (opaque, JWT, JWT with refresh tokens), a Patient, AccessPolicies and bearer tokens.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from bench.load import Load

ROOT_ID = "root"
ROOT_SECRET = "bench-root-secret"
SECRET = "bench-secret"
PATIENT_ID = "bench-read"
PUT_SPREAD = 1000  # PUTs cycle over this many Patients, so that writes do not all hit one row

FORM = "application/x-www-form-urlencoded"
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "name": [{"family": "Bench", "given": ["Load"]}],
    "birthDate": "1980-02-03",
}


@dataclass(frozen=True)
class Scenario:
    """One row of the table. ``variant`` is the server it needs (signing algorithm, or the peer),
    optionally followed by `` audit=off`` (a server with ``FHIRBOX_AUDIT=off``)."""

    name: str
    variant: str
    peer_match: str | None = None  # the peer scenario a token scenario is compared with


FHIRBOX_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("token-opaque", "RS256", "token-opaque"),
    Scenario("token-jwt-rs256", "RS256", "token-jwt-rs256"),
    Scenario("token-jwt-es256", "ES256", "token-jwt-es256"),
    # The very request the peer gets: the same resource indicator on both sides.
    Scenario("token-jwt-rs256-resource", "RS256", "token-jwt-rs256-resource"),
    Scenario("token-jwt-es256-resource", "ES256", "token-jwt-es256-resource"),
    # The peer issues no refresh tokens for client_credentials: compared with its plain RS256 JWT.
    Scenario("token-refresh", "RS256", "token-jwt-rs256"),
    Scenario("token-json-opaque", "RS256", "token-opaque"),
    Scenario("token-json-jwt-rs256", "RS256", "token-jwt-rs256"),
    Scenario("token-json-jwt-es256", "ES256", "token-jwt-es256"),
    Scenario("token-json-refresh", "RS256", "token-jwt-rs256"),
    Scenario("get-bearer-opaque", "RS256"),
    Scenario("introspect-opaque", "RS256"),
    Scenario("get-bearer-jwt", "RS256"),
    Scenario("get-basic-root", "RS256"),
    Scenario("get-policy-client", "RS256"),
    Scenario("put-patient", "RS256"),
    # The cost of the audit trail: the same loads on a server with FHIRBOX_AUDIT=off.
    Scenario("token-opaque-audit-off", "RS256 audit=off", "token-opaque"),
    Scenario("token-jwt-rs256-audit-off", "RS256 audit=off", "token-jwt-rs256"),
    Scenario("put-patient-audit-off", "RS256 audit=off"),
)
AUDIT_OFF_SUFFIX = "-audit-off"


@dataclass(frozen=True)
class Comparison:
    """The cost of a feature: ``scenarios`` measured again, in the same bench run, on a server
    started with ``env`` (the feature off); the table states the difference."""

    feature: str
    env: dict[str, str]
    scenarios: tuple[str, ...]

    @property
    def setting(self) -> str:
        return " ".join(f"{name}={value}" for name, value in self.env.items())


COMPARISONS: tuple[Comparison, ...] = (
    Comparison("access log", {"FHIRBOX_ACCESS_LOG": "false"}, ("token-opaque", "get-bearer-opaque")),
)

# The console's pages, on a server holding 1,000 Clients and 100,000 AuditEvents (bench/console_seed.py).
CONSOLE_PAGES = {
    "console-dashboard": "/ui/",
    "console-clients": "/ui/clients",
    "console-client": "/ui/clients/bench-client-0050",
    "console-policies": "/ui/policies",
    "console-sessions": "/ui/sessions",
    "console-audit": "/ui/audit",
    "console-audit-client": "/ui/audit?client=bench-client-0050",
    "console-keys": "/ui/keys",
}
FHIRBOX_SCENARIOS += tuple(Scenario(name, "console") for name in CONSOLE_PAGES)

# The variant names the algorithm the peer signs https://api.example.com/ tokens with.
PEER_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("token-opaque", "peer-RS256"),
    Scenario("token-jwt-rs256", "peer-RS256"),
    Scenario("token-jwt-es256", "peer-RS256"),
    Scenario("token-jwt-rs256-resource", "peer-RS256"),
    Scenario("token-jwt-es256-resource", "peer-ES256"),
)
API_RESOURCE = "https://api.example.com/"

# The client each token scenario authenticates as (on a server whose keys use the scenario's algorithm).
TOKEN_CLIENTS = {
    "opaque": "bench-opaque",
    "jwt-rs256": "bench-jwt",
    "jwt-es256": "bench-jwt",
    "refresh": "bench-refresh",
}

CLIENTS: dict[str, dict[str, Any]] = {
    "bench-opaque": {"grant_types": ["client_credentials"]},
    "bench-jwt": {
        "grant_types": ["client_credentials"],
        "auth": {"client_credentials": {"token_format": "jwt", "audience": ["https://api.example.com/"]}},
    },
    "bench-refresh": {
        "grant_types": ["client_credentials", "refresh_token"],
        "auth": {"client_credentials": {"token_format": "jwt", "refresh_token": True}},
    },
    "bench-reader": {"grant_types": ["basic"]},
}

POLICIES: dict[str, dict[str, Any]] = {
    # The guide's policy: the bearer-token clients may do everything.
    "bench-bearer": {
        "engine": "allow",
        "link": [
            {"id": "bench-opaque", "resourceType": "Client"},
            {"id": "bench-jwt", "resourceType": "Client"},
        ],
    },
    # A non-root client that may only read Patients.
    "bench-reader": {
        "engine": "matcho",
        "matcho": {"request-method": "get", "params": {"resource/type": "Patient"}},
        "link": [{"id": "bench-reader", "resourceType": "Client"}],
    },
}


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def seed_fhirbox(base_url: str) -> tuple[dict[str, Load], dict[str, list[str]]]:
    """Create what the fhirbox scenarios need; return each scenario's load, and notes on what failed
    (key ``""`` for every scenario, else the scenario's name)."""
    notes: dict[str, list[str]] = {}
    with httpx.Client(base_url=base_url, auth=(ROOT_ID, ROOT_SECRET), timeout=30.0) as http:

        def put(path: str, body: dict[str, Any]) -> None:
            response = http.put(path, json=body)
            if response.status_code >= 300:
                notes.setdefault("", []).append(f"PUT {path}: {response.status_code} {response.text[:160]}")

        for client_id, settings in CLIENTS.items():
            put(f"/Client/{client_id}", {"secret": SECRET, **settings})
        for policy_id, policy in POLICIES.items():
            put(f"/AccessPolicy/{policy_id}", policy)
        put(f"/Patient/{PATIENT_ID}", PATIENT)

        def token(client_id: str, scenario: str) -> str:
            response = http.post(
                "/auth/token",
                data={"grant_type": "client_credentials"},
                auth=(client_id, SECRET),
            )
            if response.status_code != 200:
                note = f"seeding a token for {client_id}: {response.status_code} {response.text[:160]}"
                notes.setdefault(scenario, []).append(note)
                return "no-token"
            return str(response.json().get("access_token", "no-token"))

        opaque = token("bench-opaque", "get-bearer-opaque")
        jwt = token("bench-jwt", "get-bearer-jwt")
        # Every token client has authenticated once before it is measured, as bench-opaque and bench-jwt
        # just did: otherwise the first 32 concurrent requests all hash its secret (scrypt) during the
        # warm-up, which on a loaded machine lasts into the measured runs.
        token("bench-refresh", "token-refresh")

    loads: dict[str, Load] = {}
    for kind, client_id in TOKEN_CLIENTS.items():
        loads[f"token-{kind}"] = Load(
            "POST",
            "/auth/token",
            "grant_type=client_credentials",
            {"Authorization": basic(client_id, SECRET), "Content-Type": FORM},
        )
        body = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": SECRET}
        loads[f"token-json-{kind}"] = Load(
            "POST", "/auth/token", json.dumps(body), {"Content-Type": "application/json"}
        )
    for alg in ("rs256", "es256"):
        loads[f"token-jwt-{alg}-resource"] = Load(
            "POST",
            "/auth/token",
            f"grant_type=client_credentials&resource={quote(API_RESOURCE, safe='')}",
            {"Authorization": basic("bench-jwt", SECRET), "Content-Type": FORM},
        )
    read = f"/Patient/{PATIENT_ID}"
    loads["get-bearer-opaque"] = Load("GET", read, headers={"Authorization": f"Bearer {opaque}"})
    # RFC 7662: the client introspects its own opaque token (Basic, the secret already verified once).
    loads["introspect-opaque"] = Load(
        "POST",
        "/auth/introspect",
        f"token={quote(opaque, safe='')}",
        {"Authorization": basic("bench-opaque", SECRET), "Content-Type": FORM},
    )
    loads["get-bearer-jwt"] = Load("GET", read, headers={"Authorization": f"Bearer {jwt}"})
    loads["get-basic-root"] = Load("GET", read, headers={"Authorization": basic(ROOT_ID, ROOT_SECRET)})
    loads["get-policy-client"] = Load("GET", read, headers={"Authorization": basic("bench-reader", SECRET)})
    loads["put-patient"] = Load(
        "PUT",
        "/Patient/bench-put-",
        json.dumps(PATIENT),
        {"Authorization": basic(ROOT_ID, ROOT_SECRET), "Content-Type": "application/json"},
        spread=PUT_SPREAD,
    )
    for name in list(loads):
        loads[name + AUDIT_OFF_SUFFIX] = loads[name]
    return loads, notes


def console_loads(base_url: str) -> dict[str, Load]:
    """Each console page, requested with the cookie of a root console session."""
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        answer = http.post("/ui/sign-in", data={"client_id": ROOT_ID, "client_secret": ROOT_SECRET})
        cookie = answer.cookies.get("fhirbox_console")
    if answer.status_code != 303 or not cookie:
        raise httpx.HTTPError(f"console sign-in failed: {answer.status_code} {answer.text[:160]}")
    headers = {"Cookie": f"fhirbox_console={cookie}"}
    return {name: Load("GET", path, headers=headers) for name, path in CONSOLE_PAGES.items()}


PEER_CLIENT = ("bench", "bench-secret")


def peer_loads() -> dict[str, Load]:
    """The peer's requests: one client_credentials client, opaque or a JWT per resource indicator."""
    headers = {"Authorization": basic(*PEER_CLIENT), "Content-Type": FORM}
    grant = "grant_type=client_credentials"
    return {
        "token-opaque": Load("POST", "/token", grant, headers),
        "token-jwt-rs256": Load(
            "POST", "/token", f"{grant}&resource={quote('https://rs256.bench/', safe='')}", headers
        ),
        "token-jwt-es256": Load(
            "POST", "/token", f"{grant}&resource={quote('https://es256.bench/', safe='')}", headers
        ),
        # The server's PEER_API_ALG decides RS256 or ES256; the request is fhirbox's, byte for byte.
        "token-jwt-rs256-resource": Load(
            "POST", "/token", f"{grant}&resource={quote(API_RESOURCE, safe='')}", headers
        ),
        "token-jwt-es256-resource": Load(
            "POST", "/token", f"{grant}&resource={quote(API_RESOURCE, safe='')}", headers
        ),
    }

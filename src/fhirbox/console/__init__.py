"""The admin console at ``/ui``: server-rendered pages for Clients, access policies, Sessions, the
audit trail and signing keys.

Every page acts as the signed-in client through the request pipeline (``Pipeline.call``): it can see
and change exactly what that client could through the REST API, under the same policies. The
pipeline authenticates console pages by their cookie (``gate.ConsoleGate``, the ``console`` access
kind) and renders their failures as pages.
"""

from __future__ import annotations

from fhirbox.console.gate import ConsoleGate
from fhirbox.console.pages.audit import AuditPages
from fhirbox.console.pages.clients import ClientPages
from fhirbox.console.pages.dashboard import DashboardPage
from fhirbox.console.pages.keys import KeyPages
from fhirbox.console.pages.policies import PolicyPages
from fhirbox.console.pages.sessions import SessionPages
from fhirbox.console.pages.signin import SignInPages
from fhirbox.console.pages.token import TokenPage
from fhirbox.http.routing import Router
from fhirbox.pipeline import Pipeline

PAGES = (SignInPages, DashboardPage, ClientPages, PolicyPages, SessionPages, AuditPages, KeyPages, TokenPage)


def add_console_routes(router: Router, pipeline: Pipeline, gate: ConsoleGate) -> None:
    """Every console page, each acting through ``pipeline`` as the signed-in client."""
    for pages in PAGES:
        pages(pipeline, gate.templates, gate.sessions).add_routes(router)

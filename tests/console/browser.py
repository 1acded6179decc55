"""A real Chromium for console tests: Debian's ``chromium`` driven by Playwright (never a downloaded
browser). Without one the tests skip, saying why; ``FHIRBOX_REQUIRE_BROWSER=1`` (set by ``.ci/run``)
makes its absence a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("FHIRBOX_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing(reason: str) -> None:
    if os.environ.get("FHIRBOX_REQUIRE_BROWSER") == "1":
        pytest.fail(f"FHIRBOX_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(f"browser tests need {reason.split(' is ')[0]}: {reason} (apt-get install chromium)")


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless Chromium (a Playwright ``Browser``)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()

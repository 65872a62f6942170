"""Browser suite set-up: real Chromium against a live Daphne server.

Playwright's sync API runs an event loop in the test thread, so Django's guard against
database calls from async contexts must be switched off for these tests only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder drives a real browser, whatever its module says."""
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.browser)

"""Browser suite set-up: real Chromium against a live Daphne server.

Playwright's sync API runs an event loop in the test thread, so Django's guard against
database calls from an async context would trip on every query the tests make. The guard
is switched off for these tests only, not for the unit tests that share a session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

E2E_DIR = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _allow_database_calls_beside_playwright(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder drives a real browser, whatever its module says."""
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.browser)

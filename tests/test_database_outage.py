"""The 503 page for a database outage, checked without stopping a database (the real outage
is in tests/faults/test_postgres_restart.py): which errors count, and what htmx gets."""

from __future__ import annotations

import pytest
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils import translation

from config.database_outage import DatabaseUnavailableMiddleware, server_error


def _middleware() -> DatabaseUnavailableMiddleware:
    return DatabaseUnavailableMiddleware(lambda request: HttpResponse())


@pytest.mark.parametrize("error", [OperationalError("gone"), InterfaceError("closed")])
def test_a_database_error_in_a_view_is_the_503_page(error: Exception) -> None:
    request = RequestFactory().post("/c/x/circulars/1/confirm/")
    with translation.override("ja"):
        response = _middleware().process_exception(request, error)
        title = translation.gettext("Kairan is busy or under maintenance")
    assert response is not None
    assert response.status_code == 503
    assert response["Retry-After"] == "120"
    assert response["Cache-Control"] == "no-store"
    assert title in response.content.decode()
    assert "HX-Redirect" not in response


def test_other_errors_are_left_to_the_500_page() -> None:
    request = RequestFactory().get("/")
    assert _middleware().process_exception(request, ValueError("bug")) is None
    try:
        raise ValueError("bug")
    except ValueError:
        assert server_error(request).status_code == 500


def test_a_database_error_in_middleware_reaches_handler500_as_the_503_page() -> None:
    request = RequestFactory().get("/")
    try:
        raise OperationalError("connection refused")
    except OperationalError:
        response = server_error(request)
    assert response.status_code == 503


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        ("http://testserver/c/sakura/circulars/3/", "http://testserver/c/sakura/circulars/3/"),
        ("https://evil.example/phish", "/"),
        ("", "/"),
    ],
)
def test_htmx_is_sent_back_to_its_own_page(current: str, expected: str) -> None:
    request = RequestFactory().post(
        "/c/sakura/circulars/3/confirm/", headers={"HX-Request": "true", "HX-Current-URL": current}
    )
    response = _middleware().process_exception(request, OperationalError("gone"))
    assert response is not None
    assert response.status_code == 503
    assert response["HX-Redirect"] == expected


def test_the_500_page_is_styled_without_inline_styles() -> None:
    """CSP allows styles from 'self' only: the page links the stylesheet."""
    request = RequestFactory().get("/")
    body = server_error(request).content.decode()
    assert "style=" not in body
    assert "/static/css/kairan" in body
    assert "エラーが起きました" in body

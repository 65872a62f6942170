"""Content-Security-Policy and friends on every page, and inert attachment responses.

The pages are the ones the XSS tests fill with hostile text (``test_xss.build_hostile``),
plus the public ones. Our templates have no inline script, so Django leaves the lazy nonce
out of the header; a page that ever adds one must carry the header's nonce.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.csp import ContentSecurityPolicyMiddleware
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils.csp import CSP

from circulars.models import AttachmentKind
from tests.conftest import Town
from tests.security.test_xss import PAYLOADS, Hostile, build_hostile, inspect

UNSAFE_SCRIPT_SOURCES = {"'unsafe-inline'", "'unsafe-eval'", "*", "data:", "http:", "https:"}


def policy_of(header: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def assert_policy(response: HttpResponseBase, *, where: str) -> None:
    header = response.get("Content-Security-Policy")
    assert header, f"{where}: no Content-Security-Policy"
    policy = policy_of(header)
    script_src = policy.get("script-src", policy.get("default-src"))
    assert script_src is not None, where
    assert "'self'" in script_src, f"{where}: {script_src}"
    assert not UNSAFE_SCRIPT_SOURCES & set(script_src), f"{where}: {script_src}"
    assert set(script_src) - {"'self'"} <= {s for s in script_src if s.startswith("'nonce-")}
    assert policy.get("frame-ancestors") == ["'none'"], where
    assert policy.get("object-src") == ["'none'"], where
    assert policy.get("base-uri") == ["'none'"], where
    assert response.get("X-Content-Type-Options") == "nosniff", where

    nonces = {s.removeprefix("'nonce-").removesuffix("'") for s in script_src if "nonce-" in s}
    assert isinstance(response, HttpResponse)
    page = inspect(response.content.decode())
    for script in page.scripts:
        if "src" in script or script.get("type") == "application/json":
            continue
        assert script.get("nonce") in nonces, f"{where}: inline script without the nonce"


@pytest.fixture
def hostile(town: Town) -> Hostile:
    return build_hostile(town, PAYLOADS["script"])


def test_every_page_has_the_policy_and_the_language(hostile: Hostile) -> None:
    for visit in hostile.visits():
        response = visit.client.get(visit.url)
        assert response.status_code == 200, visit.name
        assert_policy(response, where=visit.name)
        assert inspect(response.content.decode()).html_lang == "ja", visit.name

        fragment = visit.client.get(visit.url, headers={"HX-Request": "true"})
        assert_policy(fragment, where=f"{visit.name} (htmx)")


def test_english_pages_say_so(hostile: Hostile) -> None:
    for visit in hostile.visits():
        visit.client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
        response = visit.client.get(visit.url)
        assert response.status_code == 200, visit.name
        assert inspect(response.content.decode()).html_lang == "en", visit.name
        assert_policy(response, where=f"{visit.name} (en)")


@pytest.mark.parametrize(
    "path",
    [
        reverse("home"),
        reverse("help"),
        reverse("join_code"),
        reverse("join_token", args=["no-such-card"]),
        reverse("account_login"),
        "/no/such/page/",
    ],
)
def test_public_pages_and_errors_have_the_policy(db: None, path: str) -> None:
    response = Client().get(path)
    assert response.status_code in {200, 404, 410}, path
    assert_policy(response, where=path)
    assert inspect(response.content.decode()).html_lang == "ja", path


def test_the_configured_policy_is_nonce_ready() -> None:
    """A template that asks for the nonce gets it in the header, beside 'self' only."""
    assert settings.SECURE_CSP["script-src"] == [CSP.SELF, CSP.NONCE]

    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(f'<script nonce="{request._csp_nonce}">1</script>')  # type: ignore[attr-defined]

    middleware = ContentSecurityPolicyMiddleware(view)
    response = middleware(RequestFactory().get("/"))
    assert isinstance(response, HttpResponse)
    nonce = response.content.decode().split('"')[1]
    assert policy_of(response["Content-Security-Policy"])["script-src"] == [
        "'self'",
        f"'nonce-{nonce}'",
    ]


def test_attachment_files_are_served_inert(hostile: Hostile) -> None:
    slug = hostile.town.community.slug
    member = hostile.clients["member"]
    attachments = list(hostile.published.attachments.all())
    assert {a.kind for a in attachments} == {AttachmentKind.IMAGE, AttachmentKind.PDF}
    for attachment in attachments:
        for variant in ("display", "thumb"):
            url = reverse("circulars:attachment_file", args=[slug, attachment.pk, variant])
            response = member.get(url)
            assert response.status_code == 200, url
            assert response["X-Content-Type-Options"] == "nosniff"
            policy = policy_of(response["Content-Security-Policy"])
            assert "sandbox" in policy, response["Content-Security-Policy"]
            assert policy["default-src"] == ["'none'"]
            disposition = response["Content-Disposition"]
            if attachment.kind == AttachmentKind.PDF:
                assert response["Content-Type"] == "application/pdf"
                assert disposition.startswith("attachment;")
                # The hostile original name is quoted (or encoded), never breaking out.
                assert "<" not in disposition and "\n" not in disposition
            else:
                assert response["Content-Type"] == "image/jpeg"
                assert disposition == f'inline; filename="{attachment.pk}.jpg"'
            # Reading to the end lets the test client close the file as a server would.
            assert b"".join(response.streaming_content)  # type: ignore[attr-defined]


def test_generated_pdfs_are_not_sniffed(hostile: Hostile) -> None:
    slug = hostile.town.community.slug
    chair = hostile.clients["chair"]
    response = chair.post(
        reverse("circulars:paper_print", args=[slug, hostile.published.pk]),
        {"block": str(hostile.block.pk)},
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response.content.startswith(b"%PDF")

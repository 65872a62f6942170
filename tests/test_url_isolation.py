"""Every URL of the project, walked: nobody outside an association reaches its pages.

The walk collects all patterns from the root URLconf. Each pattern is either listed in
``PUBLIC`` (with the reason it needs no tenant check) or gets its arguments from
``tenant_kwargs``; a pattern that is neither fails the test by name, so a new URL cannot
slip in without an isolation check.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import resolve_url
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver, path, resolve

from communities import urls as community_urls
from communities.models import (
    Block,
    Community,
    Household,
    HouseholdInvite,
    RoleAssignment,
    RoleKind,
    RosterImport,
)
from communities.roster_csv import roster_import_create
from config import urls as project_urls
from tests.conftest import Town

USER_SCOPED = "works on the logged-in person's own data only; no tenant id in the URL"
ALLAUTH = "allauth account/MFA page: acts on the logged-in person's own account only"

# Patterns that need no per-association check, by qualified name, each with its reason.
PUBLIC: dict[str, str] = {
    "home": "landing page, or the person's own list of associations",
    "healthz": "load balancer probe; says nothing about any association",
    "help": "static help text",
    "preferences": "display preferences of the person or browser",
    "join_code": "the typed card code is the credential (tests/communities/test_views.py)",
    "join_token": "the card's token is the credential (tests/communities/test_views.py)",
    "login_link": "the one-time link token is the credential",
    "me": USER_SCOPED,
    "me_export": USER_SCOPED,
    "add_device": USER_SCOPED + " (household must be one of the person's own)",
    "me_contact": USER_SCOPED + " (household must be one of the person's own; test_contact.py)",
    "community_new": "any logged-in person may start an association",
    "set_language": "Django's language switch; stores a cookie only",
    "push:settings": USER_SCOPED,
    "push:subscribe": USER_SCOPED + " (the endpoint becomes the person's own)",
    "push:unsubscribe": USER_SCOPED + " (deletes only the person's own endpoint)",
    "push:manifest": "the web app manifest; the same for everyone",
    "service_worker": "the service worker script; the same for everyone",
    "email_link:circular": (
        "the signed token names one circular and one household and is the credential "
        "(tests/notifications/test_email.py)"
    ),
    "account_login": ALLAUTH,
    "account_logout": ALLAUTH,
    "account_inactive": ALLAUTH,
    "account_signup": ALLAUTH,
    "account_reauthenticate": ALLAUTH,
    "account_email": ALLAUTH,
    "account_email_verification_sent": ALLAUTH,
    "account_change_password": ALLAUTH,
    "account_set_password": ALLAUTH,
    "account_reset_password": ALLAUTH,
    "account_confirm_login_code": ALLAUTH,
    "account_reset_password_from_key_done": ALLAUTH,
    "account_reset_password_from_key": ALLAUTH,
    "account_reset_password_done": ALLAUTH,
    "account_request_login_code": ALLAUTH,
    "mfa_index": ALLAUTH,
    "mfa_authenticate": ALLAUTH,
    "mfa_reauthenticate": ALLAUTH,
    "mfa_activate_totp": ALLAUTH,
    "mfa_deactivate_totp": ALLAUTH,
    "mfa_view_recovery_codes": ALLAUTH,
    "mfa_generate_recovery_codes": ALLAUTH,
    "mfa_download_recovery_codes": ALLAUTH,
    "mfa_list_webauthn": ALLAUTH,
    "mfa_add_webauthn": ALLAUTH,
    "mfa_reauthenticate_webauthn": ALLAUTH,
    "mfa_remove_webauthn": ALLAUTH + " (allauth filters the key by user)",
    "mfa_edit_webauthn": ALLAUTH + " (allauth filters the key by user)",
    "mfa_login_webauthn": ALLAUTH,
}

# Tenant pages a plain resident of the association may open (their circulars); every
# other page under /c/<slug>/ is for officers, block leaders and helpers.
RESIDENT_PAGES: set[str] = {
    "circulars:inbox",
    "circulars:detail",
    "circulars:confirm",
    "circulars:attachment_file",
    "circulars:answers",
    # 安否確認's one-tap answer page (404 here: the walk's circular is not a safety check;
    # tests/circulars/test_safety_views.py covers the check itself).
    "circulars:safety_answer",
}

PARAM_RE = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")


@dataclass(frozen=True)
class Route:
    name: str  # "namespace:name", or the route itself for an unnamed pattern
    route: str
    callback: object

    def params(self) -> list[str]:
        return [match["name"] for match in PARAM_RE.finditer(self.route)]

    def url(self, kwargs: dict[str, object]) -> str:
        return "/" + PARAM_RE.sub(lambda match: str(kwargs[match["name"]]), self.route)


def _walk(
    patterns: list[URLPattern | URLResolver], prefix: str = "", namespace: str = ""
) -> Iterator[Route]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = namespace
            if pattern.namespace:
                inner = f"{namespace}:{pattern.namespace}" if namespace else pattern.namespace
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
        else:
            route = prefix + str(pattern.pattern)
            if pattern.name:
                name = f"{namespace}:{pattern.name}" if namespace else pattern.name
            else:
                name = route
            yield Route(name=name, route=route, callback=pattern.callback)


def all_routes() -> list[Route]:
    return list(_walk(get_resolver().url_patterns))


@dataclass(frozen=True)
class Targets:
    """Ids of one association's objects, to put into URLs."""

    slug: str
    block_id: int
    household_id: int
    role_id: int
    import_id: int
    circular_id: int
    attachment_id: int

    def kwargs(self) -> dict[str, object]:
        return {
            "slug": self.slug,
            "block_id": self.block_id,
            "household_id": self.household_id,
            "role_id": self.role_id,
            "import_id": self.import_id,
            "circular_id": self.circular_id,
            "attachment_id": self.attachment_id,
            "variant": "display",
        }


def town_targets(town: Town) -> Targets:
    pending = roster_import_create(
        community=town.community,
        user=town.chair,
        file_name="roster.csv",
        data="世帯名,班\n新井,1班\n".encode(),
    )
    role = RoleAssignment.objects.get(
        community=town.community, user=town.leader1, role=RoleKind.BLOCK_LEADER
    )
    from circulars.models import Attachment, AttachmentKind
    from circulars.services import CircularData, circular_create, circular_publish

    circular = circular_create(
        community=town.community, author=town.chair, data=CircularData(title="清掃のお知らせ")
    )
    circular_publish(circular=circular)
    # Only the id matters here: every request below is refused before the file is read.
    attachment = Attachment.objects.create(
        circular=circular,
        kind=AttachmentKind.IMAGE,
        file="attachments/none.jpg",
        original_name="map.jpg",
        size=1,
    )
    return Targets(
        slug=town.community.slug,
        block_id=town.block1.pk,
        household_id=town.household1.pk,
        role_id=role.pk,
        import_id=pending.pk,
        circular_id=circular.pk,
        attachment_id=attachment.pk,
    )


def tenant_kwargs(route: Route, targets: Targets) -> dict[str, object] | None:
    """Arguments for a tenant pattern, or None when this builder does not know a parameter."""
    known = targets.kwargs()
    params = route.params()
    if "slug" not in params or any(param not in known for param in params):
        return None
    return {param: known[param] for param in params}


def tenant_routes(targets: Targets) -> tuple[list[tuple[Route, str]], list[str]]:
    """Every non-public pattern with its URL, and the patterns the builder cannot fill."""
    covered: list[tuple[Route, str]] = []
    uncovered: list[str] = []
    for route in all_routes():
        if route.name in PUBLIC:
            continue
        kwargs = tenant_kwargs(route, targets)
        if kwargs is None:
            uncovered.append(f"{route.name} ({route.route})")
            continue
        url = route.url(kwargs)
        assert resolve(url).func is route.callback, url
        covered.append((route, url))
    return covered, uncovered


def covered_routes(targets: Targets) -> list[tuple[Route, str]]:
    return tenant_routes(targets)[0]


def _state() -> tuple[int, ...]:
    """A fingerprint of tenant data, to show refused requests changed nothing."""
    return (
        Community.objects.count(),
        Block.objects.count(),
        Household.objects.count(),
        RoleAssignment.objects.filter(ended_at__isnull=True).count(),
        HouseholdInvite.objects.count(),
        RosterImport.objects.filter(applied_at__isnull=False).count(),
    )


def _client_for(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


MISSING_ID = 2_000_000_000


def _refusal_problem(client: Client, method: str, route: Route, url: str) -> str | None:
    """None when the request was refused without telling whether the object exists.

    404 always passes. A 405 to GET on a POST-only page passes only when the same GET
    with ids that exist nowhere is answered the same way: the answer then says nothing
    about the object.
    """
    response = getattr(client, method)(url)
    if response.status_code == 404:
        return None
    if method == "get" and response.status_code == 405 and set(route.params()) - {"slug"}:
        match = resolve(url)
        ghost = {
            key: (value if key == "slug" else MISSING_ID) for key, value in match.kwargs.items()
        }
        if client.get(route.url(ghost)).status_code == 405:
            return None
    return f"{method.upper()} {url} ({route.name}): {response.status_code}"


def _is_login_redirect(response: object) -> bool:
    login_url = resolve_url(settings.LOGIN_URL)
    status = getattr(response, "status_code", 0)
    return status in (301, 302) and str(getattr(response, "url", "")).startswith(login_url)


def test_every_pattern_is_public_or_covered(town: Town) -> None:
    names = {route.name for route in all_routes()}
    stale = sorted(set(PUBLIC) - names)
    assert not stale, f"PUBLIC lists patterns that no longer exist: {stale}"
    routes, uncovered = tenant_routes(town_targets(town))
    assert not uncovered, (
        "URL patterns with no isolation check: add them to PUBLIC with a reason, or teach "
        "tenant_kwargs their parameters: " + ", ".join(uncovered)
    )
    covered = {route.name for route, _url in routes}
    assert {f"communities:{pattern.name}" for pattern in community_urls.urlpatterns} <= covered


def _unchecked_view(request: HttpRequest, slug: str, widget_id: int) -> HttpResponse:
    return HttpResponse("no tenant check at all")


# A URLconf with one more pattern that neither PUBLIC nor tenant_kwargs knows about.
urlpatterns = [
    *project_urls.urlpatterns,
    path("c/<slug:slug>/widgets/<int:widget_id>/", _unchecked_view, name="widget_new"),
]


@override_settings(ROOT_URLCONF=__name__)
def test_new_pattern_without_coverage_fails_by_name(town: Town) -> None:
    with pytest.raises(
        AssertionError, match=r"widget_new \(c/<slug:slug>/widgets/<int:widget_id>/\)"
    ):
        test_every_pattern_is_public_or_covered(town)


@pytest.mark.parametrize("who", ["other_chair", "other_resident"])
def test_outsiders_get_404_everywhere(town: Town, who: str) -> None:
    targets = town_targets(town)
    client = _client_for(getattr(town, who))
    before = _state()
    failures = []
    for route, url in covered_routes(targets):
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            if response.status_code != 404:
                failures.append(f"{method.upper()} {url} ({route.name}): {response.status_code}")
    assert not failures, "\n".join(failures)
    assert _state() == before


def test_foreign_chair_cannot_reach_town_objects_through_own_slug(town: Town) -> None:
    """The chair of もみじ uses their own slug with さくら's block, household, role, import ids."""
    targets = town_targets(town)
    own = replace(targets, slug=town.other_community.slug)
    client = _client_for(town.other_chair)
    before = _state()
    failures = []
    for route, url in covered_routes(own):
        if not set(route.params()) - {"slug"}:
            continue  # pages without an object id are the chair's own association
        for method in ("get", "post"):
            problem = _refusal_problem(client, method, route, url)
            if problem:
                failures.append(problem)
    assert not failures, "\n".join(failures)
    assert _state() == before


def test_anonymous_gets_404_or_login_redirect(town: Town) -> None:
    client = Client()
    before = _state()
    failures = []
    for route, url in covered_routes(town_targets(town)):
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            if response.status_code != 404 and not _is_login_redirect(response):
                failures.append(f"{method.upper()} {url} ({route.name}): {response.status_code}")
    assert not failures, "\n".join(failures)
    assert _state() == before


def test_block_leader_sees_only_own_block(town: Town) -> None:
    client = _client_for(town.leader1)
    other_block = town.block2.pk
    other_household = town.household2.pk
    before = _state()
    targets = town_targets(town)
    block2_targets = replace(targets, block_id=other_block, household_id=other_household)
    failures = []
    checked = 0
    for route, url in covered_routes(block2_targets):
        if not {"block_id", "household_id"} & set(route.params()):
            continue
        checked += 1
        for method in ("get", "post"):
            problem = _refusal_problem(client, method, route, url)
            if problem:
                failures.append(problem)
    assert not failures, "\n".join(failures)
    assert checked >= 9
    assert _state() == before
    # Their own block opens, and the household list shows only block 1.
    assert client.get(f"/c/{town.community.slug}/blocks/{town.block1.pk}/").status_code == 200
    listing = client.get(f"/c/{town.community.slug}/households/")
    assert listing.status_code == 200
    labels = {household.label for household in listing.context["households"]}
    assert labels == {town.household1.label}
    filtered = client.get(f"/c/{town.community.slug}/households/?block={other_block}")
    assert filtered.status_code == 404


def test_resident_gets_404_on_every_staff_page_of_own_community(town: Town) -> None:
    targets = town_targets(town)
    client = _client_for(town.resident1)
    before = _state()
    failures = []
    for route, url in covered_routes(targets):
        if route.name in RESIDENT_PAGES:
            continue
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            if response.status_code != 404:
                failures.append(f"{method.upper()} {url} ({route.name}): {response.status_code}")
    assert not failures, "\n".join(failures)
    assert _state() == before


def test_safety_record_screen_with_a_real_safety_check(town: Town) -> None:
    """The walk above uses a plain circular, where a safety page is 404 for everyone; here
    a real safety check: a block's recording screen opens for its 班長 and the officers
    only, and nobody else can record through it."""
    from circulars.models import SafetyReport
    from circulars.safety import safety_check_start

    check = safety_check_start(community=town.community, author=town.chair, drill=True)
    slug = town.community.slug
    url = f"/c/{slug}/circulars/{check.pk}/safety/{town.block1.pk}/"
    assert resolve(url).url_name == "safety_record"
    data = {"household": town.household1.pk, "status": "safe"}
    for who in ("other_chair", "other_resident", "resident1", "helper2"):
        client = _client_for(getattr(town, who))
        assert (client.get(url).status_code, client.post(url, data).status_code) == (404, 404), who
    foreign = f"/c/{town.other_community.slug}/circulars/{check.pk}/safety/{town.block1.pk}/"
    assert _client_for(town.other_chair).post(foreign, data).status_code == 404
    anonymous = Client().post(url, data)
    assert _is_login_redirect(anonymous)
    assert not SafetyReport.objects.exists()
    for who in ("leader1", "chair"):
        assert _client_for(getattr(town, who)).get(url).status_code == 200, who

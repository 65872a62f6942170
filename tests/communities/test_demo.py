"""The demo association and its one-time login links."""

from __future__ import annotations

import io
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, override_settings

from communities import selectors
from communities.demo import DEMO_SLUG, seed_demo
from communities.management.commands.demo_login_url import ROLES
from communities.models import (
    Block,
    Community,
    DeliveryMode,
    Household,
    LoginLink,
    Member,
    MemberKind,
    RoleAssignment,
    RoleKind,
)

pytestmark = pytest.mark.django_db


def _counts() -> dict[str, int]:
    return {
        "communities": Community.objects.count(),
        "blocks": Block.objects.count(),
        "households": Household.objects.count(),
        "members": Member.objects.count(),
        "roles": RoleAssignment.objects.count(),
        "users": User.objects.count(),
    }


def _seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def _login_url(role: str) -> str:
    out = io.StringIO()
    call_command("demo_login_url", role, stdout=out)
    return out.getvalue().strip()


def test_seed_demo_is_idempotent() -> None:
    assert "60" in _seed()
    first = _counts()
    assert _seed()
    assert _counts() == first
    assert first["communities"] == 1
    assert first["blocks"] == 5
    assert first["households"] == 60


def test_seed_demo_shape() -> None:
    community = seed_demo()
    assert community.slug == DEMO_SLUG
    blocks = list(Block.objects.filter(community=community).order_by("position"))
    assert [block.name for block in blocks] == ["1班", "2班", "3班", "4班", "5班"]
    assert {block.households.count() for block in blocks} == {12}

    households = Household.objects.filter(community=community)
    paper_mode = households.filter(delivery_mode=DeliveryMode.PAPER).count()
    assert 15 <= paper_mode <= 25  # about a third
    assert households.filter(delivery_mode=DeliveryMode.BOTH).exists()
    # Some app households have not joined yet, so they get paper as well.
    chair = User.objects.get(email="chair@sakura.example")
    access = selectors.community_access_get(slug=DEMO_SLUG, user=chair)
    visible = list(selectors.households_visible(access=access))
    assert len(visible) == 60
    on_paper = [h for h in visible if selectors.household_on_paper(household=h)]
    app_but_paper = [h for h in on_paper if h.delivery_mode == DeliveryMode.APP]
    assert app_but_paper
    assert len(on_paper) < 60


def test_seed_demo_roles() -> None:
    community = seed_demo()
    active = RoleAssignment.objects.filter(community=community, ended_at__isnull=True)
    assert active.filter(role=RoleKind.CHAIR).get().user.email == "chair@sakura.example"
    assert active.filter(role=RoleKind.OFFICER).get().user.email == "officer@sakura.example"
    leaders = active.filter(role=RoleKind.BLOCK_LEADER)
    assert sorted(leaders.values_list("block__name", flat=True)) == [
        "1班",
        "2班",
        "3班",
        "4班",
        "5班",
    ]
    assert leaders.values("user").distinct().count() == 5
    helpers = active.filter(role=RoleKind.HELPER)
    assert helpers.values("user").distinct().count() == 2
    assert set(helpers.values_list("block__name", flat=True)) == {"1班", "2班", "3班", "4班", "5班"}


def test_seed_demo_has_a_supporter() -> None:
    community = seed_demo()
    supporter = Member.objects.get(household__community=community, kind=MemberKind.SUPPORTER)
    assert supporter.household.label == "高橋"
    # The supporter's parent household also has a resident of its own.
    assert supporter.household.members.filter(kind=MemberKind.RESIDENT).exists()


@pytest.mark.parametrize("role", ROLES)
def test_demo_login_url_logs_in(role: str) -> None:
    seed_demo()
    url = _login_url(role)
    parts = urlsplit(url)
    assert parts.scheme in {"http", "https"}
    assert parts.path.startswith("/login/link/")
    assert LoginLink.objects.count() == 1
    # The raw token is not what is stored.
    token = parts.path.rstrip("/").rsplit("/", 1)[-1]
    assert not LoginLink.objects.filter(token_hash=token).exists()

    client = Client()
    page = client.get(parts.path)
    assert page.status_code == 200
    assert b'<form method="post"' in page.content
    assert "_auth_user_id" not in client.session  # GET changes nothing

    response = client.post(parts.path)
    assert response.status_code == 302
    user_id = int(client.session["_auth_user_id"])
    user = User.objects.get(pk=user_id)
    if role == "supporter":
        assert Member.objects.filter(user=user, kind=MemberKind.SUPPORTER).exists()
    elif role == "resident":
        assert Member.objects.filter(user=user, kind=MemberKind.RESIDENT).exists()
    else:
        expected = {
            "chair": RoleKind.CHAIR,
            "officer": RoleKind.OFFICER,
            "block_leader": RoleKind.BLOCK_LEADER,
            "helper": RoleKind.HELPER,
        }[role]
        assert RoleAssignment.objects.filter(user=user, role=expected).exists()

    again = Client().post(parts.path)
    assert again.status_code == 410
    assert "_auth_user_id" not in again.wsgi_request.session


def test_demo_login_url_base_url() -> None:
    seed_demo()
    out = io.StringIO()
    call_command("demo_login_url", "chair", "--base-url", "https://demo.example/", stdout=out)
    assert out.getvalue().startswith("https://demo.example/login/link/")


def test_demo_login_url_needs_the_seed() -> None:
    with pytest.raises(CommandError):
        call_command("demo_login_url", "chair", stdout=io.StringIO())


def test_demo_login_url_refuses_an_unknown_role() -> None:
    seed_demo()
    with pytest.raises(CommandError):
        call_command("demo_login_url", "mayor", stdout=io.StringIO())


@override_settings(PRODUCTION=True)
def test_seed_demo_refused_in_production() -> None:
    with pytest.raises(CommandError):
        call_command("seed_demo", stdout=io.StringIO())
    assert _counts()["communities"] == 0


def test_demo_login_url_refused_in_production() -> None:
    seed_demo()
    with override_settings(PRODUCTION=True), pytest.raises(CommandError):
        call_command("demo_login_url", "chair", stdout=io.StringIO())
    assert not LoginLink.objects.exists()

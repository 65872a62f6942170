"""The community pages through Django's test client: what each role sees and may change."""

from __future__ import annotations

import base64
import io
import json
import re
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import translation
from django.utils.translation import gettext
from pytest_django import DjangoAssertNumQueries

from communities import services
from communities.models import (
    Block,
    DeliveryMode,
    Household,
    HouseholdInvite,
    Member,
    MemberKind,
    Preference,
    RemovedHousehold,
    RoleAssignment,
    RoleKind,
    RosterImport,
)
from communities.tokens import code_format
from tests.conftest import Town
from tests.factories import HouseholdFactory, MemberFactory, UserFactory, give_role

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response


def ja(text: str) -> str:
    """A message as the (Japanese by default) site renders it, translated or not."""
    with translation.override("ja"):
        return gettext(text)


def as_user(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def messages_of(response: Response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def text(response: Response) -> str:
    return response.content.decode()


def base(town: Town) -> str:
    return f"/c/{town.community.slug}"


# --- Dashboard and blocks ---------------------------------------------------------------


def test_dashboard_lists_blocks_for_chair_and_only_own_block_for_leader(town: Town) -> None:
    response = as_user(town.chair).get(base(town) + "/")
    assert response.status_code == 200
    assert [block.name for block in response.context["blocks"]] == ["1班", "2班"]
    assert "1班" in text(response) and "2班" in text(response)

    response = as_user(town.leader1).get(base(town) + "/")
    assert response.status_code == 200
    assert [block.name for block in response.context["blocks"]] == ["1班"]


def test_block_create_and_duplicate_name(town: Town) -> None:
    client = as_user(town.chair)
    response = client.post(base(town) + "/blocks/", {"name": " 3班 "})
    assert response.status_code == 302
    block = Block.objects.get(community=town.community, name="3班")
    assert block.position == 3
    assert ja("Block %(name)s was added.") % {"name": "3班"} in messages_of(response)

    response = client.post(base(town) + "/blocks/", {"name": "1班"})
    assert response.status_code == 200
    assert response.context["form"].errors["name"] == [ja("A block with this name already exists.")]
    assert Block.objects.filter(community=town.community).count() == 3


def test_block_leader_cannot_create_blocks(town: Town) -> None:
    client = as_user(town.leader1)
    assert client.get(base(town) + "/blocks/").status_code == 200
    assert client.post(base(town) + "/blocks/", {"name": "3班"}).status_code == 404
    assert not Block.objects.filter(name="3班").exists()


def test_block_rename(town: Town) -> None:
    client = as_user(town.officer)
    response = client.post(f"{base(town)}/blocks/{town.block1.pk}/rename/", {"name": "東1班"})
    assert response.status_code == 302
    town.block1.refresh_from_db()
    assert town.block1.name == "東1班"
    # A clash is refused with a message and changes nothing.
    response = client.post(f"{base(town)}/blocks/{town.block1.pk}/rename/", {"name": "2班"})
    assert ja("A block with this name already exists.") in messages_of(response)
    town.block1.refresh_from_db()
    assert town.block1.name == "東1班"


def test_block_move(town: Town) -> None:
    client = as_user(town.chair)
    response = client.post(f"{base(town)}/blocks/{town.block2.pk}/move/", {"direction": "up"})
    assert response.status_code == 302
    order = list(
        Block.objects.filter(community=town.community)
        .order_by("position")
        .values_list("name", flat=True)
    )
    assert order == ["2班", "1班"]


def test_block_delete_refuses_non_empty_and_removes_empty(town: Town) -> None:
    client = as_user(town.chair)
    response = client.post(f"{base(town)}/blocks/{town.block1.pk}/delete/")
    assert response.status_code == 302
    assert response["Location"] == f"{base(town)}/blocks/{town.block1.pk}/"
    assert ja("Move or remove this block's households before removing the block.") in (
        messages_of(response)
    )
    assert Block.objects.filter(pk=town.block1.pk).exists()

    empty = services.block_create(community=town.community, name="空き班")
    response = client.post(f"{base(town)}/blocks/{empty.pk}/delete/")
    assert response.status_code == 302
    assert not Block.objects.filter(pk=empty.pk).exists()


def test_block_detail_shows_only_that_block(town: Town) -> None:
    response = as_user(town.chair).get(f"{base(town)}/blocks/{town.block1.pk}/")
    assert response.status_code == 200
    assert [h.label for h in response.context["households"]] == ["山田"]
    assert "山田" in text(response)
    assert "田中" not in text(response)


# --- Households -------------------------------------------------------------------------


def test_household_create(town: Town) -> None:
    client = as_user(town.chair)
    assert client.get(f"{base(town)}/households/new/?block={town.block1.pk}").status_code == 200
    response = client.post(
        f"{base(town)}/households/new/",
        {
            "label": "鈴木",
            "block": town.block1.pk,
            "delivery_mode": "paper",
            "address": "桜町1-2-3",
            "phone": "03-1234-5678",
            "helper_note": "",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == f"{base(town)}/blocks/{town.block1.pk}/"
    household = Household.objects.get(block=town.block1, label="鈴木")
    assert household.address == "桜町1-2-3"
    assert household.circulation_order > town.household1.circulation_order

    # The same name twice in one block is a form error, not a second row.
    response = client.post(
        f"{base(town)}/households/new/",
        {"label": "鈴木", "block": town.block1.pk, "delivery_mode": "paper"},
    )
    assert response.status_code == 200
    assert response.context["form"].errors["label"]
    assert Household.objects.filter(block=town.block1, label="鈴木").count() == 1


def test_household_create_refuses_another_associations_block(town: Town) -> None:
    other_block = Block.objects.get(community=town.other_community)
    response = as_user(town.chair).post(
        f"{base(town)}/households/new/",
        {"label": "侵入", "block": other_block.pk, "delivery_mode": "paper"},
    )
    assert response.status_code == 200
    assert response.context["form"].errors["block"]
    assert not Household.objects.filter(label="侵入").exists()


def test_household_edit(town: Town) -> None:
    client = as_user(town.chair)
    url = f"{base(town)}/households/{town.household1.pk}/edit/"
    response = client.get(url)
    assert response.status_code == 200
    assert response.context["form"].initial["label"] == "山田"
    response = client.post(
        url,
        {
            "label": "山田",
            "block": town.block2.pk,
            "delivery_mode": "both",
            "address": "桜町9-9",
            "phone": "",
            "helper_note": "ベルが壊れています",
        },
    )
    assert response.status_code == 302
    town.household1.refresh_from_db()
    assert town.household1.block_id == town.block2.pk
    assert town.household1.delivery_mode == "both"
    assert town.household1.helper_note == "ベルが壊れています"


def test_household_delete_removes_personal_data(town: Town) -> None:
    household = town.household1
    household.address = "桜町7-7-7"
    household.phone = "090-7777-7777"
    household.save()
    resident_id = town.resident1.pk
    client = as_user(town.chair)
    url = f"{base(town)}/households/{household.pk}/delete/"

    response = client.get(url)
    assert response.status_code == 200
    assert Household.objects.filter(pk=household.pk).exists()  # GET changes nothing

    response = client.post(url)
    assert response.status_code == 302
    assert response["Location"] == f"{base(town)}/blocks/{town.block1.pk}/"
    assert not Household.objects.filter(pk=household.pk).exists()
    assert not Member.objects.filter(household_id=household.pk).exists()
    assert not User.objects.filter(pk=resident_id).exists()
    removed = RemovedHousehold.objects.get(community=town.community)
    assert removed.block_name == "1班"
    dump = _dump("communities", "auth")
    for personal in ("山田", "桜町7-7-7", "090-7777-7777"):
        assert personal not in dump


def _dump(*apps: str) -> str:
    """Every row of the given apps as text, to search for leftover personal data."""
    out = io.StringIO()
    call_command("dumpdata", *apps, stdout=out)
    return json.dumps(json.loads(out.getvalue()), ensure_ascii=False)


def test_household_move(town: Town) -> None:
    second = HouseholdFactory.create(block=town.block1, label="佐々木")
    third = HouseholdFactory.create(block=town.block1, label="伊藤")
    client = as_user(town.chair)
    response = client.post(f"{base(town)}/households/{third.pk}/move/", {"direction": "up"})
    assert response.status_code == 302
    order = list(
        Household.objects.filter(block=town.block1)
        .order_by("circulation_order")
        .values_list("label", flat=True)
    )
    assert order == ["山田", "伊藤", "佐々木"]
    client.post(f"{base(town)}/households/{second.pk}/move/", {"direction": "down"})
    order_after = list(
        Household.objects.filter(block=town.block1)
        .order_by("circulation_order")
        .values_list("label", flat=True)
    )
    assert order_after == order  # already last: nothing moves


# --- Invite cards -----------------------------------------------------------------------


def _is_pdf(response: Response) -> bool:
    return response["Content-Type"] == "application/pdf" and response.content.startswith(b"%PDF")


def _pdf_text(response: Response) -> str:
    from pypdf import PdfReader

    return "".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)


def test_invite_cards_for_block(town: Town) -> None:
    client = as_user(town.leader1)
    url = f"{base(town)}/blocks/{town.block1.pk}/invite-cards/"
    response = client.get(url)
    assert response.status_code == 200
    assert HouseholdInvite.objects.count() == 0  # GET issues nothing
    response = client.post(url)
    assert response.status_code == 200
    assert _is_pdf(response)
    assert response["Cache-Control"] == "no-store"
    invite = HouseholdInvite.objects.get(household=town.household1)
    assert invite.created_by == town.leader1
    printed = _pdf_text(response)
    assert "山田" in printed
    assert "田中" not in printed  # block 2's household is not on block 1's sheet
    [code] = re.findall(r"[A-Z0-9]{4}-[A-Z0-9]{4}", printed)

    # The code printed on the card lets the household join.
    resident = Client()
    step = resident.post("/join/", {"code": code})
    assert step.context["household"] == town.household1

    # Printing again replaces the earlier card.
    assert _is_pdf(client.post(url))
    invite.refresh_from_db()
    assert invite.revoked_at is not None
    refused = Client().post("/join/", {"code": code})
    assert refused.status_code == 410
    assert ja("This card was replaced by a newer card and no longer works.") in text(refused)

    other = f"{base(town)}/blocks/{town.block2.pk}/invite-cards/"
    assert client.get(other).status_code == 404
    assert client.post(other).status_code == 404
    assert not HouseholdInvite.objects.filter(household=town.household2).exists()


def test_helper_cannot_issue_invite_cards(town: Town) -> None:
    client = as_user(town.helper2)
    assert client.get(f"{base(town)}/blocks/{town.block2.pk}/").status_code == 200
    url = f"{base(town)}/blocks/{town.block2.pk}/invite-cards/"
    assert client.get(url).status_code == 404
    assert client.post(url).status_code == 404
    card = f"{base(town)}/households/{town.household2.pk}/invite-card/"
    assert client.post(card).status_code == 404
    assert not HouseholdInvite.objects.exists()


def test_invite_cards_for_empty_block(town: Town) -> None:
    empty = services.block_create(community=town.community, name="空き班")
    response = as_user(town.chair).post(f"{base(town)}/blocks/{empty.pk}/invite-cards/")
    assert response.status_code == 302
    assert ja("This block has no households yet.") in messages_of(response)


def test_single_household_invite_card(town: Town) -> None:
    response = as_user(town.chair).post(
        f"{base(town)}/households/{town.household2.pk}/invite-card/"
    )
    assert response.status_code == 200
    assert _is_pdf(response)
    assert HouseholdInvite.objects.filter(household=town.household2).count() == 1

    leader = as_user(town.leader1)
    assert _is_pdf(leader.post(f"{base(town)}/households/{town.household1.pk}/invite-card/"))
    response = leader.post(f"{base(town)}/households/{town.household2.pk}/invite-card/")
    assert response.status_code == 404
    assert HouseholdInvite.objects.filter(household=town.household2).count() == 1


# --- Roster import and export -----------------------------------------------------------


def _upload(client: Client, town: Town, name: str, data: bytes) -> Response:
    return client.post(
        f"{base(town)}/roster/import/", {"file": SimpleUploadedFile(name, data, "text/csv")}
    )


def test_roster_import_shift_jis_with_errors_is_refused(town: Town) -> None:
    client = as_user(town.chair)
    data = "世帯名,班,配布方法\n鈴木,1班,紙\n高橋,9班,アプリ\n佐藤,2班,ファックス\n".encode("cp932")
    before = Household.objects.count()
    response = _upload(client, town, "名簿.csv", data)
    assert response.status_code == 302
    pending = RosterImport.objects.get(community=town.community)
    assert response["Location"] == f"{base(town)}/roster/import/{pending.pk}/"
    assert pending.encoding == "Shift_JIS"
    assert pending.error_count == 2

    preview = client.get(response["Location"])
    assert preview.status_code == 200
    page = text(preview)
    assert "Shift_JIS" in page
    assert "鈴木" in page and "高橋" in page
    assert ja("Unknown block '%(block)s'. Add the block first or correct the name.") % {
        "block": "9班"
    } in page.replace("&#x27;", "'")
    assert ja("Unknown delivery '%(mode)s': write アプリ, 紙 or 両方.") % {
        "mode": "ファックス"
    } in page.replace("&#x27;", "'")

    confirm = client.post(response["Location"])
    assert confirm.status_code == 302
    assert confirm["Location"] == response["Location"]
    assert ja("Correct the rows with errors and upload the file again.") in messages_of(confirm)
    assert Household.objects.count() == before
    pending.refresh_from_db()
    assert pending.applied_at is None


def test_roster_import_clean_utf8_then_confirm_twice(town: Town) -> None:
    client = as_user(town.chair)
    data = "\ufeff世帯名,班,住所,配布方法\n鈴木,1班,桜町1,アプリ\n山田,1班,桜町2,紙\n".encode()
    response = _upload(client, town, "roster.csv", data)
    assert response.status_code == 302
    preview = client.get(response["Location"])
    assert preview.context["add_count"] == 1
    assert preview.context["update_count"] == 1
    before = Household.objects.count()

    confirm = client.post(response["Location"])
    assert confirm.status_code == 302
    assert confirm["Location"] == f"{base(town)}/households/"
    assert ja("%(count)s households were imported.") % {"count": 2} in messages_of(confirm)
    assert Household.objects.count() == before + 1
    assert Household.objects.get(block=town.block1, label="鈴木").address == "桜町1"
    town.household1.refresh_from_db()
    assert town.household1.address == "桜町2"
    assert town.household1.delivery_mode == "paper"
    snapshot = list(Household.objects.order_by("pk").values_list("pk", "label", "address"))

    again = client.post(response["Location"])
    assert again.status_code == 302
    assert ja("This file was already imported. Nothing was changed.") in messages_of(again)
    assert list(Household.objects.order_by("pk").values_list("pk", "label", "address")) == (
        snapshot
    )


def test_roster_import_rejects_a_non_csv_file(town: Town) -> None:
    response = _upload(as_user(town.chair), town, "roster.xlsx", b"PK\x03\x04\x00\x00binary")
    assert response.status_code == 200
    assert response.context["form"].errors["file"]
    assert not RosterImport.objects.exists()


def test_roster_export(town: Town) -> None:
    town.household1.phone = "=HYPERLINK(1)"
    town.household1.save()
    response = as_user(town.chair).get(f"{base(town)}/roster/export.csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    assert response.content.startswith(b"\xef\xbb\xbf")
    rows = response.content.decode("utf-8-sig").splitlines()
    assert rows[0] == "班,順番,世帯名,住所,電話,配布方法,備考"
    assert any(row.startswith("1班,") and "山田" in row for row in rows)
    assert any("'=HYPERLINK(1)" in row for row in rows)
    assert len(rows) == 3


# --- Two-step login gate ----------------------------------------------------------------


def test_officer_without_mfa_gets_the_two_step_page_on_roster_pages(town: Town) -> None:
    officer = UserFactory.create()
    give_role(user=officer, community=town.community, role=RoleKind.OFFICER)
    client = as_user(officer)
    for path in (
        "/households/",
        f"/blocks/{town.block1.pk}/",
        "/households/new/",
        f"/households/{town.household1.pk}/edit/",
        "/roster/import/",
        "/roster/export.csv",
    ):
        response = client.get(base(town) + path)
        assert response.status_code == 403, path
        assert "communities/mfa_required.html" in [t.name for t in response.templates]
        assert ja("Two-step login needed") in text(response)
        assert "山田" not in text(response)
    # Pages without personal data stay open.
    assert client.get(base(town) + "/").status_code == 200
    # A block leader needs no two-step login for their own block.
    assert as_user(town.leader1).get(f"{base(town)}/households/").status_code == 200


# --- Roles and the year rollover ----------------------------------------------------------


def test_give_a_role_by_email(town: Town) -> None:
    client = as_user(town.chair)
    response = client.post(
        f"{base(town)}/roles/",
        {"email": "New.Officer@Example.jp", "name": "新井", "role": "officer", "block": ""},
    )
    assert response.status_code == 302
    role = RoleAssignment.objects.get(
        community=town.community, role=RoleKind.OFFICER, user__email="new.officer@example.jp"
    )
    assert role.ended_at is None
    assert role.user.first_name == "新井"

    # A block role without a block is a form error.
    response = client.post(
        f"{base(town)}/roles/", {"email": "x@example.jp", "role": "block_leader", "block": ""}
    )
    assert response.status_code == 200
    assert response.context["form"].non_field_errors()


def test_only_the_chair_names_a_chair(town: Town) -> None:
    response = as_user(town.officer).post(
        f"{base(town)}/roles/", {"email": "boss@example.jp", "role": "chair", "block": ""}
    )
    assert response.status_code == 200
    assert response.context["form"].errors["role"]
    assert not RoleAssignment.objects.filter(user__email="boss@example.jp").exists()


def test_end_a_role_and_not_the_only_chair(town: Town) -> None:
    client = as_user(town.chair)
    leader_role = RoleAssignment.objects.get(user=town.leader1, ended_at__isnull=True)
    response = client.post(f"{base(town)}/roles/{leader_role.pk}/end/")
    assert response.status_code == 302
    leader_role.refresh_from_db()
    assert leader_role.ended_at is not None
    assert as_user(town.leader1).get(base(town) + "/").status_code == 404

    chair_role = RoleAssignment.objects.get(user=town.chair, role=RoleKind.CHAIR)
    response = client.post(f"{base(town)}/roles/{chair_role.pk}/end/")
    assert ja("An association always needs a chair.") in messages_of(response)
    chair_role.refresh_from_db()
    assert chair_role.ended_at is None

    # An ended role cannot be ended again.
    assert client.post(f"{base(town)}/roles/{leader_role.pk}/end/").status_code == 404


def test_rollover_starts_a_new_year_and_keeps_history(town: Town) -> None:
    client = as_user(town.chair)
    response = client.get(f"{base(town)}/rollover/")
    assert response.status_code == 200
    next_year = services.fiscal_year_current() + 1
    assert response.context["next_year"] == next_year
    assert response.context["rows"][0]["leaders"] == town.leader1.email

    response = client.post(
        f"{base(town)}/rollover/",
        {
            "fiscal_year": str(next_year),
            f"leader-{town.block1.pk}": "leader.new@example.jp、second@example.jp",
            f"helper-{town.block2.pk}": town.helper2.email,
        },
    )
    assert response.status_code == 302
    assert response["Location"] == f"{base(town)}/roles/"
    old = RoleAssignment.objects.get(user=town.leader1, role=RoleKind.BLOCK_LEADER)
    assert old.ended_at is not None
    current = RoleAssignment.objects.filter(
        community=town.community, role__in=["block_leader", "helper"], ended_at__isnull=True
    )
    assert {(r.user.email, r.role, r.block_id, r.fiscal_year) for r in current} == {
        ("leader.new@example.jp", "block_leader", town.block1.pk, next_year),
        ("second@example.jp", "block_leader", town.block1.pk, next_year),
        (town.helper2.email, "helper", town.block2.pk, next_year),
    }
    # Chair and officer stay.
    assert RoleAssignment.objects.filter(user=town.chair, ended_at__isnull=True).exists()

    roles_page = client.get(f"{base(town)}/roles/")
    history = list(roles_page.context["history"])
    assert old in history
    assert town.leader1.get_full_name() in text(roles_page)


def test_rollover_refuses_a_bad_year(town: Town) -> None:
    response = as_user(town.chair).post(f"{base(town)}/rollover/", {"fiscal_year": "abc"})
    assert response.status_code == 200
    assert response.context["errors"]
    assert RoleAssignment.objects.get(user=town.leader1).ended_at is None


# --- Joining with a card ----------------------------------------------------------------


def _join_post(client: Client, url: str, **extra: str) -> Response:
    data = {"step": "join", "display_name": "山田花子", "kind": "resident", "consent": "on"}
    data.update(extra)
    return client.post(url, data)


def test_join_with_token(town: Town) -> None:
    issued = services.household_invite_issue(household=town.household1, created_by=town.chair)
    url = f"/join/{issued.token}/"
    client = Client()
    response = client.get(url)
    assert response.status_code == 200
    assert "山田" in text(response) and "1班" in text(response)
    assert "_auth_user_id" not in client.session

    # Without consent nothing happens.
    response = client.post(url, {"step": "join", "display_name": "花子", "kind": "resident"})
    assert response.status_code == 200
    assert response.context["form"].errors["consent"]
    assert Member.objects.filter(household=town.household1).count() == 1

    response = _join_post(client, url)
    assert response.status_code == 302
    assert response["Location"] == "/"
    member = Member.objects.get(household=town.household1, display_name="山田花子")
    assert int(client.session["_auth_user_id"]) == member.user_id
    expiry = client.session.get_expiry_age()
    assert abs(expiry - 180 * 24 * 3600) < 120
    home = client.get("/")
    assert home.status_code == 200
    assert home.context["user"] == member.user

    # The card works once: another phone is told so, in the site's language.
    second = Client()
    refused = _join_post(second, url)
    assert refused.status_code == 410
    assert ja("This card has already been used. Each card works only once.") in text(refused)
    assert second.get(url).status_code == 410
    assert Member.objects.filter(household=town.household1).count() == 2


def test_officer_joining_own_household_keeps_a_short_session(town: Town) -> None:
    """Only password-less resident accounts get the 180-day phone session; an officer
    (an email login with roster access) who joins a household keeps the normal one."""
    issued = services.household_invite_issue(household=town.household1, created_by=town.chair)
    client = as_user(town.officer)
    response = _join_post(client, f"/join/{issued.token}/")
    assert response.status_code == 302
    assert Member.objects.filter(household=town.household1, user=town.officer).exists()
    assert client.session.get_expiry_age() <= settings.SESSION_COOKIE_AGE


def test_join_refused_in_english_too(town: Town) -> None:
    issued = services.household_invite_issue(household=town.household1, created_by=town.chair)
    _join_post(Client(), f"/join/{issued.token}/")
    response = Client(headers={"accept-language": "en"}).get(f"/join/{issued.token}/")
    assert response.status_code == 410
    assert "This card has already been used." in text(response)


def test_unknown_token_is_404_page(town: Town) -> None:
    response = Client().get("/join/not-a-real-token/")
    assert response.status_code == 404
    assert ja("This card cannot be used") in text(response)


def test_join_with_full_width_code(town: Town) -> None:
    issued = services.household_invite_issue(household=town.household2, created_by=town.chair)
    code = issued.code.lower()
    full_width = "".join(chr(ord(ch) + 0xFEE0) for ch in code[:4]) + "－" + code[4:]
    client = Client()
    assert client.get("/join/").status_code == 200
    response = client.post("/join/", {"code": full_width})
    assert response.status_code == 200
    assert response.context["household"] == town.household2
    assert response.context["code"] == issued.code
    assert "田中" in text(response)

    response = _join_post(client, "/join/", code=response.context["code"])
    assert response.status_code == 302
    assert Member.objects.filter(household=town.household2, display_name="山田花子").exists()


def test_unknown_code_is_a_form_error(town: Town) -> None:
    client = Client()
    response = client.post("/join/", {"code": "ZZZZ-ZZZZ"})
    assert response.status_code == 200
    assert response.context["form"].errors["code"]
    assert ja("We could not find this code. Please check the card again.") in text(response)
    response = client.post("/join/", {"code": "ABC"})
    assert response.status_code == 200
    assert response.context["form"].errors["code"]


# --- The member's own pages -------------------------------------------------------------


def test_me_shows_own_household_only(town: Town) -> None:
    town.household2.address = "紅葉町5-5"
    town.household2.save()
    response = as_user(town.resident1).get("/me/")
    assert response.status_code == 200
    assert "山田" in text(response)
    assert "田中" not in text(response)
    assert "紅葉町5-5" not in text(response)


def test_me_requires_login(db: None) -> None:
    for url in ("/me/", "/me/export.json"):
        response = Client().get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_me_export_json(town: Town) -> None:
    town.household1.address = "桜町1-1"
    town.household1.save()
    town.household2.address = "紅葉町5-5"
    town.household2.phone = "090-2222-2222"
    town.household2.save()
    flatmate = MemberFactory.create(household=town.household1, display_name="山田次郎")
    response = as_user(town.resident1).get("/me/export.json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["Cache-Control"] == "no-store"
    raw = response.content.decode()
    data = json.loads(raw)
    assert data["account"]["email"] == town.resident1.email
    [household] = data["households"]
    assert household["label"] == "山田"
    assert household["address"] == "桜町1-1"
    assert household["community"] == town.community.name
    members = {member["name"]: member for member in household["members"]}
    assert set(members) == {town.resident1.memberships.get().display_name, "山田次郎"}
    me = next(member for member in household["members"] if member["is_you"])
    assert me["consent_version"] == services.CONSENT_VERSION
    assert me["consented_at"]
    assert members["山田次郎"]["is_you"] is False
    assert flatmate.user.email not in raw  # other members' accounts stay private
    for other in ("田中", "紅葉町5-5", "090-2222-2222", "佐藤", town.resident2.email):
        assert other not in raw


def _qr_text(data_uri: str) -> str:
    """Read the QR code in a data: URI image, as a phone camera would."""
    import zxingcpp
    from PIL import Image

    header, payload = data_uri.split(",", 1)
    assert header.startswith("data:image/png;base64")
    [barcode] = zxingcpp.read_barcodes(Image.open(io.BytesIO(base64.b64decode(payload))))
    return str(barcode.text)


def test_add_device_shows_qr_and_the_code_joins_a_supporter(town: Town) -> None:
    client = as_user(town.resident1)
    response = client.post("/me/add-device/", {"household": str(town.household1.pk)})
    assert response.status_code == 200
    assert 'class="qr"' in text(response)
    assert _qr_text(response.context["qr"]) == response.context["url"]
    assert "/join/" in response.context["url"]
    code = response.context["code"]
    assert code in text(response)
    invite = HouseholdInvite.objects.get(household=town.household1)
    assert invite.kind == "device"
    assert invite.expires_at - invite.created_at <= timedelta(minutes=16)

    family = Client()
    step = family.post("/join/", {"code": code})
    assert step.status_code == 200
    assert step.context["household"] == town.household1
    joined = _join_post(family, "/join/", code=step.context["code"], kind="supporter")
    assert joined.status_code == 302
    supporter = Member.objects.get(household=town.household1, kind=MemberKind.SUPPORTER)
    assert int(family.session["_auth_user_id"]) == supporter.user_id


def test_add_device_for_someone_elses_household_is_404(town: Town) -> None:
    client = as_user(town.resident1)
    assert client.post("/me/add-device/", {"household": str(town.household2.pk)}).status_code == (
        404
    )
    assert client.get("/me/add-device/").status_code == 405
    assert not HouseholdInvite.objects.exists()
    assert code_format("ABCDEFGH") == "ABCD-EFGH"


# --- Display preferences ----------------------------------------------------------------


def _html_class(response: Response) -> str:
    page = text(response)
    start = page.index("<html")
    tag = page[start : page.index(">", start)]
    return tag.split('class="', 1)[1].split('"', 1)[0]


def test_large_text_persists_for_a_logged_in_user(town: Town) -> None:
    client = as_user(town.resident1)
    assert "large-text" not in _html_class(client.get("/me/"))
    response = client.post("/prefs/", {"setting": "large_text", "value": "on", "next": "/me/"})
    assert response.status_code == 302
    assert response["Location"] == "/me/"
    assert Preference.objects.get(user=town.resident1).large_text is True
    assert "large-text" in _html_class(client.get("/me/"))
    # Another phone of the same person sees it too.
    assert "large-text" in _html_class(as_user(town.resident1).get("/help/"))

    client.post("/prefs/", {"setting": "large_text", "value": "off"})
    assert Preference.objects.get(user=town.resident1).large_text is False
    assert "large-text" not in _html_class(client.get("/me/"))


def test_large_text_via_cookie_when_anonymous(db: None) -> None:
    client = Client()
    response = client.post(
        "/prefs/", {"setting": "large_text", "value": "on", "next": "https://evil.example/"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert response.cookies["kairan_prefs"].value == "large_text"
    assert "large-text" in _html_class(client.get("/help/"))
    client.post("/prefs/", {"setting": "high_contrast", "value": "on"})
    assert set(_html_class(client.get("/help/")).split()) == {"large-text", "high-contrast"}
    client.post("/prefs/", {"setting": "large_text", "value": "off"})
    assert set(_html_class(client.get("/help/")).split()) == {"high-contrast"}
    assert not Preference.objects.exists()

    assert client.post("/prefs/", {"setting": "font", "value": "on"}).status_code == 400
    assert client.get("/prefs/").status_code == 405


# --- Health -----------------------------------------------------------------------------


def test_healthz(db: None) -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"


# --- Query counts do not grow with the roster -------------------------------------------


def _grow_block(town: Town, count: int) -> None:
    existing = Household.objects.filter(block=town.block1).count()
    for index in range(existing, count):
        household = HouseholdFactory.create(block=town.block1, label=f"世帯{index:03}")
        if index % 2:
            MemberFactory.create(household=household)


def _queries(client: Client, url: str) -> int:
    assert client.get(url).status_code == 200  # warm the session cache
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured.captured_queries)


@pytest.mark.parametrize("page", ["households/", "blocks/{block}/"])
def test_query_count_does_not_grow_with_households(
    town: Town, page: str, django_assert_max_num_queries: DjangoAssertNumQueries
) -> None:
    client = as_user(town.chair)
    url = f"{base(town)}/" + page.format(block=town.block1.pk)
    _grow_block(town, 5)
    small = _queries(client, url)
    _grow_block(town, 50)
    assert Household.objects.filter(block=town.block1).count() == 50
    large = _queries(client, url)
    assert large == small
    with django_assert_max_num_queries(small):
        response = client.get(url)
    assert len(response.context["households"]) >= 50


# --- A large association's household list folds by block --------------------------------


def _fold_town(town: Town) -> None:
    """Block 1: 山田 (a phone), 佐藤 (paper), 鈴木 (app mode, no login: paper too) and
    高橋 (both); block 2: 田中 (a phone). Six households with the other association's."""
    HouseholdFactory.create(block=town.block1, label="佐藤", delivery_mode=DeliveryMode.PAPER)
    HouseholdFactory.create(block=town.block1, label="鈴木")
    both = HouseholdFactory.create(block=town.block1, label="高橋", delivery_mode=DeliveryMode.BOTH)
    MemberFactory.create(household=both)


def test_household_list_of_a_large_association_shows_blocks_not_rows(
    town: Town, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fold_town(town)
    monkeypatch.setattr("communities.selectors.PAGE_ROWS_MAX", 4)
    response = as_user(town.chair).get(f"{base(town)}/households/")
    assert response.status_code == 200
    listing = response.context["listing"]
    assert listing.rows_folded
    assert list(response.context["households"]) == []
    assert listing.total == 5  # the whole association, the other one's household not counted
    counts = [(b.block.name, b.households, b.on_paper, b.with_app) for b in listing.blocks]
    assert counts == [("1班", 4, 3, 2), ("2班", 1, 0, 1)]
    # 高橋 (both) is on paper and has a phone: the line splits the block without overlap.
    split = [(b.paper_only, b.phone_only, b.both) for b in listing.blocks]
    assert split == [(2, 1, 1), (0, 1, 0)]
    page = text(response)
    assert "紙だけ 2世帯、スマホだけ 1世帯、紙とスマホ 1世帯" in page
    assert "佐藤" not in page and "山田" not in page
    assert page.count(f'href="?block={town.block1.pk}"') == 1
    assert page.count(f'href="?block={town.block2.pk}"') == 1
    assert ja("See this block's households") in page

    # A block's view is today's list, for that block only.
    one = as_user(town.chair).get(f"{base(town)}/households/?block={town.block1.pk}")
    assert not one.context["listing"].rows_folded
    assert [h.label for h in one.context["households"]] == ["山田", "佐藤", "鈴木", "高橋"]
    assert ja("Back to all blocks") in text(one)


def test_household_list_folds_a_block_leader_to_their_own_blocks(
    town: Town, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fold_town(town)
    leader = as_user(town.leader1)
    monkeypatch.setattr("communities.selectors.PAGE_ROWS_MAX", 4)
    # Four households in their block: not more than the limit, so the rows as today.
    response = leader.get(f"{base(town)}/households/")
    assert not response.context["listing"].rows_folded
    assert [h.label for h in response.context["households"]] == ["山田", "佐藤", "鈴木", "高橋"]

    monkeypatch.setattr("communities.selectors.PAGE_ROWS_MAX", 3)
    folded = leader.get(f"{base(town)}/households/")
    listing = folded.context["listing"]
    assert listing.rows_folded
    assert listing.total == 4
    assert [(b.block.pk, b.households) for b in listing.blocks] == [(town.block1.pk, 4)]
    assert f"?block={town.block2.pk}" not in text(folded)
    assert "2班" not in text(folded)
    # Another block's rows stay out of reach: that block is not found.
    assert leader.get(f"{base(town)}/households/?block={town.block2.pk}").status_code == 404


def test_household_list_of_a_small_association_is_unchanged(town: Town) -> None:
    _fold_town(town)
    response = as_user(town.chair).get(f"{base(town)}/households/")
    assert not response.context["listing"].rows_folded
    page = text(response)
    assert all(label in page for label in ("山田", "佐藤", "鈴木", "高橋", "田中"))
    assert "block-summary" not in page
    assert ja("Back to all blocks") not in page


def test_folded_household_list_query_count_does_not_grow(
    town: Town, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = as_user(town.chair)
    url = f"{base(town)}/households/"
    _grow_block(town, 5)
    unfolded = _queries(client, url)
    monkeypatch.setattr("communities.selectors.PAGE_ROWS_MAX", 5)
    folded = _queries(client, url)
    _grow_block(town, 50)
    assert _queries(client, url) == folded
    # The blocks' counts take the place of the rows' query.
    assert folded == unfolded
    assert _queries(client, f"{url}?block={town.block1.pk}") == unfolded

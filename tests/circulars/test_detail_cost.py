"""The resident's circular page costs a fixed, small number of queries (issue 7, pages).

Every community page reads the session, the user and one row for the reader's place in
the community (roles, households and display preferences together); the circular page
adds the household's receipt and the questions; the attachments come from the cache once
the circular has been shown. Nothing grows with the association, and only the first view
writes (the opening).
"""

from __future__ import annotations

import io

import pytest
from django.conf import LazySettings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from PIL import Image
from pytest_django import DjangoAssertNumQueries

from circulars import services
from circulars.models import Circular, Receipt, ReceiptMethod
from circulars.services import CircularData
from communities import services as community_services
from communities.models import Household, Member, Preference, RoleAssignment, RoleKind
from tests.conftest import Town
from tests.factories import MemberFactory, give_role

# Session, user, the reader's place (one row), receipt, questions.
RESIDENT_PAGE_QUERIES = 5
WRITES = ("INSERT", "UPDATE", "DELETE", "SAVEPOINT", "BEGIN")


@pytest.fixture(autouse=True)
def _database_sessions(settings: LazySettings) -> None:
    """Sessions from the database, whatever REDIS_URL says: one query, counted here
    (tests/test_resilient_cache.py counts the cached ones)."""
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.db"


def publish(town: Town, title: str = "ごみ収集日の変更について") -> Circular:
    circular = services.circular_create(
        community=town.community,
        author=town.chair,
        data=CircularData(title=title, body="燃えるごみは火曜と金曜です。"),
    )
    return services.circular_publish(circular=circular)


def page(town: Town, circular: Circular) -> str:
    return reverse("circulars:detail", args=[town.community.slug, circular.pk])


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def grow(town: Town, households: int, circulars: int) -> None:
    """More households with members, and more published circulars."""
    start = Household.objects.count()
    created = Household.objects.bulk_create(
        Household(
            community=town.community,
            block=town.block1 if n % 2 else town.block2,
            label=f"世帯{start + n}",
            circulation_order=1000 + start + n,
        )
        for n in range(households)
    )
    for household in created[:50]:
        MemberFactory.create(household=household)
    for n in range(circulars):
        publish(town, f"お知らせ{n}")


def test_resident_page_reads_a_fixed_number_of_queries_and_writes_nothing_again(
    town: Town, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    circular = publish(town)
    resident = logged_in(town.resident1)
    assert resident.get(page(town, circular)).status_code == 200  # opens, fills the cache

    with CaptureQueriesContext(connection) as small:
        response = resident.get(page(town, circular))
    assert response.status_code == 200
    assert "燃えるごみは火曜と金曜です。" in response.content.decode()
    assert len(small) == RESIDENT_PAGE_QUERIES, [q["sql"][:120] for q in small]
    assert not [q["sql"] for q in small if q["sql"].lstrip().upper().startswith(WRITES)]

    grow(town, households=300, circulars=30)
    assert Receipt.objects.filter(household=town.household1).count() == 31
    resident.get(page(town, circular))
    with django_assert_num_queries(RESIDENT_PAGE_QUERIES):
        assert resident.get(page(town, circular)).status_code == 200


def test_the_first_view_records_the_opening_and_later_views_change_nothing(town: Town) -> None:
    circular = publish(town)
    receipt = Receipt.objects.get(circular=circular, household=town.household1)
    assert receipt.opened_at is None
    resident = logged_in(town.resident1)

    resident.get(page(town, circular))
    receipt.refresh_from_db()
    opened_at, version = receipt.opened_at, receipt.version
    assert opened_at is not None

    resident.get(page(town, circular))
    receipt.refresh_from_db()
    assert (receipt.opened_at, receipt.version) == (opened_at, version)

    # A receipt a 班長 confirmed (手渡し) before the resident looked is left as it is.
    other = publish(town, "回覧板")
    services.receipt_confirm(
        circular=other, household=town.household1, method=ReceiptMethod.PROXY_HAND
    )
    confirmed = Receipt.objects.get(circular=other, household=town.household1)
    assert resident.get(page(town, other)).status_code == 200
    after = Receipt.objects.get(pk=confirmed.pk)
    assert (after.opened_at, after.version) == (confirmed.opened_at, confirmed.version)


def test_display_preferences_come_with_the_readers_place(town: Town) -> None:
    circular = publish(town)
    Preference.objects.create(user=town.resident1, large_text=True, furigana=True)
    resident = logged_in(town.resident1)
    resident.get(page(town, circular))
    with CaptureQueriesContext(connection) as captured:
        response = resident.get(page(town, circular))
    html = response.content.decode()
    assert 'class="large-text ' in html
    assert 'class="circular-body furigana"' in html
    assert 'name="setting" value="furigana"' in html
    reading_preferences = [q for q in captured if "communities_preference" in q["sql"]]
    assert len(reading_preferences) == 1  # the reader's place, not a query of its own


def _jpeg() -> SimpleUploadedFile:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 30)).save(buffer, "JPEG")
    return SimpleUploadedFile("掲示.jpg", buffer.getvalue(), content_type="image/jpeg")


def test_cached_attachments_follow_every_change_of_a_published_circular(town: Town) -> None:
    circular = publish(town)
    resident, chair = logged_in(town.resident1), logged_in(town.chair)
    assert "掲示.jpg" not in resident.get(page(town, circular)).content.decode()

    add = reverse("circulars:attachment_add", args=[town.community.slug, circular.pk])
    assert chair.post(add, {"file": _jpeg()}).status_code == 302
    html = resident.get(page(town, circular)).content.decode()
    assert "掲示.jpg" in html
    attachment = circular.attachments.get()
    assert f"/files/{attachment.pk}/display/" in html

    remove = reverse(
        "circulars:attachment_delete", args=[town.community.slug, circular.pk, attachment.pk]
    )
    assert chair.post(remove).status_code == 302
    assert "掲示.jpg" not in resident.get(page(town, circular)).content.decode()


def test_a_place_taken_away_stops_working_at_once(town: Town) -> None:
    circular = publish(town)
    leader = logged_in(town.leader1)
    staff_list = reverse("circulars:list", args=[town.community.slug])
    assert leader.get(staff_list).status_code == 200
    community_services.role_end(assignment=RoleAssignment.objects.get(user=town.leader1))
    assert leader.get(staff_list).status_code == 404

    # A place elsewhere keeps the account (and the session) alive after the removal.
    give_role(user=town.resident1, community=town.other_community, role=RoleKind.OFFICER)
    resident = logged_in(town.resident1)
    assert resident.get(page(town, circular)).status_code == 200
    community_services.member_remove(member=Member.objects.get(user=town.resident1))
    assert resident.get(page(town, circular)).status_code == 404

"""``community_page_get``: every community page's reader, roles, households and display
preferences in one written-out query, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.db import connection
from django.http import Http404
from django.test.utils import CaptureQueriesContext

from communities import selectors, services
from communities.models import Preference, RoleAssignment, RoleKind
from communities.selectors import DisplayPreferences
from tests.conftest import Town
from tests.factories import HouseholdFactory, MemberFactory, give_role

pytestmark = pytest.mark.django_db

PEOPLE = ["chair", "officer", "leader1", "helper2", "resident1", "resident2"]


def _user(town: Town, who: str) -> User:
    user = getattr(town, who)
    assert isinstance(user, User)
    return user


@pytest.mark.parametrize("who", PEOPLE)
def test_one_query_gives_the_same_access_as_the_plain_queries(town: Town, who: str) -> None:
    user = _user(town, who)
    with CaptureQueriesContext(connection) as captured:
        got = selectors.community_page_get(slug=town.community.slug, user=user)
    assert len(captured) == 1
    expected = selectors.community_access_for(community=town.community, user_id=user.pk)
    assert got.access == expected
    assert got.access.community.name == town.community.name
    assert got.access.community.paper_distribution == town.community.paper_distribution
    assert got.preferences == DisplayPreferences()


def test_several_roles_and_households_are_all_read(town: Town) -> None:
    user = town.leader1
    give_role(user=user, community=town.community, role=RoleKind.HELPER, block=town.block2)
    give_role(user=user, community=town.community, role=RoleKind.OFFICER)
    second = HouseholdFactory.create(block=town.block2)
    MemberFactory.create(household=town.household1, user=user)
    MemberFactory.create(household=second, user=user)
    # A household in another association is not part of this one's access.
    MemberFactory.create(
        household=HouseholdFactory.create(block=town.other_community.blocks.get()), user=user
    )

    access = selectors.community_page_get(slug=town.community.slug, user=user).access
    assert access.roles == {RoleKind.BLOCK_LEADER, RoleKind.HELPER, RoleKind.OFFICER}
    assert access.block_ids == {town.block1.pk, town.block2.pk}
    assert access.led_block_ids == {town.block1.pk}
    assert access.household_ids == {town.household1.pk, second.pk}
    assert access == selectors.community_access_for(community=town.community, user_id=user.pk)


def test_ended_roles_count_for_nothing(town: Town) -> None:
    services.role_end(assignment=RoleAssignment.objects.get(user=town.leader1))
    with pytest.raises(Http404):
        selectors.community_page_get(slug=town.community.slug, user=town.leader1)


def test_preferences_are_read_with_the_access(town: Town) -> None:
    Preference.objects.create(user=town.resident1, high_contrast=True, furigana=True)
    Preference.objects.create(user=town.resident2, large_text=True)
    first = selectors.community_page_get(slug=town.community.slug, user=town.resident1)
    second = selectors.community_page_get(slug=town.community.slug, user=town.resident2)
    assert first.preferences == DisplayPreferences(high_contrast=True, furigana=True)
    assert second.preferences == DisplayPreferences(large_text=True)


@pytest.mark.parametrize("who", ["other_chair", "other_resident"])
def test_people_of_another_association_get_a_404(town: Town, who: str) -> None:
    with pytest.raises(Http404):
        selectors.community_page_get(slug=town.community.slug, user=_user(town, who))


def test_unknown_association_and_anonymous_get_a_404(town: Town) -> None:
    with pytest.raises(Http404):
        selectors.community_page_get(slug="no-such-town", user=town.chair)
    with pytest.raises(Http404):
        selectors.community_page_get(slug=town.community.slug, user=AnonymousUser())

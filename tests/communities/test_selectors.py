"""Who sees what: the visibility matrix and the paper rule."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.http import Http404

from communities import selectors, services
from communities.models import DeliveryMode, Household, RoleAssignment, RoleKind
from communities.selectors import Access
from tests.conftest import Town
from tests.factories import HouseholdFactory, MemberFactory, UserFactory

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Expect:
    """What one person should see in ``town.community``."""

    blocks: tuple[str, ...]
    households: tuple[str, ...]
    is_officer: bool = False
    is_chair: bool = False
    is_member: bool = False


EXPECTED: dict[str, Expect] = {
    "chair": Expect(("1班", "2班"), ("山田", "田中"), is_officer=True, is_chair=True),
    "officer": Expect(("1班", "2班"), ("山田", "田中"), is_officer=True),
    "leader1": Expect(("1班",), ("山田",)),
    "helper2": Expect(("2班",), ("田中",)),
    # A resident has a place in the community but sees no roster as staff.
    "resident1": Expect((), (), is_member=True),
}
OUTSIDERS = ["other_chair", "other_resident"]


def _user(town: Town, who: str) -> User:
    user = getattr(town, who)
    assert isinstance(user, User)
    return user


def _access(town: Town, who: str) -> Access:
    return selectors.community_access_get(slug=town.community.slug, user=_user(town, who))


@pytest.mark.parametrize("who", list(EXPECTED))
def test_access_for_people_with_a_place(town: Town, who: str) -> None:
    expect = EXPECTED[who]
    access = _access(town, who)
    assert access.community == town.community
    assert access.user_id == _user(town, who).pk
    assert access.is_officer is expect.is_officer
    assert access.is_chair is expect.is_chair
    assert access.is_member is expect.is_member


@pytest.mark.parametrize("who", list(EXPECTED))
def test_blocks_visible(town: Town, who: str) -> None:
    access = _access(town, who)
    blocks = list(selectors.blocks_visible(access=access))
    assert tuple(block.name for block in blocks) == EXPECTED[who].blocks
    for block in blocks:
        assert block.household_count == 1  # type: ignore[attr-defined]
        assert selectors.block_get_visible(access=access, block_id=block.pk) == block
    hidden = {town.block1, town.block2} - set(blocks)
    for block in hidden:
        with pytest.raises(Http404):
            selectors.block_get_visible(access=access, block_id=block.pk)


@pytest.mark.parametrize("who", list(EXPECTED))
def test_households_visible(town: Town, who: str) -> None:
    access = _access(town, who)
    visible = selectors.households_visible(access=access)
    assert tuple(h.label for h in visible) == EXPECTED[who].households
    for household in visible:
        assert selectors.household_get_visible(access=access, household_id=household.pk) == (
            household
        )
    for household in (town.household1, town.household2):
        if household.label not in EXPECTED[who].households:
            with pytest.raises(Http404):
                selectors.household_get_visible(access=access, household_id=household.pk)


@pytest.mark.parametrize("who", list(EXPECTED))
def test_no_one_sees_another_communitys_rows(town: Town, who: str) -> None:
    access = _access(town, who)
    foreign_household = Household.objects.get(community=town.other_community)
    with pytest.raises(Http404):
        selectors.household_get_visible(access=access, household_id=foreign_household.pk)
    with pytest.raises(Http404):
        selectors.block_get_visible(access=access, block_id=foreign_household.block_id)
    assert not selectors.households_visible(
        access=access, block_id=foreign_household.block_id
    ).exists()
    assert foreign_household.block_id not in {
        block.pk for block in selectors.blocks_visible(access=access)
    }


def test_households_visible_filtered_by_block(town: Town) -> None:
    access = _access(town, "chair")
    in_block2 = selectors.households_visible(access=access, block_id=town.block2.pk)
    assert [h.pk for h in in_block2] == [town.household2.pk]
    leader = _access(town, "leader1")
    assert not selectors.households_visible(access=leader, block_id=town.block2.pk).exists()


@pytest.mark.parametrize("who", OUTSIDERS)
def test_outsiders_get_404(town: Town, who: str) -> None:
    with pytest.raises(Http404):
        _access(town, who)
    # ...while their own community lets them in.
    own = selectors.community_access_get(slug=town.other_community.slug, user=_user(town, who))
    assert own.community == town.other_community


def test_anonymous_gets_404(town: Town) -> None:
    with pytest.raises(Http404):
        selectors.community_access_get(slug=town.community.slug, user=AnonymousUser())


def test_unknown_community_is_404(town: Town) -> None:
    with pytest.raises(Http404):
        selectors.community_access_get(slug="no-such-place", user=town.chair)


def test_a_user_with_no_place_anywhere_gets_404(town: Town) -> None:
    with pytest.raises(Http404):
        selectors.community_access_get(slug=town.community.slug, user=UserFactory.create())


def test_ended_roles_give_no_access(town: Town) -> None:
    role = RoleAssignment.objects.get(user=town.leader1)
    services.role_end(assignment=role)
    with pytest.raises(Http404):
        _access(town, "leader1")


def test_a_household_member_sees_their_own_household(town: Town) -> None:
    access = _access(town, "resident1")
    assert access.household_ids == frozenset({town.household1.pk})
    assert selectors.household_get_own(access=access) == town.household1
    with pytest.raises(Http404):
        selectors.household_get_own(access=access, household_id=town.household2.pk)
    other = selectors.community_access_get(slug=town.other_community.slug, user=town.other_resident)
    with pytest.raises(Http404):
        selectors.household_get_own(access=other, household_id=town.household1.pk)


def test_staff_with_several_roles_see_the_union(town: Town) -> None:
    services.role_assign(
        community=town.community, user=town.leader1, role=RoleKind.HELPER, block=town.block2
    )
    access = _access(town, "leader1")
    assert access.block_ids == frozenset({town.block1.pk, town.block2.pk})
    assert access.led_block_ids == frozenset({town.block1.pk})
    assert access.can_issue_invites(town.block1.pk)
    assert not access.can_issue_invites(town.block2.pk)
    assert {h.pk for h in selectors.households_visible(access=access)} == {
        town.household1.pk,
        town.household2.pk,
    }


def test_who_may_issue_invites(town: Town) -> None:
    assert _access(town, "chair").can_issue_invites(town.block2.pk)
    assert not _access(town, "helper2").can_issue_invites(town.block2.pk)
    assert not _access(town, "resident1").can_issue_invites(town.block1.pk)


def test_communities_for_user(town: Town) -> None:
    MemberFactory.create(
        household=Household.objects.get(community=town.other_community), user=town.chair
    )
    places = selectors.communities_for_user(user=town.chair)
    by_slug = {place.community.slug: place for place in places}
    assert set(by_slug) == {town.community.slug, town.other_community.slug}
    assert by_slug[town.community.slug].roles == frozenset({RoleKind.CHAIR})
    assert not by_slug[town.community.slug].is_member
    assert by_slug[town.other_community.slug].is_member
    assert by_slug[town.other_community.slug].roles == frozenset()
    assert selectors.communities_for_user(user=AnonymousUser()) == []


# --- The paper rule ---------------------------------------------------------------------


def _annotated(town: Town, household: Household) -> Household:
    return selectors.household_get_visible(access=_access(town, "chair"), household_id=household.pk)


def test_app_household_with_a_working_login_is_not_on_paper(town: Town) -> None:
    household = _annotated(town, town.household1)
    assert household.delivery_mode == DeliveryMode.APP
    assert household.has_working_login is True  # type: ignore[attr-defined]
    assert household.app_members == 1  # type: ignore[attr-defined]
    assert selectors.household_on_paper(household=household) is False
    # Without the annotation the same answer comes from a query.
    assert selectors.household_on_paper(household=Household.objects.get(pk=household.pk)) is False


def test_app_household_without_members_is_on_paper(town: Town) -> None:
    empty = HouseholdFactory.create(block=town.block1, label="空き", delivery_mode="app")
    household = _annotated(town, empty)
    assert household.has_working_login is False  # type: ignore[attr-defined]
    assert household.app_members == 0  # type: ignore[attr-defined]
    assert selectors.household_on_paper(household=household) is True
    assert selectors.household_on_paper(household=Household.objects.get(pk=empty.pk)) is True


def test_app_household_whose_members_cannot_log_in_is_on_paper(town: Town) -> None:
    town.resident1.is_active = False
    town.resident1.save(update_fields=["is_active"])
    household = _annotated(town, town.household1)
    assert household.has_working_login is False  # type: ignore[attr-defined]
    assert household.app_members == 0  # type: ignore[attr-defined]
    assert selectors.household_on_paper(household=household) is True
    plain = Household.objects.get(pk=town.household1.pk)
    assert selectors.household_on_paper(household=plain) is True
    # One active member is enough.
    MemberFactory.create(household=town.household1)
    household = _annotated(town, town.household1)
    assert household.app_members == 1  # type: ignore[attr-defined]
    assert selectors.household_on_paper(household=household) is False


@pytest.mark.parametrize("mode", [DeliveryMode.PAPER, DeliveryMode.BOTH])
def test_paper_and_both_are_always_on_paper(town: Town, mode: str) -> None:
    Household.objects.filter(pk=town.household1.pk).update(delivery_mode=mode)
    MemberFactory.create(household=town.household1)
    household = _annotated(town, town.household1)
    assert household.has_working_login is True  # type: ignore[attr-defined]
    assert household.app_members == 2  # type: ignore[attr-defined]
    assert selectors.household_on_paper(household=household) is True
    assert selectors.household_on_paper(household=Household.objects.get(pk=household.pk)) is True


def test_app_members_counts_each_member_once(town: Town) -> None:
    for _ in range(3):
        MemberFactory.create(household=town.household2)
    access = _access(town, "chair")
    counts = {h.pk: h.app_members for h in selectors.households_visible(access=access)}  # type: ignore[attr-defined]
    assert counts == {town.household1.pk: 1, town.household2.pk: 4}

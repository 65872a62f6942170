"""Writes to the community model: blocks, households, roles and accounts."""

from __future__ import annotations

import threading
import time
from datetime import date

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import connection, connections, transaction

from communities import services
from communities.models import (
    Block,
    DeliveryMode,
    Household,
    Member,
    RemovedHousehold,
    RoleAssignment,
    RoleKind,
)
from communities.services import BlockAssignment, HouseholdData
from tests.conftest import Town
from tests.factories import (
    CommunityFactory,
    HouseholdFactory,
    MemberFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def _orders(block: Block) -> list[tuple[str, int]]:
    return list(
        Household.objects.filter(block=block)
        .order_by("circulation_order", "id")
        .values_list("label", "circulation_order")
    )


def _block_names(town: Town) -> list[str]:
    return list(
        Block.objects.filter(community=town.community)
        .order_by("position", "id")
        .values_list("name", flat=True)
    )


# --- Communities ------------------------------------------------------------------------


def test_community_create_makes_the_creator_chair() -> None:
    chair = UserFactory.create()
    community = services.community_create(name="  かえで会 ", slug="kaede", chair=chair)
    assert community.name == "かえで会"
    role = RoleAssignment.objects.get(community=community)
    assert (role.user, role.role, role.block, role.ended_at) == (chair, RoleKind.CHAIR, None, None)
    assert role.fiscal_year == services.fiscal_year_current()


@pytest.mark.parametrize(
    ("name", "slug", "field"),
    [("", "kaede", "name"), ("かえで会", "Kaede", "slug"), ("かえで会", "k", "slug")],
)
def test_community_create_validates(name: str, slug: str, field: str) -> None:
    with pytest.raises(ValidationError) as error:
        services.community_create(name=name, slug=slug, chair=UserFactory.create())
    assert field in error.value.message_dict


def test_community_create_refuses_a_taken_slug(town: Town) -> None:
    with pytest.raises(ValidationError) as error:
        services.community_create(name="別の会", slug=town.community.slug, chair=town.chair)
    assert "slug" in error.value.message_dict


@pytest.mark.parametrize(
    ("today", "year"),
    [(date(2027, 3, 31), 2026), (date(2027, 4, 1), 2027), (date(2026, 12, 31), 2026)],
)
def test_fiscal_year_starts_in_april(today: date, year: int) -> None:
    assert services.fiscal_year_current(today=today) == year


# --- Blocks -----------------------------------------------------------------------------


def test_block_create_appends_at_the_end(town: Town) -> None:
    block = services.block_create(community=town.community, name=" 3班 ")
    assert block.name == "3班"
    assert block.position == town.block2.position + 1
    assert _block_names(town) == ["1班", "2班", "3班"]


def test_block_create_in_an_empty_community_starts_at_one() -> None:
    community = CommunityFactory.create()
    assert services.block_create(community=community, name="東班").position == 1


@pytest.mark.parametrize("name", ["", "   ", "1班", " 1班 "])
def test_block_create_refuses_empty_or_duplicate_names(town: Town, name: str) -> None:
    with pytest.raises(ValidationError) as error:
        services.block_create(community=town.community, name=name)
    assert "name" in error.value.message_dict
    assert Block.objects.filter(community=town.community).count() == 2


def test_block_names_are_per_community(town: Town) -> None:
    block = services.block_create(community=town.other_community, name="1班")
    assert block.community == town.other_community


def test_block_rename(town: Town) -> None:
    services.block_rename(block=town.block1, name=" 東1班 ")
    town.block1.refresh_from_db()
    assert town.block1.name == "東1班"
    # Keeping its own name is not a clash.
    services.block_rename(block=town.block1, name="東1班")
    with pytest.raises(ValidationError):
        services.block_rename(block=town.block1, name="2班")
    town.block1.refresh_from_db()
    assert town.block1.name == "東1班"


def test_block_delete_refuses_a_block_with_households(town: Town) -> None:
    with pytest.raises(ValidationError):
        services.block_delete(block=town.block1)
    assert Block.objects.filter(pk=town.block1.pk).exists()
    assert Household.objects.filter(pk=town.household1.pk).exists()


def test_block_delete_removes_an_empty_block(town: Town) -> None:
    block = services.block_create(community=town.community, name="3班")
    services.block_delete(block=block)
    assert not Block.objects.filter(pk=block.pk).exists()


def test_block_move_swaps_with_neighbours(town: Town) -> None:
    block3 = services.block_create(community=town.community, name="3班")
    services.block_move(block=block3, direction=-1)
    assert _block_names(town) == ["1班", "3班", "2班"]
    services.block_move(block=block3, direction=-1)
    assert _block_names(town) == ["3班", "1班", "2班"]
    # Already first: nothing moves, positions are 1..n.
    moved = services.block_move(block=block3, direction=-1)
    assert moved.position == 1
    assert _block_names(town) == ["3班", "1班", "2班"]
    services.block_move(block=town.block2, direction=1)
    assert _block_names(town) == ["3班", "1班", "2班"]
    services.block_move(block=town.block1, direction=1)
    assert _block_names(town) == ["3班", "2班", "1班"]
    positions = list(
        Block.objects.filter(community=town.community)
        .order_by("position")
        .values_list("position", flat=True)
    )
    assert positions == [1, 2, 3]


def test_block_move_leaves_other_communities_alone(town: Town) -> None:
    other_block = Block.objects.get(community=town.other_community)
    before = other_block.position
    services.block_move(block=town.block2, direction=-1)
    other_block.refresh_from_db()
    assert other_block.position == before


# --- Households -------------------------------------------------------------------------


def test_household_create_strips_and_appends(town: Town) -> None:
    household = services.household_create(
        community=town.community,
        data=HouseholdData(
            label=" 鈴木 ",
            block=town.block1,
            address=" さくら町1-2 ",
            phone=" 090-1234-5678 ",
            delivery_mode=DeliveryMode.BOTH,
            helper_note=" 犬がいます ",
        ),
    )
    household.refresh_from_db()
    assert household.community == town.community
    assert (household.label, household.address, household.phone, household.helper_note) == (
        "鈴木",
        "さくら町1-2",
        "090-1234-5678",
        "犬がいます",
    )
    assert household.delivery_mode == DeliveryMode.BOTH
    assert household.circulation_order == town.household1.circulation_order + 1


def test_household_create_defaults_to_paper(town: Town) -> None:
    household = services.household_create(
        community=town.community, data=HouseholdData(label="高橋", block=town.block1)
    )
    assert household.delivery_mode == DeliveryMode.PAPER


def test_household_create_in_an_empty_block_starts_at_one(town: Town) -> None:
    block = services.block_create(community=town.community, name="3班")
    household = services.household_create(
        community=town.community, data=HouseholdData(label="高橋", block=block)
    )
    assert household.circulation_order == 1


@pytest.mark.parametrize(
    ("label", "mode", "fields"),
    [
        ("", DeliveryMode.APP, {"label"}),
        ("   ", DeliveryMode.APP, {"label"}),
        ("高橋", "fax", {"delivery_mode"}),
        ("", "fax", {"label", "delivery_mode"}),
    ],
)
def test_household_create_validation_errors(
    town: Town, label: str, mode: str, fields: set[str]
) -> None:
    with pytest.raises(ValidationError) as error:
        services.household_create(
            community=town.community,
            data=HouseholdData(label=label, block=town.block1, delivery_mode=mode),
        )
    assert set(error.value.message_dict) == fields
    assert Household.objects.filter(community=town.community).count() == 2


def test_household_create_refuses_a_foreign_block(town: Town) -> None:
    foreign = Block.objects.get(community=town.other_community)
    with pytest.raises(ValidationError) as error:
        services.household_create(
            community=town.community, data=HouseholdData(label="高橋", block=foreign)
        )
    assert "block" in error.value.message_dict
    assert not Household.objects.filter(label="高橋").exists()


def test_household_create_refuses_a_duplicate_in_the_block(town: Town) -> None:
    with pytest.raises(ValidationError) as error:
        services.household_create(
            community=town.community, data=HouseholdData(label=" 山田 ", block=town.block1)
        )
    assert "label" in error.value.message_dict
    # The same name in another block is another household.
    other = services.household_create(
        community=town.community, data=HouseholdData(label="山田", block=town.block2)
    )
    assert other.block == town.block2


def test_household_update_changes_fields(town: Town) -> None:
    order = town.household1.circulation_order
    services.household_update(
        household=town.household1,
        data=HouseholdData(
            label="山田 (新)",
            block=town.block1,
            address="さくら町3-4",
            phone="03-1234-5678",
            delivery_mode=DeliveryMode.PAPER,
            helper_note="郵便受けへ",
        ),
    )
    household = Household.objects.get(pk=town.household1.pk)
    assert household.label == "山田 (新)"
    assert household.address == "さくら町3-4"
    assert household.phone == "03-1234-5678"
    assert household.delivery_mode == DeliveryMode.PAPER
    assert household.helper_note == "郵便受けへ"
    assert household.circulation_order == order  # same block: same place in the round


def test_household_update_keeps_its_own_label(town: Town) -> None:
    household = services.household_update(
        household=town.household1, data=HouseholdData(label="山田", block=town.block1)
    )
    assert household.label == "山田"


def test_household_update_refuses_a_clash_and_saves_nothing(town: Town) -> None:
    services.household_create(
        community=town.community, data=HouseholdData(label="鈴木", block=town.block1)
    )
    with pytest.raises(ValidationError) as error:
        services.household_update(
            household=town.household1,
            data=HouseholdData(label="鈴木", block=town.block1, address="変更"),
        )
    assert "label" in error.value.message_dict
    town.household1.refresh_from_db()
    assert (town.household1.label, town.household1.address) == ("山田", "")


def test_household_update_refuses_a_foreign_block(town: Town) -> None:
    foreign = Block.objects.get(community=town.other_community)
    with pytest.raises(ValidationError):
        services.household_update(
            household=town.household1, data=HouseholdData(label="山田", block=foreign)
        )
    town.household1.refresh_from_db()
    assert town.household1.block == town.block1


def test_household_update_to_another_block_goes_to_the_end(town: Town) -> None:
    for label in ("鈴木", "高橋"):
        services.household_create(
            community=town.community, data=HouseholdData(label=label, block=town.block2)
        )
    last_in_block2 = max(order for _label, order in _orders(town.block2))
    moved = services.household_update(
        household=town.household1, data=HouseholdData(label="山田", block=town.block2)
    )
    moved.refresh_from_db()
    assert moved.block == town.block2
    assert moved.circulation_order == last_in_block2 + 1
    assert [label for label, _order in _orders(town.block2)] == ["田中", "鈴木", "高橋", "山田"]
    assert _orders(town.block1) == []


def test_household_update_to_a_block_with_the_same_name_refused(town: Town) -> None:
    with pytest.raises(ValidationError):
        services.household_update(
            household=town.household2, data=HouseholdData(label="山田", block=town.block1)
        )
    town.household2.refresh_from_db()
    assert town.household2.block == town.block2


def test_household_move_reorders_the_round(town: Town) -> None:
    for label in ("鈴木", "高橋"):
        services.household_create(
            community=town.community, data=HouseholdData(label=label, block=town.block1)
        )
    takahashi = Household.objects.get(block=town.block1, label="高橋")
    services.household_move(household=takahashi, direction=-1)
    assert _orders(town.block1) == [("山田", 1), ("高橋", 2), ("鈴木", 3)]
    moved = services.household_move(household=takahashi, direction=-1)
    assert moved.circulation_order == 1
    assert _orders(town.block1) == [("高橋", 1), ("山田", 2), ("鈴木", 3)]
    # At the start already: nothing changes.
    services.household_move(household=takahashi, direction=-1)
    assert _orders(town.block1) == [("高橋", 1), ("山田", 2), ("鈴木", 3)]
    suzuki = Household.objects.get(block=town.block1, label="鈴木")
    services.household_move(household=suzuki, direction=1)
    assert _orders(town.block1) == [("高橋", 1), ("山田", 2), ("鈴木", 3)]
    # Other blocks keep their order.
    assert _orders(town.block2) == [("田中", town.household2.circulation_order)]


def test_household_move_closes_gaps(town: Town) -> None:
    block = services.block_create(community=town.community, name="3班")
    a = HouseholdFactory.create(block=block, label="A", circulation_order=5)
    HouseholdFactory.create(block=block, label="B", circulation_order=10)
    HouseholdFactory.create(block=block, label="C", circulation_order=20)
    services.household_move(household=a, direction=1)
    assert _orders(block) == [("B", 1), ("A", 2), ("C", 3)]


def test_household_remove_keeps_only_an_anonymous_count(town: Town) -> None:
    household = services.household_create(
        community=town.community,
        data=HouseholdData(
            label="高橋",
            block=town.block2,
            address="さくら町9-9",
            phone="090-0000-0000",
            delivery_mode=DeliveryMode.BOTH,
        ),
    )
    resident = MemberFactory.create(household=household).user
    resident.email = ""
    resident.save(update_fields=["email"])
    record = services.household_remove(household=household)
    assert not Household.objects.filter(pk=household.pk).exists()
    assert not Member.objects.filter(household_id=household.pk).exists()
    # The resident's account existed only for this household.
    assert not User.objects.filter(pk=resident.pk).exists()
    record.refresh_from_db()
    assert record.community == town.community
    assert record.block_name == "2班"
    assert record.delivery_mode == DeliveryMode.BOTH
    assert record.removed_at is not None
    kept = {f.name for f in RemovedHousehold._meta.concrete_fields}
    assert kept == {"id", "community", "block_name", "delivery_mode", "removed_at"}
    assert RemovedHousehold.objects.filter(community=town.community).count() == 1


def test_household_remove_keeps_accounts_with_another_place(town: Town) -> None:
    household = HouseholdFactory.create(block=town.block1, label="高橋")
    orphan = MemberFactory.create(household=household).user
    elsewhere = MemberFactory.create(household=household).user
    MemberFactory.create(household=town.household2, user=elsewhere)
    with_email = MemberFactory.create(household=household).user
    EmailAddress.objects.create(user=with_email, email=with_email.email, primary=True)
    with_role = MemberFactory.create(household=household).user
    services.role_assign(
        community=town.community, user=with_role, role=RoleKind.HELPER, block=town.block1
    )
    MemberFactory.create(household=household, user=town.leader1)

    services.household_remove(household=household)

    assert not User.objects.filter(pk=orphan.pk).exists()
    for kept in (elsewhere, with_email, with_role, town.leader1):
        assert User.objects.filter(pk=kept.pk).exists()
    # The other household's members are untouched.
    assert Member.objects.filter(household=town.household2, user=elsewhere).exists()
    assert User.objects.filter(pk=town.resident1.pk).exists()


# --- Roles ------------------------------------------------------------------------------


def test_role_assign_is_idempotent(town: Town) -> None:
    user = UserFactory.create()
    first = services.role_assign(
        community=town.community, user=user, role=RoleKind.BLOCK_LEADER, block=town.block2
    )
    second = services.role_assign(
        community=town.community, user=user, role=RoleKind.BLOCK_LEADER, block=town.block2
    )
    assert first.pk == second.pk
    officer1 = services.role_assign(community=town.community, user=user, role=RoleKind.OFFICER)
    officer2 = services.role_assign(community=town.community, user=user, role=RoleKind.OFFICER)
    assert officer1.pk == officer2.pk
    assert RoleAssignment.objects.filter(community=town.community, user=user).count() == 2


def test_role_assign_same_role_in_two_blocks_is_two_roles(town: Town) -> None:
    services.role_assign(
        community=town.community, user=town.helper2, role=RoleKind.HELPER, block=town.block1
    )
    blocks = set(
        RoleAssignment.objects.filter(
            user=town.helper2, role=RoleKind.HELPER, ended_at__isnull=True
        ).values_list("block", flat=True)
    )
    assert blocks == {town.block1.pk, town.block2.pk}


def test_role_assign_after_an_ended_role_starts_a_new_one(town: Town) -> None:
    old = RoleAssignment.objects.get(user=town.officer, role=RoleKind.OFFICER)
    services.role_end(assignment=old)
    new = services.role_assign(community=town.community, user=town.officer, role=RoleKind.OFFICER)
    assert new.pk != old.pk
    assert new.ended_at is None


@pytest.mark.parametrize("role", [RoleKind.BLOCK_LEADER, RoleKind.HELPER])
def test_block_roles_need_a_block(town: Town, role: str) -> None:
    with pytest.raises(ValidationError) as error:
        services.role_assign(community=town.community, user=UserFactory.create(), role=role)
    assert "block" in error.value.message_dict


def test_community_roles_drop_a_block(town: Town) -> None:
    role = services.role_assign(
        community=town.community,
        user=UserFactory.create(),
        role=RoleKind.OFFICER,
        block=town.block1,
    )
    assert role.block is None


def test_role_assign_refuses_a_foreign_block(town: Town) -> None:
    foreign = Block.objects.get(community=town.other_community)
    user = UserFactory.create()
    with pytest.raises(ValidationError) as error:
        services.role_assign(
            community=town.community, user=user, role=RoleKind.HELPER, block=foreign
        )
    assert "block" in error.value.message_dict
    assert not RoleAssignment.objects.filter(user=user).exists()


def test_role_assign_refuses_an_unknown_role(town: Town) -> None:
    with pytest.raises(ValidationError) as error:
        services.role_assign(community=town.community, user=town.resident1, role="king")
    assert "role" in error.value.message_dict


def test_role_end_keeps_the_row(town: Town) -> None:
    role = RoleAssignment.objects.get(user=town.leader1, role=RoleKind.BLOCK_LEADER)
    services.role_end(assignment=role)
    role.refresh_from_db()
    assert role.ended_at is not None
    ended_at = role.ended_at
    # Ending twice changes nothing.
    services.role_end(assignment=role)
    role.refresh_from_db()
    assert role.ended_at == ended_at


def test_role_end_refuses_to_remove_the_last_chair(town: Town) -> None:
    chair_role = RoleAssignment.objects.get(community=town.community, role=RoleKind.CHAIR)
    with pytest.raises(ValidationError):
        services.role_end(assignment=chair_role)
    chair_role.refresh_from_db()
    assert chair_role.ended_at is None


def test_role_end_allows_a_chair_to_hand_over(town: Town) -> None:
    chair_role = RoleAssignment.objects.get(community=town.community, role=RoleKind.CHAIR)
    services.role_assign(community=town.community, user=town.officer, role=RoleKind.CHAIR)
    services.role_end(assignment=chair_role)
    chair_role.refresh_from_db()
    assert chair_role.ended_at is not None
    active = RoleAssignment.objects.filter(
        community=town.community, role=RoleKind.CHAIR, ended_at__isnull=True
    )
    assert list(active.values_list("user", flat=True)) == [town.officer.pk]
    # The other association's chair does not count towards this one.
    new_role = active.get()
    with pytest.raises(ValidationError):
        services.role_end(assignment=new_role)


@pytest.mark.django_db(transaction=True)
def test_two_chairs_ending_each_other_at_once_leave_one(town: Town) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs row locks (PostgreSQL)")
    services.role_assign(community=town.community, user=town.officer, role=RoleKind.CHAIR)
    first, second = RoleAssignment.objects.filter(
        community=town.community, role=RoleKind.CHAIR
    ).order_by("pk")
    first_ended = threading.Event()
    outcome: dict[str, object] = {}

    def end_first() -> None:
        try:
            with transaction.atomic():
                services.role_end(assignment=first)
                first_ended.set()
                time.sleep(0.5)  # still uncommitted while the other request runs
        finally:
            first_ended.set()
            connections.close_all()

    def end_second() -> None:
        first_ended.wait(5)
        try:
            services.role_end(assignment=second)
            outcome["second"] = "ended"
        except ValidationError:
            outcome["second"] = "refused"
        finally:
            connections.close_all()

    threads = [threading.Thread(target=end_first), threading.Thread(target=end_second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert outcome == {"second": "refused"}
    active = RoleAssignment.objects.filter(
        community=town.community, role=RoleKind.CHAIR, ended_at__isnull=True
    )
    assert list(active.values_list("pk", flat=True)) == [second.pk]


def test_year_rollover_ends_block_roles_and_starts_new_ones(town: Town) -> None:
    old_ids = set(
        RoleAssignment.objects.filter(
            community=town.community, role__in=[RoleKind.BLOCK_LEADER, RoleKind.HELPER]
        ).values_list("pk", flat=True)
    )
    old_year = RoleAssignment.objects.get(pk=min(old_ids)).fiscal_year
    other_leader = services.role_assign(
        community=town.other_community,
        user=UserFactory.create(),
        role=RoleKind.BLOCK_LEADER,
        block=Block.objects.get(community=town.other_community),
    )

    created = services.year_rollover(
        community=town.community,
        fiscal_year=2031,
        assignments=[
            BlockAssignment(
                block=town.block1,
                leader_emails=("New.Leader@Example.jp",),
                helper_emails=(town.leader1.email,),
            ),
            BlockAssignment(
                block=town.block2, leader_emails=(town.helper2.email,), helper_emails=()
            ),
        ],
    )

    # History: the old rows are ended, not deleted, and keep their year.
    old = RoleAssignment.objects.filter(pk__in=old_ids)
    assert old.count() == len(old_ids) == 2
    assert all(role.ended_at is not None for role in old)
    assert {role.fiscal_year for role in old} == {old_year}
    # New roles for the new year.
    assert len(created) == 3
    assert {role.fiscal_year for role in created} == {2031}
    current = {
        (role.user.email.lower(), role.role, role.block_id)
        for role in RoleAssignment.objects.filter(
            community=town.community,
            role__in=[RoleKind.BLOCK_LEADER, RoleKind.HELPER],
            ended_at__isnull=True,
        ).select_related("user")
    }
    assert current == {
        ("new.leader@example.jp", RoleKind.BLOCK_LEADER, town.block1.pk),
        (town.leader1.email.lower(), RoleKind.HELPER, town.block1.pk),
        (town.helper2.email.lower(), RoleKind.BLOCK_LEADER, town.block2.pk),
    }
    # Community roles and other associations are untouched.
    assert RoleAssignment.objects.filter(
        community=town.community, role=RoleKind.CHAIR, ended_at__isnull=True
    ).exists()
    assert RoleAssignment.objects.filter(
        user=town.officer, role=RoleKind.OFFICER, ended_at__isnull=True
    ).exists()
    other_leader.refresh_from_db()
    assert other_leader.ended_at is None


def test_year_rollover_refuses_a_foreign_block_and_changes_nothing(town: Town) -> None:
    foreign = Block.objects.get(community=town.other_community)
    with pytest.raises(ValidationError):
        services.year_rollover(
            community=town.community,
            fiscal_year=2031,
            assignments=[
                BlockAssignment(block=foreign, leader_emails=("a@b.jp",), helper_emails=())
            ],
        )
    assert (
        RoleAssignment.objects.filter(community=town.community, ended_at__isnull=False).count() == 0
    )


def test_year_rollover_with_a_bad_email_rolls_back(town: Town) -> None:
    with pytest.raises(ValidationError):
        services.year_rollover(
            community=town.community,
            fiscal_year=2031,
            assignments=[
                BlockAssignment(
                    block=town.block1, leader_emails=("ok@example.jp", "nonsense"), helper_emails=()
                )
            ],
        )
    assert not RoleAssignment.objects.filter(ended_at__isnull=False).exists()
    assert not User.objects.filter(email="ok@example.jp").exists()


# --- Accounts ---------------------------------------------------------------------------


def test_user_get_or_create_by_email_creates_once() -> None:
    user = services.user_get_or_create_by_email(email="  Hanako@Example.JP ", name=" 花子 ")
    assert user.email == "hanako@example.jp"
    assert user.first_name == "花子"
    assert not user.has_usable_password()
    address = EmailAddress.objects.get(user=user)
    assert (address.email, address.primary, address.verified) == ("hanako@example.jp", True, False)
    again = services.user_get_or_create_by_email(email="HANAKO@example.jp")
    assert again.pk == user.pk
    assert User.objects.filter(email__iexact="hanako@example.jp").count() == 1
    assert EmailAddress.objects.filter(user=user).count() == 1


def test_user_get_or_create_by_email_finds_an_existing_user() -> None:
    existing = UserFactory.create(email="taro@example.jp")
    user = services.user_get_or_create_by_email(email="Taro@example.jp")
    assert user.pk == existing.pk
    assert EmailAddress.objects.filter(user=existing, email="taro@example.jp").exists()


def test_user_get_or_create_by_email_prefers_the_allauth_address() -> None:
    owner = UserFactory.create(email="")
    EmailAddress.objects.create(user=owner, email="jiro@example.jp", primary=True, verified=True)
    assert services.user_get_or_create_by_email(email="JIRO@example.jp").pk == owner.pk


@pytest.mark.parametrize("email", ["", "   ", "not-an-email"])
def test_user_get_or_create_by_email_refuses_nonsense(email: str) -> None:
    before = User.objects.count()
    with pytest.raises(ValidationError) as error:
        services.user_get_or_create_by_email(email=email)
    assert "email" in error.value.message_dict
    assert User.objects.count() == before

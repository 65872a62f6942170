"""Reads and visibility: who sees which circular, which ledger rows, and the inbox."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.http import Http404
from django.utils import timezone

from circulars import selectors, services
from circulars.models import Circular, Priority, ReceiptMethod
from circulars.services import CircularData
from communities.models import Block, Community, Household
from communities.selectors import Access, community_access_for, community_access_get
from tests.conftest import Town
from tests.factories import HouseholdFactory

ROLES = [
    "chair",
    "officer",
    "leader1",
    "helper2",
    "resident1",
    "resident2",
    "other_chair",
    "other_resident",
]


@dataclass
class World:
    town: Town
    all_blocks: Circular
    block2_only: Circular
    draft: Circular
    leader_post: Circular  # written by leader1, later widened to all blocks by the chair
    extra1: Household  # a second household in block1


def write(
    community: Community,
    author: User,
    title: str,
    *,
    blocks: list[Block] | None = None,
    body: str = "",
    priority: str = Priority.NORMAL,
) -> Circular:
    return services.circular_create(
        community=community,
        author=author,
        data=CircularData(
            title=title,
            body=body,
            priority=priority,
            all_blocks=blocks is None,
            blocks=blocks or [],
        ),
    )


@pytest.fixture
def world(town: Town) -> World:
    extra1 = HouseholdFactory.create(block=town.block1, label="鈴木")
    all_blocks = services.circular_publish(circular=write(town.community, town.chair, "全体"))
    block2_only = services.circular_publish(
        circular=write(town.community, town.chair, "2班だけ", blocks=[town.block2])
    )
    draft = write(town.community, town.chair, "下書き")
    town.community.allow_block_leader_posts = True
    town.community.save()
    leader_post = services.circular_publish(
        circular=write(town.community, town.leader1, "1班より", blocks=[town.block1])
    )
    leader_post = services.circular_update(
        circular=leader_post, data=CircularData(title="1班より（全体へ）")
    )
    return World(town, all_blocks, block2_only, draft, leader_post, extra1)


def access_of(town: Town, role: str) -> Access:
    """The person's access: to the town, or for strangers to their own association."""
    user: User = getattr(town, role)
    community = town.other_community if role.startswith("other_") else town.community
    return community_access_for(community=community, user_id=user.pk)


def visible(getter: object, access: Access, circular: Circular) -> bool:
    try:
        getter(access=access, circular_id=circular.pk)  # type: ignore[operator]
    except Http404:
        return False
    return True


STAFF_VISIBLE = {
    # role: (all blocks, block2 only, draft, leader's post)
    "chair": (True, True, True, True),
    "officer": (True, True, True, True),
    "leader1": (True, False, False, True),
    "helper2": (True, True, False, True),
    "resident1": (False, False, False, False),
    "resident2": (False, False, False, False),
    "other_chair": (False, False, False, False),
    "other_resident": (False, False, False, False),
}

MEMBER_VISIBLE = {
    "chair": (False, False, False, False),
    "officer": (False, False, False, False),
    "leader1": (False, False, False, False),
    "helper2": (False, False, False, False),
    "resident1": (True, False, False, True),
    "resident2": (True, True, False, True),
    "other_chair": (False, False, False, False),
    "other_resident": (False, False, False, False),
}


@pytest.mark.parametrize("role", ROLES)
def test_staff_and_member_visibility_matrix(world: World, role: str) -> None:
    access = access_of(world.town, role)
    circulars = (world.all_blocks, world.block2_only, world.draft, world.leader_post)
    staff = tuple(visible(selectors.circular_get_for_staff, access, c) for c in circulars)
    member = tuple(visible(selectors.circular_get_for_member, access, c) for c in circulars)
    assert staff == STAFF_VISIBLE[role]
    assert member == MEMBER_VISIBLE[role]
    for circular in circulars:
        assert selectors.can_staff_view(access=access, circular_id=circular.pk) == visible(
            selectors.circular_get_for_staff, access, circular
        )


@pytest.mark.parametrize("role", ["other_chair", "other_resident"])
def test_strangers_have_no_access_to_the_town(world: World, role: str) -> None:
    with pytest.raises(Http404):
        community_access_get(slug=world.town.community.slug, user=getattr(world.town, role))


def test_member_gets_their_own_households_receipt(world: World) -> None:
    access = access_of(world.town, "resident1")
    circular, receipt = selectors.circular_get_for_member(
        access=access, circular_id=world.all_blocks.pk
    )
    assert circular == world.all_blocks
    assert receipt.household == world.town.household1


def test_block_leader_author_sees_their_own_draft(world: World) -> None:
    town = world.town
    leader_draft = write(town.community, town.leader1, "1班の下書き", blocks=[town.block1])
    leader = access_of(town, "leader1")
    helper = access_of(town, "helper2")
    assert selectors.circular_get_for_staff(access=leader, circular_id=leader_draft.pk)
    with pytest.raises(Http404):
        selectors.circular_get_for_staff(access=helper, circular_id=leader_draft.pk)


def test_staff_list_follows_visibility(world: World) -> None:
    town = world.town
    titles = {
        role: {c.title for c in selectors.circulars_for_staff(access=access_of(town, role))}
        for role in ("chair", "leader1", "helper2", "other_chair")
    }
    assert titles["chair"] == {"全体", "2班だけ", "下書き", "1班より（全体へ）"}
    assert titles["leader1"] == {"全体", "1班より（全体へ）"}
    assert titles["helper2"] == {"全体", "2班だけ", "1班より（全体へ）"}
    assert titles["other_chair"] == set()


# --- The ledger -------------------------------------------------------------------------


def ledger_view(access: Access, circular: Circular, **filters: object) -> dict[str, object]:
    ledger = selectors.ledger_snapshot(access=access, circular=circular, **filters)  # type: ignore[arg-type]
    return {
        "blocks": [item.block.pk for item in ledger.blocks],
        "rows": {item.block.pk: [row.household_id for row in item.rows] for item in ledger.blocks},
        "block_counts": {
            item.block.pk: (item.counts.total, item.counts.confirmed) for item in ledger.blocks
        },
        "counts": (ledger.counts.total, ledger.counts.confirmed, ledger.counts.opened),
        "all_visible": ledger.all_blocks_visible,
    }


def test_ledger_rows_follow_the_viewers_blocks(world: World) -> None:
    town = world.town
    circular = world.all_blocks
    services.receipt_confirm(circular=circular, household=town.household1, method="app")
    services.receipt_open(circular=circular, household=town.household2)
    b1, b2 = town.block1.pk, town.block2.pk
    everything = {
        "blocks": [b1, b2],
        "rows": {b1: [town.household1.pk, world.extra1.pk], b2: [town.household2.pk]},
        "block_counts": {b1: (2, 1), b2: (1, 0)},
        "counts": (3, 1, 1),
        "all_visible": True,
    }
    assert ledger_view(access_of(town, "chair"), circular) == everything
    assert ledger_view(access_of(town, "officer"), circular) == everything
    assert ledger_view(access_of(town, "leader1"), circular) == {
        "blocks": [b1],
        "rows": {b1: [town.household1.pk, world.extra1.pk]},
        "block_counts": {b1: (2, 1)},
        "counts": (2, 1, 0),
        "all_visible": False,
    }
    assert ledger_view(access_of(town, "helper2"), circular) == {
        "blocks": [b2],
        "rows": {b2: [town.household2.pk]},
        "block_counts": {b2: (1, 0)},
        "counts": (1, 0, 1),
        "all_visible": False,
    }


def test_author_block_leader_sees_every_block_of_their_circular(world: World) -> None:
    town = world.town
    view = ledger_view(access_of(town, "leader1"), world.leader_post)
    assert view["all_visible"] is True
    assert view["blocks"] == [town.block1.pk, town.block2.pk]
    assert view["counts"] == (3, 0, 0)


def test_helper_sees_block2_only_circular(world: World) -> None:
    town = world.town
    view = ledger_view(access_of(town, "helper2"), world.block2_only)
    assert view["rows"] == {town.block2.pk: [town.household2.pk]}


def test_ledger_row_is_limited_to_visible_blocks(world: World) -> None:
    town = world.town
    leader = access_of(town, "leader1")
    row = selectors.ledger_row(
        access=leader, circular=world.all_blocks, household_id=town.household1.pk
    )
    assert row.household == town.household1
    with pytest.raises(Http404):
        selectors.ledger_row(
            access=leader, circular=world.all_blocks, household_id=town.household2.pk
        )


def test_ledger_filters(world: World) -> None:
    town = world.town
    circular = world.all_blocks
    chair = access_of(town, "chair")
    services.receipt_confirm(circular=circular, household=town.household1, method=ReceiptMethod.APP)
    services.receipt_confirm(
        circular=circular, household=town.household2, method=ReceiptMethod.PROXY_PHONE
    )
    services.receipt_open(circular=circular, household=world.extra1)
    b1, b2 = town.block1.pk, town.block2.pk

    def rows(**filters: object) -> dict[int, list[int | None]]:
        return ledger_view(chair, circular, **filters)["rows"]  # type: ignore[return-value]

    assert rows(status="not_yet") == {b1: [world.extra1.pk], b2: []}
    assert rows(status="opened") == {b1: [world.extra1.pk], b2: []}
    assert rows(status="confirmed") == {b1: [town.household1.pk], b2: [town.household2.pk]}
    assert rows(block_id=b2) == {b1: [], b2: [town.household2.pk]}
    assert rows(method=ReceiptMethod.PROXY_PHONE) == {b1: [], b2: [town.household2.pk]}
    # Filters narrow the rows, never the totals.
    assert ledger_view(chair, circular, status="not_yet")["counts"] == (3, 2, 1)


def test_paper_households_still_out_are_counted(world: World) -> None:
    town = world.town
    # A household nobody has an account in is a paper household.
    HouseholdFactory.create(block=town.block2, label="紙の家")
    circular = services.circular_publish(circular=write(town.community, town.chair, "紙も"))
    counts = selectors.ledger_counts(circular_id=circular.pk)
    assert counts.total == 4
    assert counts.paper_out == 2  # extra1 and the new one have no members
    services.receipt_confirm(circular=circular, household=world.extra1, method=ReceiptMethod.PAPER)
    assert selectors.ledger_counts(circular_id=circular.pk).paper_out == 1


# --- The inbox --------------------------------------------------------------------------


def test_inbox_order_urgent_unconfirmed_then_unconfirmed_then_confirmed(town: Town) -> None:
    base = timezone.now() - timedelta(days=1)

    def post(title: str, minutes: int, priority: str = Priority.NORMAL) -> Circular:
        circular = write(town.community, town.chair, title, priority=priority)
        return services.circular_publish(circular=circular, now=base + timedelta(minutes=minutes))

    old_confirmed = post("古い確認済み", 1)
    urgent_old = post("緊急・古い", 2, Priority.URGENT)
    normal_old = post("通常・古い", 3)
    urgent_confirmed = post("緊急・確認済み", 4, Priority.URGENT)
    important = post("重要", 5, Priority.IMPORTANT)
    urgent_new = post("緊急・新しい", 6, Priority.URGENT)
    normal_new = post("通常・新しい", 7)
    new_confirmed = post("新しい確認済み", 8)
    for circular in (old_confirmed, urgent_confirmed, new_confirmed):
        services.receipt_confirm(circular=circular, household=town.household1, method="app")
    # Another household's confirmations change nothing for household1.
    services.receipt_confirm(circular=urgent_new, household=town.household2, method="app")

    access = access_of(town, "resident1")
    titles = [item.circular.title for item in selectors.inbox(access=access)]
    assert titles == [
        urgent_new.title,
        urgent_old.title,
        normal_new.title,
        important.title,
        normal_old.title,
        new_confirmed.title,
        urgent_confirmed.title,
        old_confirmed.title,
    ]
    items = selectors.inbox(access=access, limit=3)
    assert [item.circular.title for item in items] == titles[:3]
    assert not any(item.confirmed for item in items)


def test_inbox_shows_only_the_households_published_circulars(world: World) -> None:
    town = world.town
    resident1 = {c.circular.title for c in selectors.inbox(access=access_of(town, "resident1"))}
    resident2 = {c.circular.title for c in selectors.inbox(access=access_of(town, "resident2"))}
    assert resident1 == {"全体", "1班より（全体へ）"}
    assert resident2 == {"全体", "2班だけ", "1班より（全体へ）"}
    assert selectors.inbox(access=access_of(town, "other_resident")) == []
    assert selectors.inbox(access=access_of(town, "chair")) == []


def test_inbox_japanese_substring_search(town: Town) -> None:
    garbage = services.circular_publish(
        circular=write(town.community, town.chair, "ごみ収集日の変更", body="火曜と金曜です。")
    )
    in_body = services.circular_publish(
        circular=write(
            town.community, town.chair, "地域清掃のお知らせ", body="軍手とごみ袋をお持ちください。"
        )
    )
    services.circular_publish(
        circular=write(town.community, town.chair, "夏祭りのお知らせ", body="集会所にて。")
    )
    # The other association's circular about ごみ never shows.
    other_block = Block.objects.get(community=town.other_community)
    services.circular_publish(
        circular=write(town.other_community, town.other_chair, "ごみ当番", blocks=[other_block])
    )
    access = access_of(town, "resident1")

    def search(query: str) -> set[str]:
        return {item.circular.title for item in selectors.inbox(access=access, query=query)}

    assert search("ごみ") == {garbage.title, in_body.title}
    assert search("収集") == {garbage.title}
    assert search("ごみ袋") == {in_body.title}
    assert search("ごみ 清掃") == {in_body.title}  # every word must match
    assert search("回覧") == set()
    assert len(search("")) == 3

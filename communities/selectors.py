"""Reads of community data. Visibility is enforced here and nowhere else.

Every view and consumer reaches tenant data through ``community_page_get`` or
``community_access_get`` (which answer 404 to anyone without a place in the community)
and the selectors below, which take the resulting ``Access`` and never return rows
outside it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from allauth.mfa.models import Authenticator
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connections
from django.db.models import (
    BooleanField,
    Count,
    ExpressionWrapper,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest
from django.utils import timezone

from communities.models import (
    BLOCK_ROLES,
    Block,
    Community,
    DeliveryMode,
    Household,
    HouseholdInvite,
    Member,
    Preference,
    RoleAssignment,
    RoleKind,
)
from communities.tokens import code_hash, token_hash

type AnyUser = AbstractBaseUser | AnonymousUser


@dataclass(frozen=True)
class Access:
    """What one user may see and do in one community."""

    community: Community
    user_id: int
    roles: frozenset[str]
    block_ids: frozenset[int] = field(default_factory=frozenset)
    led_block_ids: frozenset[int] = field(default_factory=frozenset)
    household_ids: frozenset[int] = field(default_factory=frozenset)

    @property
    def is_officer(self) -> bool:
        """Chair or officer: sees and manages every block."""
        return bool(self.roles & {RoleKind.CHAIR, RoleKind.OFFICER})

    @property
    def is_chair(self) -> bool:
        return RoleKind.CHAIR in self.roles

    @property
    def is_block_staff(self) -> bool:
        """A block leader or helper for at least one block."""
        return bool(self.block_ids)

    @property
    def is_member(self) -> bool:
        return bool(self.household_ids)

    @property
    def has_role(self) -> bool:
        return bool(self.roles)

    def can_see_block(self, block_id: int) -> bool:
        return self.is_officer or block_id in self.block_ids

    def can_issue_invites(self, block_id: int) -> bool:
        return self.is_officer or block_id in self.led_block_ids


def community_access_get(*, slug: str, user: AnyUser) -> Access:
    """The user's access to the community, or 404 when they have no place in it."""
    return community_page_get(slug=slug, user=user).access


@dataclass(frozen=True)
class CommunityPage:
    """What every community page needs about its reader, read in one query."""

    access: Access
    preferences: DisplayPreferences
    # allauth's ``is_mfa_enabled`` (the default adapter: any authenticator at all), read
    # with the rest: roster pages ask it on every request.
    mfa_enabled: bool = False


@functools.cache
def _page_sql(vendor: str) -> str:
    """The query behind ``community_page_get``, for one database vendor.

    Written out because it runs on every page of a community: Django built the same query
    (three correlated subqueries and a join) in more time than three plain queries took.
    """
    concat = "string_agg" if vendor == "postgresql" else "group_concat"
    # Only table names and the aggregate's name are formatted in; values go as parameters.
    return f"""
        SELECT c.*,
            (SELECT {concat}(r.role || ':' || COALESCE(CAST(r.block_id AS TEXT), ''), ',')
             FROM {RoleAssignment._meta.db_table} r
             WHERE r.community_id = c.id AND r.user_id = %s AND r.ended_at IS NULL
            ) AS role_list,
            (SELECT {concat}(CAST(m.household_id AS TEXT), ',')
             FROM {Member._meta.db_table} m
             JOIN {Household._meta.db_table} h ON h.id = m.household_id
             WHERE h.community_id = c.id AND m.user_id = %s
            ) AS household_list,
            EXISTS (SELECT 1 FROM {Authenticator._meta.db_table} a WHERE a.user_id = %s)
                AS mfa_enabled,
            p.large_text AS pref_large_text,
            p.high_contrast AS pref_high_contrast,
            p.furigana AS pref_furigana
        FROM {Community._meta.db_table} c
        LEFT JOIN {Preference._meta.db_table} p ON p.user_id = %s
        WHERE c.slug = %s
    """  # noqa: S608


def community_page_get(*, slug: str, user: AnyUser) -> CommunityPage:
    """The user's access to the community and their display preferences, or 404 when
    they have no place in it.

    One query: the community row with the user's current roles (``role:block,…``), their
    households in it (``id,…``), whether they have a second factor, and their preference
    row beside it.
    """
    if not user.is_authenticated:
        raise Http404
    sql = _page_sql(connections[Community.objects.db].vendor)
    # A Community with the extra columns as attributes.
    params = [user.pk, user.pk, user.pk, user.pk, slug]
    row: Any = next(iter(Community.objects.raw(sql, params)), None)
    if row is None:
        raise Http404
    community: Community = row
    held: list[tuple[str, int | None]] = []
    for item in filter(None, (row.role_list or "").split(",")):
        role, _sep, block = item.partition(":")
        held.append((role, int(block) if block else None))
    listed = row.household_list or ""
    access = _access_build(
        community=community,
        user_id=user.pk,
        roles=held,
        household_ids=[int(pk) for pk in filter(None, listed.split(","))],
    )
    if not access.roles and not access.household_ids:
        raise Http404
    preferences = DisplayPreferences(
        large_text=bool(row.pref_large_text),
        high_contrast=bool(row.pref_high_contrast),
        furigana=bool(row.pref_furigana),
    )
    return CommunityPage(access=access, preferences=preferences, mfa_enabled=bool(row.mfa_enabled))


def community_access_for(*, community: Community, user_id: int) -> Access:
    roles = list(
        RoleAssignment.objects.filter(
            community=community, user_id=user_id, ended_at__isnull=True
        ).values_list("role", "block_id")
    )
    household_ids = Member.objects.filter(
        household__community=community, user_id=user_id
    ).values_list("household_id", flat=True)
    return _access_build(
        community=community, user_id=user_id, roles=roles, household_ids=household_ids
    )


def _access_build(
    *,
    community: Community,
    user_id: int,
    roles: Sequence[tuple[str, int | None]],
    household_ids: Iterable[int],
) -> Access:
    return Access(
        community=community,
        user_id=user_id,
        roles=frozenset(role for role, _block in roles),
        block_ids=frozenset(block for role, block in roles if role in BLOCK_ROLES and block),
        led_block_ids=frozenset(
            block for role, block in roles if role == RoleKind.BLOCK_LEADER and block
        ),
        household_ids=frozenset(household_ids),
    )


@dataclass(frozen=True)
class CommunityPlace:
    community: Community
    roles: frozenset[str]
    is_member: bool


def communities_for_user(*, user: AnyUser) -> list[CommunityPlace]:
    """Every community where the user holds a role or belongs to a household."""
    if not user.is_authenticated:
        return []
    roles: dict[int, set[str]] = {}
    for community_id, role in RoleAssignment.objects.filter(
        user_id=user.pk, ended_at__isnull=True
    ).values_list("community_id", "role"):
        roles.setdefault(community_id, set()).add(role)
    member_of = set(
        Member.objects.filter(user_id=user.pk).values_list("household__community_id", flat=True)
    )
    ids = set(roles) | member_of
    return [
        CommunityPlace(
            community=community,
            roles=frozenset(roles.get(community.pk, set())),
            is_member=community.pk in member_of,
        )
        for community in Community.objects.filter(pk__in=ids).order_by("name")
    ]


def blocks_visible(*, access: Access) -> QuerySet[Block]:
    blocks = Block.objects.filter(community=access.community)
    if not access.is_officer:
        blocks = blocks.filter(pk__in=access.block_ids)
    return blocks.annotate(household_count=Count("households")).order_by("position", "id")


def block_get_visible(*, access: Access, block_id: int) -> Block:
    block = Block.objects.filter(community=access.community, pk=block_id).first()
    if block is None or not access.can_see_block(block.pk):
        raise Http404
    return block


def _with_delivery(households: QuerySet[Household]) -> QuerySet[Household]:
    """Annotate ``app_members`` and ``on_paper``: the paper rule in one place.

    A household receives paper when its mode says so, or when no member has a working
    login, whatever its mode says.
    """
    # One correlated count per household, looked up through the (household, user) index.
    # Not a join of the members nor an EXISTS: PostgreSQL answered both by reading every
    # member and user of the city (92 ms for a 2,000-household list among 100,000).
    app_members = (
        Member.objects.filter(household=OuterRef("pk"), user__is_active=True)
        .order_by()
        .values("household")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return households.annotate(
        app_members=Coalesce(Subquery(app_members), 0),
        has_working_login=ExpressionWrapper(Q(app_members__gt=0), output_field=BooleanField()),
    )


def members_with_working_email() -> QuerySet[Member]:
    """Members whose address for circulars is set and has not bounced."""
    return Member.objects.filter(email__gt="", email_bounced_at__isnull=True)


def household_on_paper(*, household: Household) -> bool:
    """Whether this household gets paper (same rule as the annotated querysets)."""
    if household.delivery_mode in (DeliveryMode.PAPER, DeliveryMode.BOTH):
        return True
    if household.dead_contact_since is not None:
        return True  # no push subscription and no working email left
    has_login = getattr(household, "has_working_login", None)
    if has_login is None:
        has_login = household.members.filter(user__is_active=True).exists()
    return not has_login


def households_visible(*, access: Access, block_id: int | None = None) -> QuerySet[Household]:
    """Households the user may see as staff: officers all, block staff their blocks."""
    households = Household.objects.filter(community=access.community)
    if not access.is_officer:
        households = households.filter(block_id__in=access.block_ids)
    if block_id is not None:
        households = households.filter(block_id=block_id)
    return _with_delivery(households.select_related("block")).order_by(
        "block__position", "block_id", "circulation_order", "id"
    )


# Above this many households a page that lists every household of the association (the
# delivery ledger, the household list, the answers) shows each block's totals, and the rows
# of one block at a time: 2,000 rows were pages of 0.7 to 5 MB that took a quarter of a
# second to seconds to render, and longer to scroll on an old phone.
PAGE_ROWS_MAX = 300


def block_chosen(block_id: int | None, shown: Iterable[int]) -> int | None:
    """A page's ``?block=`` choice, among the blocks it shows: a block of another
    association, outside the user's blocks, or not on this page at all is not found,
    rather than an empty page that looks like a block with nobody in it."""
    if block_id is not None and block_id not in shown:
        raise Http404
    return block_id


def rows_folded(*, total: int, block_id: int | None) -> bool:
    """Whether a whole-association page shows per-block totals instead of every row.

    ``PAGE_ROWS_MAX`` is read here, at call time (tests lower it)."""
    return block_id is None and total > PAGE_ROWS_MAX


@dataclass
class BlockHouseholds:
    """One block's line on the household list: how many, on paper, with a phone. Every
    household without a phone gets paper, so paper only, phone only and both add up to
    the block's households."""

    block: Block
    households: int
    on_paper: int = 0
    with_app: int = 0
    both: int = 0

    @property
    def paper_only(self) -> int:
        return self.on_paper - self.both

    @property
    def phone_only(self) -> int:
        return self.with_app - self.both


@dataclass
class HouseholdList:
    """The household list: every visible block, and the rows of the chosen block or of all
    of them (none when folded: a large association shows the blocks' totals instead)."""

    blocks: list[BlockHouseholds]
    households: QuerySet[Household] | list[Household]
    total: int
    filter_block: int | None
    rows_folded: bool


def household_list_get(*, access: Access, block_id: int | None = None) -> HouseholdList:
    """The household list as the user may see it. Small associations: the rows, and no
    query more than the rows. Large ones without a chosen block: each block's counts, in
    one query, instead of the rows."""
    summaries = {
        block.pk: BlockHouseholds(block, block.household_count)  # type: ignore[attr-defined]
        for block in blocks_visible(access=access)
    }
    block_id = block_chosen(block_id, summaries)
    total = sum(summary.households for summary in summaries.values())
    folded = rows_folded(total=total, block_id=block_id)
    if folded:
        counted = (
            households_visible(access=access)
            .order_by()
            .values("block_id")
            .annotate(
                on_paper=Count("pk", filter=_on_paper_q()),
                with_app=Count("pk", filter=Q(app_members__gt=0)),
                both=Count("pk", filter=_on_paper_q() & Q(app_members__gt=0)),
            )
        )
        for row in counted:
            summary = summaries.get(row["block_id"])
            if summary is not None:  # None: a block added since it was read above
                summary.on_paper, summary.with_app = row["on_paper"], row["with_app"]
                summary.both = row["both"]
    return HouseholdList(
        blocks=list(summaries.values()),
        households=[] if folded else households_visible(access=access, block_id=block_id),
        total=total,
        filter_block=block_id,
        rows_folded=folded,
    )


def _on_paper_q() -> Q:
    """``household_on_paper`` over households annotated by ``_with_delivery``."""
    return (
        Q(delivery_mode__in=[DeliveryMode.PAPER, DeliveryMode.BOTH])
        | Q(dead_contact_since__isnull=False)
        | Q(app_members=0)
    )


def household_get_visible(*, access: Access, household_id: int) -> Household:
    household = households_visible(access=access).filter(pk=household_id).first()
    if household is None:
        raise Http404
    return household


def household_get_own(*, access: Access, household_id: int | None = None) -> Household:
    """A household the user belongs to (the first, when they belong to several)."""
    households = _with_delivery(
        Household.objects.filter(community=access.community, pk__in=access.household_ids)
    ).select_related("block", "community")
    if household_id is not None:
        households = households.filter(pk=household_id)
    household = households.order_by("pk").first()
    if household is None:
        raise Http404
    return household


def roles_current(*, access: Access) -> QuerySet[RoleAssignment]:
    return RoleAssignment.objects.filter(
        community=access.community, ended_at__isnull=True
    ).select_related("user", "block")


def roles_history(*, access: Access) -> QuerySet[RoleAssignment]:
    return (
        RoleAssignment.objects.filter(community=access.community, ended_at__isnull=False)
        .select_related("user", "block")
        .order_by("-fiscal_year", "role", "block__position")
    )


def block_leaders_for(*, household: Household) -> list[str]:
    """Display names of the current block leaders for a household's block."""
    return [
        user_display_name(user=role.user)
        for role in RoleAssignment.objects.filter(
            block_id=household.block_id, role=RoleKind.BLOCK_LEADER, ended_at__isnull=True
        ).select_related("user")
    ]


def user_display_name(*, user: AbstractBaseUser) -> str:
    full = getattr(user, "get_full_name", lambda: "")()
    if full:
        return str(full)
    member = Member.objects.filter(user_id=user.pk).order_by("pk").first()
    if member:
        return member.display_name
    return str(getattr(user, "email", "") or getattr(user, "username", ""))


class InviteStatus:
    OK = "ok"
    UNKNOWN = "unknown"
    USED = "used"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class InviteLookup:
    status: str
    invite: HouseholdInvite | None


def household_invite_lookup(
    *, token: str | None = None, code: str | None = None, now: datetime | None = None
) -> InviteLookup:
    """Find an invite by its raw token or typable code, and say whether it still works."""
    invites = HouseholdInvite.objects.select_related("household__community", "household__block")
    if token:
        invite = invites.filter(token_hash=token_hash(token)).first()
    elif code:
        invite = invites.filter(code_hash=code_hash(code)).first()
    else:
        invite = None
    if invite is None:
        return InviteLookup(InviteStatus.UNKNOWN, None)
    now = now or timezone.now()
    if invite.used_at is not None:
        return InviteLookup(InviteStatus.USED, invite)
    if invite.revoked_at is not None:
        return InviteLookup(InviteStatus.REVOKED, invite)
    if invite.expires_at <= now:
        return InviteLookup(InviteStatus.EXPIRED, invite)
    return InviteLookup(InviteStatus.OK, invite)


PREF_COOKIE = "kairan_prefs"


@dataclass(frozen=True)
class DisplayPreferences:
    large_text: bool = False
    high_contrast: bool = False
    furigana: bool = False


def display_preferences(*, request: HttpRequest) -> DisplayPreferences:
    """Larger text, high contrast, furigana: per person, or per browser when logged out.

    Read once per request (the base template and a page may both ask).
    """
    cached = getattr(request, "_kairan_display_preferences", None)
    if cached is not None:
        return cached
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        preference = Preference.objects.filter(user=user).first()
        prefs = (
            DisplayPreferences(
                large_text=preference.large_text,
                high_contrast=preference.high_contrast,
                furigana=preference.furigana,
            )
            if preference
            else DisplayPreferences()
        )
    else:
        saved = set(request.COOKIES.get(PREF_COOKIE, "").split("."))
        prefs = DisplayPreferences(
            large_text="large_text" in saved,
            high_contrast="high_contrast" in saved,
            furigana="furigana" in saved,
        )
    display_preferences_known(request=request, preferences=prefs)
    return prefs


def display_preferences_known(*, request: HttpRequest, preferences: DisplayPreferences) -> None:
    """Hand over preferences already read (``community_page_get`` reads them with the
    access), so the base template does not read them again."""
    request._kairan_display_preferences = preferences  # type: ignore[attr-defined]

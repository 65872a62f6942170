"""Writes to the community model. Keyword-only, validated, atomic, returning the object."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.db.models.deletion import ProtectedError
from django.utils import timezone
from django.utils.translation import gettext as _

from communities.models import (
    BLOCK_ROLES,
    Block,
    Community,
    DeliveryMode,
    Household,
    HouseholdInvite,
    InviteKind,
    LoginLink,
    Member,
    MemberKind,
    Preference,
    RemovedHousehold,
    RoleAssignment,
    RoleKind,
)
from communities.selectors import InviteStatus, household_invite_lookup
from communities.tokens import code_hash, code_new, token_hash, token_new
from notifications.sessions import sockets_close_for_users

INVITE_CARD_DAYS = 30
INVITE_DEVICE_MINUTES = 15
LOGIN_LINK_MINUTES = 30
CONSENT_VERSION = "2026-11"


def fiscal_year_current(*, today: date | None = None) -> int:
    """The Japanese fiscal year (年度), which starts on 1 April."""
    today = today or timezone.localdate()
    return today.year if today.month >= 4 else today.year - 1


# --- Communities and blocks -------------------------------------------------------------


@transaction.atomic
def community_create(*, name: str, slug: str, chair: User, contact: str = "") -> Community:
    name = name.strip()
    if not name:
        raise ValidationError({"name": _("Enter the association's name.")})
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{1,49}", slug):
        raise ValidationError({"slug": _("Use 2 to 50 lower-case letters, digits and hyphens.")})
    if Community.objects.filter(slug=slug).exists():
        raise ValidationError({"slug": _("This short name is already taken.")})
    community = Community.objects.create(name=name, slug=slug, contact=contact)
    role_assign(community=community, user=chair, role=RoleKind.CHAIR)
    return community


@transaction.atomic
def community_update(
    *,
    community: Community,
    name: str,
    contact: str,
    paper_distribution: str,
    allow_block_leader_posts: bool,
    roster_purpose: str,
    **notification_settings: object,
) -> Community:
    from communities.models import PaperDistribution

    if not name.strip():
        raise ValidationError({"name": _("Enter the association's name.")})
    if paper_distribution not in PaperDistribution.values:
        raise ValidationError({"paper_distribution": _("Choose how paper copies go round.")})
    community.name = name.strip()
    community.contact = contact.strip()
    community.paper_distribution = paper_distribution
    community.allow_block_leader_posts = allow_block_leader_posts
    community.roster_purpose = roster_purpose.strip()
    for name in (
        "quiet_start",
        "quiet_end",
        "reminder_days",
        "ladder_important",
        "ladder_urgent",
        "digest_hour",
    ):
        if name in notification_settings:
            value = notification_settings[name]
            if isinstance(value, str):
                value = value.replace("、", ",").replace(" ", "")
            setattr(community, name, value)
    community.save()
    return community


@transaction.atomic
def member_contact_update(*, member: Member, email: str, notify_mode: str) -> Member:
    """A member's email and the household's notification rhythm. A new address gives the
    household a working contact again, so it stops being paper for lack of one."""
    if notify_mode not in {"instant", "digest"}:
        raise ValidationError({"notify_mode": _("Choose at once or a daily summary.")})
    email = email.strip().lower()
    if email != member.email:
        member.email = email
        member.email_bounced_at = None
        member.save(update_fields=["email", "email_bounced_at"])
    Household.objects.filter(pk=member.household_id).update(notify_mode=notify_mode)
    if email:
        household_contact_restored(household_id=member.household_id)
    return member


def household_contact_restored(*, household_id: int) -> None:
    """A phone subscribed or an address was added: the household is reachable again."""
    Household.objects.filter(pk=household_id, dead_contact_since__isnull=False).update(
        dead_contact_since=None
    )


def _block_name_check(*, community: Community, name: str, exclude_id: int | None = None) -> str:
    name = name.strip()
    if not name:
        raise ValidationError({"name": _("Enter the block's name.")})
    clash = Block.objects.filter(community=community, name=name)
    if exclude_id:
        clash = clash.exclude(pk=exclude_id)
    if clash.exists():
        raise ValidationError({"name": _("A block with this name already exists.")})
    return name


@transaction.atomic
def block_create(*, community: Community, name: str) -> Block:
    name = _block_name_check(community=community, name=name)
    last = Block.objects.filter(community=community).aggregate(m=Max("position"))["m"]
    return Block.objects.create(community=community, name=name, position=(last or 0) + 1)


@transaction.atomic
def block_rename(*, block: Block, name: str) -> Block:
    block.name = _block_name_check(community=block.community, name=name, exclude_id=block.pk)
    block.save(update_fields=["name"])
    return block


@transaction.atomic
def block_delete(*, block: Block) -> None:
    if block.households.exists():
        raise ValidationError(
            _("Move or remove this block's households before removing the block.")
        )
    try:
        with transaction.atomic():
            block.delete()
    except ProtectedError as error:
        raise ValidationError(
            _("This block has circulars on record, so it is kept for their ledgers.")
        ) from error


@transaction.atomic
def block_move(*, block: Block, direction: int) -> Block:
    """Swap a block with its neighbour (direction -1 up, +1 down)."""
    blocks = list(Block.objects.select_for_update().filter(community_id=block.community_id))
    blocks.sort(key=lambda b: (b.position, b.pk))
    index = next(i for i, b in enumerate(blocks) if b.pk == block.pk)
    target = index + direction
    if 0 <= target < len(blocks):
        blocks[index], blocks[target] = blocks[target], blocks[index]
    for position, item in enumerate(blocks, start=1):
        if item.position != position:
            Block.objects.filter(pk=item.pk).update(position=position)
    block.refresh_from_db()
    return block


# --- Households -------------------------------------------------------------------------


@dataclass(frozen=True)
class HouseholdData:
    label: str
    block: Block
    address: str = ""
    phone: str = ""
    delivery_mode: str = DeliveryMode.PAPER
    helper_note: str = ""


def _household_validate(
    *, data: HouseholdData, community: Community, exclude_id: int | None
) -> None:
    errors: dict[str, str] = {}
    if not data.label.strip():
        errors["label"] = _("Enter the household's name.")
    if data.block.community_id != community.pk:
        errors["block"] = _("Choose one of this association's blocks.")
    if data.delivery_mode not in DeliveryMode.values:
        errors["delivery_mode"] = _("Choose app, paper or both.")
    clash = Household.objects.filter(block=data.block, label=data.label.strip())
    if exclude_id:
        clash = clash.exclude(pk=exclude_id)
    if "label" not in errors and clash.exists():
        errors["label"] = _("This block already has a household with this name.")
    if errors:
        raise ValidationError(errors)


def _next_order(block: Block) -> int:
    last = Household.objects.filter(block=block).aggregate(m=Max("circulation_order"))["m"]
    return (last or 0) + 1


@transaction.atomic
def household_create(*, community: Community, data: HouseholdData) -> Household:
    _household_validate(data=data, community=community, exclude_id=None)
    household = Household.objects.create(
        community=community,
        block=data.block,
        label=data.label.strip(),
        address=data.address.strip(),
        phone=data.phone.strip(),
        delivery_mode=data.delivery_mode,
        helper_note=data.helper_note.strip(),
        circulation_order=_next_order(data.block),
    )
    household_circulars_catch_up(household=household)
    return household


def household_circulars_catch_up(*, household: Household) -> None:
    """Circulars still going round reach a household that arrives or moves mid-round."""
    from circulars.services import receipts_sync_for_household

    receipts_sync_for_household(household=household)


@transaction.atomic
def household_update(*, household: Household, data: HouseholdData) -> Household:
    """Edit a household; a change of block puts it at the end of the new block's round."""
    _household_validate(data=data, community=household.community, exclude_id=household.pk)
    moved = data.block.pk != household.block_id
    if moved:
        household.circulation_order = _next_order(data.block)
    household.block = data.block
    household.label = data.label.strip()
    household.address = data.address.strip()
    household.phone = data.phone.strip()
    household.delivery_mode = data.delivery_mode
    household.helper_note = data.helper_note.strip()
    household.save()
    if moved:
        household_circulars_catch_up(household=household)
    return household


@transaction.atomic
def household_move(*, household: Household, direction: int) -> Household:
    """Move a household one place earlier (-1) or later (+1) in its block's round."""
    households = list(
        Household.objects.select_for_update()
        .filter(block_id=household.block_id)
        .order_by("circulation_order", "id")
    )
    index = next(i for i, h in enumerate(households) if h.pk == household.pk)
    target = index + direction
    if 0 <= target < len(households):
        households[index], households[target] = households[target], households[index]
    for order, item in enumerate(households, start=1):
        if item.circulation_order != order:
            Household.objects.filter(pk=item.pk).update(circulation_order=order)
    household.refresh_from_db()
    return household


@transaction.atomic
def household_remove(*, household: Household) -> RemovedHousehold:
    """Delete a household and its personal data, keeping only an anonymous count.

    Accounts that existed only to belong to this household are deleted with it.
    """
    record = RemovedHousehold.objects.create(
        community_id=household.community_id,
        block_name=household.block.name,
        delivery_mode=household.delivery_mode,
    )
    user_ids = list(household.members.values_list("user_id", flat=True))
    household.delete()
    sockets_close_for_users(user_ids=user_ids)
    orphans = User.objects.filter(pk__in=user_ids, memberships__isnull=True).exclude(
        role_assignments__isnull=False
    )
    orphans.exclude(emailaddress__isnull=False).delete()
    return record


# --- Roles ------------------------------------------------------------------------------


def user_get_or_create_by_email(*, email: str, name: str = "") -> User:
    """The account for an officer or helper, created on first mention (login by code)."""
    from allauth.account.models import EmailAddress

    email = User.objects.normalize_email(email.strip()).lower()
    if not email or "@" not in email:
        raise ValidationError({"email": _("Enter a valid email address.")})
    address = EmailAddress.objects.filter(email__iexact=email).select_related("user").first()
    if address:
        return address.user
    user = User.objects.filter(email__iexact=email).first()
    if user is None:
        user = User.objects.create_user(
            username=f"u-{token_new()[:16]}", email=email, first_name=name.strip()[:150]
        )
        user.set_unusable_password()
        user.save(update_fields=["password"])
    # Whoever the chair names has their address confirmed by the login code itself.
    EmailAddress.objects.get_or_create(
        user=user, email=email, defaults={"primary": True, "verified": False}
    )
    return user


@transaction.atomic
def role_assign(
    *,
    community: Community,
    user: User,
    role: str,
    block: Block | None = None,
    fiscal_year: int | None = None,
) -> RoleAssignment:
    """Give a role; assigning a role someone already holds changes nothing."""
    if role not in RoleKind.values:
        raise ValidationError({"role": _("Unknown role.")})
    if role in BLOCK_ROLES and block is None:
        raise ValidationError({"block": _("Choose the block for this role.")})
    if role not in BLOCK_ROLES:
        block = None
    if block is not None and block.community_id != community.pk:
        raise ValidationError({"block": _("Choose one of this association's blocks.")})
    existing = RoleAssignment.objects.filter(
        community=community, user=user, role=role, block=block, ended_at__isnull=True
    ).first()
    if existing:
        return existing
    try:
        with transaction.atomic():
            return RoleAssignment.objects.create(
                community=community,
                user=user,
                role=role,
                block=block,
                fiscal_year=fiscal_year or fiscal_year_current(),
            )
    except IntegrityError:
        return RoleAssignment.objects.get(
            community=community, user=user, role=role, block=block, ended_at__isnull=True
        )


@transaction.atomic
def role_end(*, assignment: RoleAssignment) -> RoleAssignment:
    if assignment.role == RoleKind.CHAIR:
        # Locked: two chairs ending each other at once must not leave none.
        chairs = (
            RoleAssignment.objects.select_for_update()
            .filter(
                community_id=assignment.community_id, role=RoleKind.CHAIR, ended_at__isnull=True
            )
            .order_by("pk")
        )
        if len(chairs) <= 1:
            raise ValidationError(_("An association always needs a chair."))
    if assignment.ended_at is None:
        assignment.ended_at = timezone.now()
        assignment.save(update_fields=["ended_at"])
        # Their ledger sockets must not keep receiving what the role let them see.
        sockets_close_for_users(user_ids=[assignment.user_id])
    return assignment


@dataclass(frozen=True)
class BlockAssignment:
    block: Block
    leader_emails: tuple[str, ...]
    helper_emails: tuple[str, ...]


@transaction.atomic
def year_rollover(
    *, community: Community, fiscal_year: int, assignments: list[BlockAssignment]
) -> list[RoleAssignment]:
    """Start a new year: end every block role and give the listed people theirs.

    The ended rows stay as the history of who looked after which block in which year.
    """
    for item in assignments:
        if item.block.community_id != community.pk:
            raise ValidationError(_("Choose one of this association's blocks."))
    now = timezone.now()
    ending = RoleAssignment.objects.filter(
        community=community, role__in=BLOCK_ROLES, ended_at__isnull=True
    )
    sockets_close_for_users(user_ids=set(ending.values_list("user_id", flat=True)))
    ending.update(ended_at=now)
    created = []
    for item in assignments:
        for role, emails in (
            (RoleKind.BLOCK_LEADER, item.leader_emails),
            (RoleKind.HELPER, item.helper_emails),
        ):
            for email in emails:
                user = user_get_or_create_by_email(email=email)
                created.append(
                    role_assign(
                        community=community,
                        user=user,
                        role=role,
                        block=item.block,
                        fiscal_year=fiscal_year,
                    )
                )
    return created


# --- Invites and joining ----------------------------------------------------------------


@dataclass(frozen=True)
class IssuedInvite:
    invite: HouseholdInvite
    token: str
    code: str


def _invite_create(
    *, household: Household, kind: str, created_by: User | None, lifetime: timedelta
) -> IssuedInvite:
    token, code = token_new(), code_new()
    invite = HouseholdInvite.objects.create(
        household=household,
        kind=kind,
        token_hash=token_hash(token),
        code_hash=code_hash(code),
        created_by=created_by,
        expires_at=timezone.now() + lifetime,
    )
    return IssuedInvite(invite=invite, token=token, code=code)


@transaction.atomic
def household_invite_issue(
    *, household: Household, created_by: User | None, kind: str = InviteKind.CARD
) -> IssuedInvite:
    """A new invite for a household.

    A new card revokes the household's earlier cards; an invite printed on a paper copy of
    a circular revokes only earlier paper-copy invites, so the cards a 班長 handed out keep
    working.
    """
    if kind in (InviteKind.CARD, InviteKind.PACK):
        HouseholdInvite.objects.filter(
            household=household, kind=kind, used_at__isnull=True, revoked_at__isnull=True
        ).update(revoked_at=timezone.now())
        lifetime = timedelta(days=INVITE_CARD_DAYS)
    else:
        lifetime = timedelta(minutes=INVITE_DEVICE_MINUTES)
    return _invite_create(household=household, kind=kind, created_by=created_by, lifetime=lifetime)


@transaction.atomic
def household_invites_issue_for_block(
    *, block: Block, created_by: User
) -> list[tuple[Household, IssuedInvite]]:
    return [
        (household, household_invite_issue(household=household, created_by=created_by))
        for household in block.households.order_by("circulation_order", "id")
    ]


class InviteRefused(Exception):
    """An invite that cannot be used; ``status`` says why (used, expired, revoked...)."""

    def __init__(self, status: str, invite: HouseholdInvite | None) -> None:
        super().__init__(status)
        self.status = status
        self.invite = invite


@transaction.atomic
def household_invite_redeem(
    *,
    token: str = "",
    code: str = "",
    display_name: str,
    kind: str,
    consent: bool,
    user: User | None = None,
) -> Member:
    """Join a household with a card or device invite.

    Creates a password-less account unless ``user`` (someone already logged in) is given.
    The invite is locked and spent in the same transaction, so a double submit or two
    phones racing on one card make exactly one member.
    """
    if not consent:
        raise ValidationError({"consent": _("Please agree to how the roster is used.")})
    if kind not in MemberKind.values:
        raise ValidationError({"kind": _("Choose how you are related to the household.")})
    lookup = household_invite_lookup(token=token or None, code=code or None)
    if lookup.invite is None:
        raise InviteRefused(lookup.status, None)
    invite = HouseholdInvite.objects.select_for_update().get(pk=lookup.invite.pk)
    # Re-check under the lock: another request may have spent it a moment ago.
    lookup = household_invite_lookup(token=token or None, code=code or None)
    if lookup.status != InviteStatus.OK:
        raise InviteRefused(lookup.status, invite)
    household = invite.household
    if user is not None and Member.objects.filter(household=household, user=user).exists():
        raise InviteRefused("already_member", invite)
    name = display_name.strip()[:60] or _("Family")
    if user is None:
        user = User.objects.create_user(username=f"r-{token_new()[:20]}", first_name=name[:150])
        user.set_unusable_password()
        user.save(update_fields=["password"])
    now = timezone.now()
    member = Member.objects.create(
        household=household,
        user=user,
        display_name=name,
        kind=kind,
        consented_at=now,
        consent_version=CONSENT_VERSION,
    )
    invite.used_at = now
    invite.used_by = member
    invite.save(update_fields=["used_at", "used_by"])
    if household.switched_to_app_at is None and household.members.count() == 1:
        # The household's first phone: its 班長 sees 「スマホに切替」 for a while.
        Household.objects.filter(pk=household.pk).update(switched_to_app_at=now)
    return member


@transaction.atomic
def member_remove(*, member: Member) -> None:
    user_id = member.user_id
    member.delete()
    sockets_close_for_users(user_ids=[user_id])
    User.objects.filter(
        pk=user_id,
        memberships__isnull=True,
        role_assignments__isnull=True,
        emailaddress__isnull=True,
    ).delete()


# --- Login links and preferences --------------------------------------------------------


def login_link_issue(*, user: User, minutes: int = LOGIN_LINK_MINUTES) -> str:
    """Create a one-time login link and return its raw token (never stored)."""
    token = token_new()
    LoginLink.objects.create(
        user=user,
        token_hash=token_hash(token),
        expires_at=timezone.now() + timedelta(minutes=minutes),
    )
    return token


@transaction.atomic
def login_link_redeem(*, token: str, now: datetime | None = None) -> User | None:
    now = now or timezone.now()
    spent = LoginLink.objects.filter(
        token_hash=token_hash(token), used_at__isnull=True, expires_at__gt=now
    ).update(used_at=now)
    if not spent:
        return None
    link = LoginLink.objects.select_related("user").get(token_hash=token_hash(token))
    return link.user if link.user.is_active else None


def preference_update(
    *,
    user: User,
    large_text: bool | None = None,
    high_contrast: bool | None = None,
    furigana: bool | None = None,
    last_community: Community | None = None,
) -> Preference:
    preference, _created = Preference.objects.get_or_create(user=user)
    changed = []
    for name, value in (
        ("large_text", large_text),
        ("high_contrast", high_contrast),
        ("furigana", furigana),
        ("last_community", last_community),
    ):
        if value is not None and getattr(preference, name) != value:
            setattr(preference, name, value)
            changed.append(name)
    if changed:
        preference.save(update_fields=changed)
    return preference


def households_renumber(*, block: Block) -> None:
    """Close gaps in a block's circulation order (1, 2, 3 ...)."""
    for order, pk in enumerate(
        Household.objects.filter(block=block)
        .order_by("circulation_order", "id")
        .values_list("pk", flat=True),
        start=1,
    ):
        Household.objects.filter(pk=pk).exclude(circulation_order=order).update(
            circulation_order=order
        )

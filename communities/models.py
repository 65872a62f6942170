"""The community model: Community → Block → Household → Member, plus roles and invites.

Models hold data and constraints only; every write goes through ``communities.services``
and every tenant read through ``communities.selectors``.
"""

from datetime import time

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _


class PaperDistribution(models.TextChoices):
    CIRCULATE = "circulate", _("Circulate one copy with a sign-off sheet (回覧)")
    EACH = "each", _("One copy per paper household (各戸配布)")
    BOTH = "both", _("Both")


class Community(models.Model):
    """A neighbourhood association (町内会・自治会)."""

    name = models.CharField(_("name"), max_length=100)
    slug = models.SlugField(_("short name for links"), max_length=50, unique=True)
    contact = models.CharField(_("contact"), max_length=200, blank=True)
    allow_block_leader_posts = models.BooleanField(
        _("block leaders may post circulars for their blocks"), default=False, db_default=False
    )
    paper_distribution = models.CharField(
        _("paper copies"),
        max_length=10,
        choices=PaperDistribution.choices,
        default=PaperDistribution.CIRCULATE,
        db_default=PaperDistribution.CIRCULATE,
    )
    # Notifications: nothing but 緊急 goes out in quiet hours; it waits until they end.
    quiet_start = models.TimeField(_("quiet hours start"), default=time(21, 0))
    quiet_end = models.TimeField(_("quiet hours end"), default=time(7, 0))
    # Days before the due date on which unconfirmed phones get a reminder ("2,0").
    reminder_days = models.CharField(
        _("reminders (days before the due date)"), max_length=30, default="2,0", db_default="2,0"
    )
    # Minutes after publishing for each step of the ladder: email, 班長, chair.
    ladder_important = models.CharField(max_length=30, default="30,60,120", db_default="30,60,120")
    ladder_urgent = models.CharField(max_length=30, default="5,10,20", db_default="5,10,20")
    digest_hour = models.PositiveSmallIntegerField(
        _("daily summary at (hour)"), default=18, db_default=18
    )
    roster_purpose = models.TextField(
        _("purpose of the roster"),
        blank=True,
        help_text=_("Shown to every resident who joins, before they consent."),
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("community")
        verbose_name_plural = _("communities")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Block(models.Model):
    """A block (班/組) inside a community, in the order the board travels."""

    community = models.ForeignKey(Community, on_delete=models.CASCADE, related_name="blocks")
    name = models.CharField(_("name"), max_length=50)
    position = models.PositiveIntegerField(_("order"), default=0)

    class Meta:
        verbose_name = _("block")
        verbose_name_plural = _("blocks")
        ordering = ["community", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["community", "name"], name="block_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name


class DeliveryMode(models.TextChoices):
    APP = "app", _("App")
    PAPER = "paper", _("Paper")
    BOTH = "both", _("App and paper")


class Household(models.Model):
    """A household (世帯): the unit of delivery, as with the paper board."""

    community = models.ForeignKey(Community, on_delete=models.CASCADE, related_name="households")
    block = models.ForeignKey(Block, on_delete=models.PROTECT, related_name="households")
    label = models.CharField(_("household name"), max_length=60)
    address = models.CharField(_("address"), max_length=200, blank=True)
    phone = models.CharField(_("phone"), max_length=30, blank=True)
    circulation_order = models.PositiveIntegerField(_("circulation order"), default=0)
    delivery_mode = models.CharField(
        _("delivery"), max_length=5, choices=DeliveryMode.choices, default=DeliveryMode.PAPER
    )
    helper_note = models.CharField(_("note for helpers"), max_length=300, blank=True)
    notify_mode = models.CharField(
        _("notifications"),
        max_length=7,
        choices=[("instant", _("At once")), ("digest", _("One summary a day"))],
        default="instant",
        db_default="instant",
    )
    # Set when the household's last push subscription died and it has no working email:
    # it gets paper until a phone subscribes again, and its 班長 is told.
    dead_contact_since = models.DateTimeField(null=True, blank=True)
    # When the household's first phone joined: block leaders see 「スマホに切替」 for a while.
    switched_to_app_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("household")
        verbose_name_plural = _("households")
        ordering = ["block__position", "block_id", "circulation_order", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["block", "label"], name="household_unique_label_in_block"
            ),
        ]
        indexes = [models.Index(fields=["community", "block", "circulation_order"])]

    def __str__(self) -> str:
        return self.label


class RemovedHousehold(models.Model):
    """What is kept of a removed household: an anonymous count, no personal data."""

    community = models.ForeignKey(Community, on_delete=models.CASCADE, related_name="+")
    block_name = models.CharField(max_length=50)
    delivery_mode = models.CharField(max_length=5, choices=DeliveryMode.choices)
    removed_at = models.DateTimeField(db_default=Now())


class MemberKind(models.TextChoices):
    RESIDENT = "resident", _("Lives in the household")
    SUPPORTER = "supporter", _("Family supporter living elsewhere")


class Member(models.Model):
    """A person with an account who belongs to a household."""

    household = models.ForeignKey(Household, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    display_name = models.CharField(_("name"), max_length=60)
    kind = models.CharField(max_length=10, choices=MemberKind.choices, default=MemberKind.RESIDENT)
    email = models.EmailField(_("email (optional)"), blank=True)
    email_bounced_at = models.DateTimeField(null=True, blank=True)
    consented_at = models.DateTimeField()
    consent_version = models.CharField(max_length=20)
    joined_at = models.DateTimeField(db_default=Now())

    class Meta:
        verbose_name = _("member")
        verbose_name_plural = _("members")
        ordering = ["joined_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["household", "user"], name="member_unique_user"),
        ]

    def __str__(self) -> str:
        return self.display_name


class RoleKind(models.TextChoices):
    CHAIR = "chair", _("Chair")
    OFFICER = "officer", _("Officer")
    BLOCK_LEADER = "block_leader", _("Block leader")
    HELPER = "helper", _("Helper")


BLOCK_ROLES = (RoleKind.BLOCK_LEADER, RoleKind.HELPER)
COMMUNITY_ROLES = (RoleKind.CHAIR, RoleKind.OFFICER)


class RoleAssignment(models.Model):
    """One role held by one person in one community, for one block where it applies.

    Ended assignments are kept (``ended_at`` set) so each year's block leaders and helpers
    stay on record after the year rollover.
    """

    community = models.ForeignKey(Community, on_delete=models.CASCADE, related_name="roles")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="role_assignments"
    )
    role = models.CharField(_("role"), max_length=12, choices=RoleKind.choices)
    block = models.ForeignKey(
        Block, on_delete=models.CASCADE, null=True, blank=True, related_name="roles"
    )
    fiscal_year = models.PositiveIntegerField(_("year"))
    started_at = models.DateTimeField(db_default=Now())
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["community", "role", "block__position", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["community", "user", "role", "block"],
                condition=Q(ended_at__isnull=True, block__isnull=False),
                name="role_unique_active_block",
            ),
            models.UniqueConstraint(
                fields=["community", "user", "role"],
                condition=Q(ended_at__isnull=True, block__isnull=True),
                name="role_unique_active_community",
            ),
            models.CheckConstraint(
                condition=(
                    Q(role__in=["block_leader", "helper"], block__isnull=False)
                    | Q(role__in=["chair", "officer"], block__isnull=True)
                ),
                name="role_block_matches_kind",
            ),
        ]
        indexes = [models.Index(fields=["user", "ended_at"])]


class InviteKind(models.TextChoices):
    CARD = "card", _("Printed invite card")
    DEVICE = "device", _("Add a phone or family member")
    PACK = "pack", _("Invite printed on a paper copy")


class HouseholdInvite(models.Model):
    """A single-use credential that lets a person join one household.

    Only keyed hashes are stored: the raw token exists on the printed card or phone screen.
    """

    household = models.ForeignKey(Household, on_delete=models.CASCADE, related_name="invites")
    kind = models.CharField(max_length=6, choices=InviteKind.choices)
    token_hash = models.CharField(max_length=64, unique=True)
    code_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(db_default=Now())
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    used_by = models.ForeignKey(
        Member, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["household", "kind", "used_at", "revoked_at"])]


class LoginLink(models.Model):
    """A one-time login link (demo people, and support resets for officers)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    token_hash = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)


class Preference(models.Model):
    """Display choices remembered per person: larger text, high contrast, furigana."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="kairan_preference"
    )
    large_text = models.BooleanField(default=False, db_default=False)
    high_contrast = models.BooleanField(default=False, db_default=False)
    furigana = models.BooleanField(default=False, db_default=False)
    last_community = models.ForeignKey(
        Community, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )


class RosterImport(models.Model):
    """An uploaded roster CSV waiting for the officer's confirmation.

    Nothing reaches the roster until ``applied_at`` is set, all rows in one transaction.
    """

    community = models.ForeignKey(Community, on_delete=models.CASCADE, related_name="+")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    created_at = models.DateTimeField(db_default=Now())
    file_name = models.CharField(max_length=200)
    encoding = models.CharField(max_length=20)
    rows = models.JSONField(default=list)
    error_count = models.PositiveIntegerField(default=0)
    applied_at = models.DateTimeField(null=True, blank=True)

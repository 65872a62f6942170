"""Circulars, their attachments, and the receipts that make up the delivery ledger."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _

from communities.models import Block, Community, Household, Member, PaperDistribution


class Priority(models.TextChoices):
    NORMAL = "normal", _("Normal")
    IMPORTANT = "important", _("Important")
    URGENT = "urgent", _("Urgent")


class CircularStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    SCHEDULED = "scheduled", _("Scheduled")
    PUBLISHED = "published", _("Published")


class CircularKind(models.TextChoices):
    NOTICE = "notice", _("Circular")
    SAFETY = "safety", _("Safety check")


class Circular(models.Model):
    """A circular (回覧): what the board carries from house to house.

    A safety check (安否確認) is a circular too, so it reaches every household by the same
    paths, phones and paper alike: always 緊急, answered 無事 / 支援が必要 per household.
    """

    community = models.ForeignKey(Community, on_delete=models.CASCADE, related_name="circulars")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    title = models.CharField(_("title"), max_length=120)
    body = models.TextField(_("text"), blank=True)
    priority = models.CharField(
        _("priority"), max_length=10, choices=Priority.choices, default=Priority.NORMAL
    )
    kind = models.CharField(
        max_length=10,
        choices=CircularKind.choices,
        default=CircularKind.NOTICE,
        db_default=CircularKind.NOTICE,
    )
    # A drill (訓練): every screen, print and notification says so plainly.
    drill = models.BooleanField(_("drill"), default=False, db_default=False)
    all_blocks = models.BooleanField(_("all blocks"), default=True)
    blocks = models.ManyToManyField(Block, blank=True, related_name="+")
    due_date = models.DateField(_("due date"), null=True, blank=True)
    status = models.CharField(
        max_length=10, choices=CircularStatus.choices, default=CircularStatus.DRAFT
    )
    publish_at = models.DateTimeField(_("publish at"), null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    # Blank: the community's setting (回覧, 各戸配布 or both).
    paper_distribution = models.CharField(
        _("paper copies"), max_length=10, choices=PaperDistribution.choices, blank=True
    )
    # Title and text in search form (circulars.search.search_normalise), kept by services.
    search_text = models.TextField(blank=True, default="", db_default="")
    # Readings an officer corrected before publishing: {"収集日": "しゅうしゅうび"}.
    furigana_overrides = models.JSONField(default=dict, blank=True)
    # Set when a published circular is edited: residents see 「訂正 (日時)」.
    corrected_at = models.DateTimeField(null=True, blank=True)
    revision = models.PositiveIntegerField(default=1, db_default=1)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-published_at", "-created_at", "-id"]
        indexes = [
            models.Index(fields=["community", "status", "published_at"]),
            models.Index(fields=["status", "publish_at"]),
        ]

    def __str__(self) -> str:
        return self.title


class AttachmentKind(models.TextChoices):
    IMAGE = "image", _("Image")
    PDF = "pdf", _("PDF")


class Attachment(models.Model):
    """A checked file: images re-encoded (no EXIF), PDFs kept as they came after checks."""

    circular = models.ForeignKey(Circular, on_delete=models.CASCADE, related_name="attachments")
    kind = models.CharField(max_length=5, choices=AttachmentKind.choices)
    file = models.FileField(upload_to="attachments/%Y/%m/")
    thumbnail = models.FileField(upload_to="attachments/%Y/%m/", blank=True)
    original_name = models.CharField(max_length=200)
    size = models.PositiveIntegerField()
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    pages = models.PositiveIntegerField(null=True, blank=True)
    position = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.original_name


class ReceiptMethod(models.TextChoices):
    APP = "app", _("App")
    EMAIL = "email", _("Email link")
    PAPER = "paper", _("Paper sign-off")
    PROXY_HAND = "proxy_hand", _("Handed over")
    PROXY_PHONE = "proxy_phone", _("Phone call")
    PROXY_VISIT = "proxy_visit", _("Visit")


PROXY_METHODS = (ReceiptMethod.PROXY_HAND, ReceiptMethod.PROXY_PHONE, ReceiptMethod.PROXY_VISIT)


class Receipt(models.Model):
    """One row per (circular, household): the digital 確認印.

    Created for every targeted household when the circular is published, so the ledger is
    exactly this table. Opening is not confirming: ``confirmed_at`` is set only by an
    explicit 「確認しました」 or a recorded paper/proxy sign-off.
    """

    # No index of its own: receipt_one_per_household (circular, household) starts with it.
    circular = models.ForeignKey(
        Circular, on_delete=models.CASCADE, related_name="receipts", db_index=False
    )
    # SET_NULL: a removed household's receipts stay as anonymous counts.
    household = models.ForeignKey(
        Household, on_delete=models.SET_NULL, null=True, related_name="receipts"
    )
    # Denormalised so a block's ledger is one indexed range, and kept when a household moves.
    block = models.ForeignKey(Block, on_delete=models.PROTECT, related_name="+")
    opened_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    method = models.CharField(max_length=12, choices=ReceiptMethod.choices, blank=True)
    # Indexed only where set (Meta.indexes): a publish writes thousands of receipts with
    # neither, and every index on the table is one more write per row.
    confirmed_by = models.ForeignKey(
        Member, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    confirm_key = models.UUIDField(null=True, blank=True)
    version = models.PositiveIntegerField(default=0, db_default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["circular", "household"], name="receipt_one_per_household"
            ),
            models.CheckConstraint(
                condition=Q(confirmed_at__isnull=True) | ~Q(method=""),
                name="receipt_confirmed_has_method",
            ),
        ]
        indexes = [
            models.Index(fields=["circular", "block", "confirmed_at"]),
            # For SET_NULL when a member or a user goes.
            models.Index(
                fields=["confirmed_by"],
                condition=Q(confirmed_by__isnull=False),
                name="receipt_confirmed_by_set",
            ),
            models.Index(
                fields=["recorded_by"],
                condition=Q(recorded_by__isnull=False),
                name="receipt_recorded_by_set",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.circular_id}/{self.household_id}"


class PrintRecord(models.Model):
    """Who printed which pack when, for which households, and how many pages."""

    circular = models.ForeignKey(Circular, on_delete=models.CASCADE, related_name="prints")
    block = models.ForeignKey(
        Block, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    all_blocks = models.BooleanField(default=False)
    printed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    printed_at = models.DateTimeField(db_default=Now())
    household_ids = models.JSONField(default=list)
    households = models.PositiveIntegerField(default=0)
    pages = models.PositiveIntegerField(default=0)
    furigana = models.BooleanField(default=False)
    large_print = models.BooleanField(default=False)

    class Meta:
        ordering = ["-printed_at", "-id"]
        indexes = [models.Index(fields=["circular", "block", "printed_at"])]

    def __str__(self) -> str:
        return f"{self.circular_id}/{self.block_id}"


# --- Circulars that ask (questions and the households' answers) -------------------------


class QuestionKind(models.TextChoices):
    SINGLE = "single", _("Single choice")
    MULTIPLE = "multiple", _("Multiple choice")
    TEXT = "text", _("Short text")
    ATTENDANCE = "attendance", _("Attendance")


class Question(models.Model):
    """A question a circular asks each household (出欠, アンケート). Edited on drafts only."""

    circular = models.ForeignKey(Circular, on_delete=models.CASCADE, related_name="questions")
    position = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=12, choices=QuestionKind.choices)
    prompt = models.CharField(_("question"), max_length=200)
    # The options of single and multiple choice, in order; answers store their indexes.
    choices = models.JSONField(default=list, blank=True)
    required = models.BooleanField(default=False)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.prompt


class Answer(models.Model):
    """One household's answer to one question: one row per (question, receipt), changeable.

    ``value``: a list of choice indexes (single/multiple), a string (text), or
    ``{"attending": bool, "people": int}`` (attendance).
    """

    question = models.ForeignKey(Question, on_delete=models.CASCADE, related_name="answers")
    receipt = models.ForeignKey(Receipt, on_delete=models.CASCADE, related_name="answers")
    value = models.JSONField()
    answered_at = models.DateTimeField()
    answered_by = models.ForeignKey(
        Member, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    method = models.CharField(max_length=12, choices=ReceiptMethod.choices)
    # Recorded by staff after the due date (a proxy or paper answer that came late).
    late = models.BooleanField(default=False)
    version = models.PositiveIntegerField(default=1)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["question", "receipt"], name="answer_one_per_household")
        ]

    def __str__(self) -> str:
        return f"{self.question_id}/{self.receipt_id}"


# --- 安否確認: safety reports -------------------------------------------------------------


class SafetyStatus(models.TextChoices):
    SAFE = "safe", _("Safe")
    HELP = "help", _("Needs help")
    # A visit or call that reached nobody: an attempt, not an answer.
    ABSENT = "absent", _("No answer")


class SafetyReport(models.Model):
    """One report of a household's safety, append-only.

    The household's status is its latest 無事 / 支援が必要 report by ``reported_at`` (the
    moment of the tap, so a report queued offline and sent late does not overwrite a newer
    visit); 不在 reports are attempts and never override an answer. ``key`` comes from the
    client: a resent report (the service worker's offline queue) is the same row.
    """

    circular = models.ForeignKey(Circular, on_delete=models.CASCADE, related_name="+")
    receipt = models.ForeignKey(Receipt, on_delete=models.CASCADE, related_name="safety_reports")
    status = models.CharField(max_length=10, choices=SafetyStatus.choices)
    note = models.CharField(max_length=200, blank=True, default="")
    method = models.CharField(max_length=12, choices=ReceiptMethod.choices)
    reported_at = models.DateTimeField()
    created_at = models.DateTimeField(db_default=Now())
    member = models.ForeignKey(
        Member, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    key = models.UUIDField(null=True, blank=True, unique=True)

    class Meta:
        ordering = ["-reported_at", "-id"]
        indexes = [models.Index(fields=["receipt", "reported_at"])]

    def __str__(self) -> str:
        return f"{self.receipt_id}:{self.status}"

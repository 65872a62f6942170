"""What the notification pipeline keeps: push subscriptions, one delivery row per step,
and the worker's heartbeat."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _

from circulars.models import Circular, Receipt


class PushSubscription(models.Model):
    """One browser's Web Push endpoint. Removed when the push service answers 404/410."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="push_subscriptions"
    )
    endpoint = models.URLField(max_length=1000, unique=True)
    p256dh = models.CharField(max_length=200)
    auth = models.CharField(max_length=100)
    created_at = models.DateTimeField(db_default=Now())
    last_success_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.endpoint[:60]


class Channel(models.TextChoices):
    PUSH = "push", _("Push")
    EMAIL = "email", _("Email")
    LEADER = "leader", _("To the block leader")
    CHAIR = "chair", _("To the chair")


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", _("Waiting")
    QUEUED = "queued", _("Queued")
    SENDING = "sending", _("Sending")
    SENT = "sent", _("Sent")
    FAILED = "failed", _("Failed")
    SKIPPED = "skipped", _("Not needed")


class Delivery(models.Model):
    """One notification step for one household (or, for the chair, one circular).

    The unique (circular, receipt, step, channel) row is what makes sending idempotent:
    a step is planned once, claimed once, and sent once. The ledger shows these rows as
    「通知: プッシュ 10:02, メール 10:32, 班長へ 11:02」.
    """

    circular = models.ForeignKey(Circular, on_delete=models.CASCADE, related_name="deliveries")
    receipt = models.ForeignKey(
        Receipt, on_delete=models.CASCADE, null=True, blank=True, related_name="deliveries"
    )
    step = models.CharField(max_length=40)  # publish, reminder:<date>, ladder:<n>, digest:<date>
    channel = models.CharField(max_length=6, choices=Channel.choices)
    status = models.CharField(
        max_length=7, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    due_at = models.DateTimeField()
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["circular", "receipt", "step", "channel"],
                condition=Q(receipt__isnull=False),
                name="delivery_once_per_household_step",
            ),
            models.UniqueConstraint(
                fields=["circular", "step", "channel"],
                condition=Q(receipt__isnull=True),
                name="delivery_once_per_circular_step",
            ),
        ]
        indexes = [models.Index(fields=["status", "due_at"])]

    def __str__(self) -> str:
        return f"{self.circular_id}/{self.receipt_id}/{self.step}/{self.channel}"


class WorkerHeartbeat(models.Model):
    """The scheduler and the worker write here; /healthz reads it."""

    name = models.CharField(max_length=40, unique=True)
    beat_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.name

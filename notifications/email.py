"""Email for households that gave an address: a new circular, a reminder, a daily digest,
and notices to staff.

Each address gets its own mail, so a refusal is pinned to one member (and no household sees
another address). Sending never raises: every failure is counted in the ``EmailOutcome`` and
logged, and the caller (the delivery step) decides whether to retry or escalate.

A mail carries a signed link (``/e/<token>/``) that opens the circular without logging in
and lets the household confirm it with a POST.
"""

from __future__ import annotations

import hashlib
import logging
import smtplib
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import User
from django.core import signing
from django.core.mail import EmailMultiAlternatives, mailers
from django.core.mail.backends.base import BaseEmailBackend
from django.http import Http404
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from circulars.models import Circular, CircularKind, CircularStatus, Priority, Receipt
from communities.models import Community, Member
from communities.selectors import members_with_working_email

logger = logging.getLogger(__name__)

EMAIL_LINK_SALT = "kairan.email-confirm"
EMAIL_LINK_MAX_AGE_DAYS = 60
KINDS = ("new", "reminder")


class EmailLinkInvalid(Exception):
    """The link was altered, cut short, or signed with another key."""

    expired = False


class EmailLinkExpired(EmailLinkInvalid):
    """The link is genuine but older than its lifetime."""

    expired = True


@dataclass(frozen=True)
class EmailOutcome:
    """What one send did. ``no_address``: nobody in the household has a working address."""

    sent: int
    failed: int
    no_address: bool
    errors: tuple[str, ...] = ()
    # Members whose address the mail server refused permanently (5xx) in this send.
    bounced: tuple[int, ...] = ()


# --- The signed link --------------------------------------------------------------------


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=EMAIL_LINK_SALT)


def email_link_token(*, circular_id: int, household_id: int) -> str:
    """A URL-safe token naming one (circular, household); it carries its signing time."""
    return _signer().sign(f"{int(circular_id)}-{int(household_id)}")


def email_link_read(token: str, max_age_days: int = EMAIL_LINK_MAX_AGE_DAYS) -> tuple[int, int]:
    """``(circular_id, household_id)`` from a token, or ``EmailLinkInvalid`` /
    ``EmailLinkExpired``."""
    try:
        value = _signer().unsign(token, max_age=timedelta(days=max_age_days))
    except signing.SignatureExpired as error:
        raise EmailLinkExpired(str(error)) from error
    except signing.BadSignature as error:
        raise EmailLinkInvalid(str(error)) from error
    circular_part, _sep, household_part = value.partition("-")
    if not (circular_part.isdigit() and household_part.isdigit()):
        raise EmailLinkInvalid("malformed token")
    return int(circular_part), int(household_part)


def email_link_url(*, circular_id: int, household_id: int) -> str:
    """The absolute link printed in a mail (``KAIRAN_PUBLIC_URL`` + ``/e/<token>/``)."""
    token = email_link_token(circular_id=circular_id, household_id=household_id)
    return settings.KAIRAN_PUBLIC_URL + reverse("email_link:circular", args=[token])


def email_link_receipt(*, circular_id: int, household_id: int) -> Receipt:
    """The receipt a signed link stands for: a published circular that was sent to this
    household, which still exists. Anything else is a 404."""
    receipt = (
        Receipt.objects.filter(
            circular_id=circular_id,
            household_id=household_id,
            household__isnull=False,
            circular__status=CircularStatus.PUBLISHED,
        )
        .select_related("circular", "circular__community", "household")
        .first()
    )
    if receipt is None:
        raise Http404
    return receipt


# --- Sending ----------------------------------------------------------------------------


def _message_id(*parts: object) -> str:
    """The same parts give the same Message-ID, so a retried mail can be recognised as the
    same mail; an HMAC keeps internal ids out of the header."""
    digest = salted_hmac(
        "kairan.email-message-id", ":".join(str(part) for part in parts), algorithm="sha256"
    ).hexdigest()[:40]
    domain = urlsplit(settings.KAIRAN_PUBLIC_URL).hostname or "kairan.invalid"
    return f"<{digest}@{domain}>"


def _working_members(household_id: int) -> list[Member]:
    return list(members_with_working_email().filter(household_id=household_id).order_by("pk"))


def _mail(
    *, to: str, subject: str, text: str, html: str | None, message_id: str
) -> EmailMultiAlternatives:
    mail = EmailMultiAlternatives(
        subject=" ".join(subject.split()),  # a line break in a title must not break the header
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[to],
        headers={"Message-ID": message_id, "Auto-Submitted": "auto-generated"},
    )
    if html is not None:
        mail.attach_alternative(html, "text/html")
    return mail


def _reset(backend: BaseEmailBackend) -> None:
    """Drop a connection that failed mid-conversation; the next mail opens a fresh one."""
    try:
        backend.close()
    except (smtplib.SMTPException, OSError):
        # The SMTP backend forgets the socket even when QUIT fails, so the next send
        # starts afresh.
        logger.info("email: closing a broken connection failed", exc_info=True)


def _deliver_to_members(
    members: list[Member], *, subject: str, text: str, html: str, message_id: str
) -> EmailOutcome:
    """The same mail to each member, one message per address."""
    return _deliver(
        [
            (
                member,
                _mail(
                    to=member.email, subject=subject, text=text, html=html, message_id=message_id
                ),
            )
            for member in members
        ]
    )


def _deliver(mails: list[tuple[Member | None, EmailMultiAlternatives]]) -> EmailOutcome:
    """Send each mail on one connection. A 5xx refusal of an address marks the member's
    ``email_bounced_at``; a refused connection, a timeout or a 4xx counts as failed."""
    sent = failed = 0
    errors: list[str] = []
    bounced: list[int] = []
    try:
        backend = mailers.default
        backend.open()
    except (smtplib.SMTPException, OSError) as error:
        logger.warning("email: cannot reach the mail server: %s", error)
        return EmailOutcome(
            sent=0,
            failed=len(mails),
            no_address=False,
            errors=(f"connection: {type(error).__name__}: {error}",),
        )
    try:
        for member, mail in mails:
            address = mail.to[0]
            try:
                sent += backend.send_messages([mail])
            except smtplib.SMTPRecipientsRefused as error:
                failed += 1
                code = next(iter(error.recipients.values()), (0, b""))[0]
                errors.append(f"refused {address}: {code}")
                if member is not None and 500 <= code < 600:
                    Member.objects.filter(pk=member.pk, email_bounced_at__isnull=True).update(
                        email_bounced_at=timezone.now()
                    )
                    bounced.append(member.pk)
                logger.warning("email: %s refused with %s", address, code)
            except (smtplib.SMTPException, OSError, ValueError) as error:
                failed += 1
                errors.append(f"{type(error).__name__}: {error}"[:200])
                logger.warning("email: sending to %s failed: %s", address, error)
                _reset(backend)
    finally:
        _reset(backend)
    return EmailOutcome(
        sent=sent,
        failed=failed,
        no_address=False,
        errors=tuple(errors),
        bounced=tuple(bounced),
    )


def _circular_subject(*, circular: Circular, community: Community, kind: str) -> str:
    values = {"community": community.name, "title": circular.title}
    if circular.kind == CircularKind.SAFETY:
        # The title carries 【訓練】 for a drill, so it leads the subject after the name.
        # ja: 【%(community)s】%(title)s：ご無事かお知らせください
        return _("[%(community)s] %(title)s: are you safe? Please answer") % values
    if kind == "reminder":
        # ja: 【%(community)s】まだ確認されていない回覧があります「%(title)s」
        return _("[%(community)s] Not yet confirmed: %(title)s") % values
    if circular.priority == Priority.URGENT:
        # ja: 【%(community)s】緊急の回覧「%(title)s」
        return _("[%(community)s] Urgent circular: %(title)s") % values
    if circular.priority == Priority.IMPORTANT:
        # ja: 【%(community)s】重要な回覧「%(title)s」
        return _("[%(community)s] Important circular: %(title)s") % values
    # ja: 【%(community)s】新しい回覧「%(title)s」
    return _("[%(community)s] New circular: %(title)s") % values


def email_send_circular(*, receipt: Receipt, kind: str, occasion: str = "") -> EmailOutcome:
    """Mail one circular (``kind`` "new" or "reminder") to every working address of the
    receipt's household, each with the household's signed link.

    The Message-ID is derived from (circular, household, kind, occasion), so a retry of the
    same mail carries the same one. ``occasion`` tells apart mails of one kind that are not
    retries; for a reminder it defaults to today's date (one reminder a day at most).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    household_id = receipt.household_id
    members = _working_members(household_id) if household_id is not None else []
    if household_id is None or not members:
        return EmailOutcome(sent=0, failed=0, no_address=True)
    circular = Circular.objects.select_related("community").get(pk=receipt.circular_id)
    if kind == "reminder" and not occasion:
        occasion = timezone.localdate().isoformat()
    message_id = _message_id("circular", circular.pk, household_id, kind, occasion)
    link = email_link_url(circular_id=circular.pk, household_id=household_id)
    context = {
        "circular": circular,
        "community": circular.community,
        "kind": kind,
        "link": link,
        "app_url": settings.KAIRAN_PUBLIC_URL + "/",
        "has_attachments": circular.attachments.exists(),
    }
    with translation.override("ja"):
        subject = _circular_subject(circular=circular, community=circular.community, kind=kind)
        text = render_to_string("notifications/email/circular.txt", context)
        html = render_to_string("notifications/email/circular.html", context)
    return _deliver_to_members(
        members, subject=subject, text=text, html=html, message_id=message_id
    )


@dataclass(frozen=True)
class DigestItem:
    circular: Circular
    link: str


def email_send_digest(*, household_id: int, receipts: list[Receipt]) -> EmailOutcome:
    """One mail listing several circulars for one household, with a signed link each.

    Receipts of other households are ignored, so a caller's mistake never shows one
    household another's circulars. Nothing to list sends nothing.
    """
    own = sorted(
        (r for r in receipts if r.household_id == household_id), key=lambda r: r.circular_id
    )
    if not own:
        return EmailOutcome(sent=0, failed=0, no_address=False)
    members = _working_members(household_id)
    if not members:
        return EmailOutcome(sent=0, failed=0, no_address=True)
    circulars = Circular.objects.select_related("community").in_bulk([r.circular_id for r in own])
    items = [
        DigestItem(
            circular=circulars[r.circular_id],
            link=email_link_url(circular_id=r.circular_id, household_id=household_id),
        )
        for r in own
        if r.circular_id in circulars
    ]
    if not items:
        return EmailOutcome(sent=0, failed=0, no_address=False)
    community = items[0].circular.community
    message_id = _message_id(
        "digest", household_id, ",".join(str(item.circular.pk) for item in items)
    )
    context = {
        "community": community,
        "items": items,
        "app_url": settings.KAIRAN_PUBLIC_URL + "/",
    }
    with translation.override("ja"):
        # ja: 【%(community)s】回覧のまとめ(%(count)s件)
        subject = ngettext(
            "[%(community)s] %(count)s circular to read",
            "[%(community)s] %(count)s circulars to read",
            len(items),
        ) % {"community": community.name, "count": len(items)}
        text = render_to_string("notifications/email/digest.txt", context)
        html = render_to_string("notifications/email/digest.html", context)
    return _deliver_to_members(
        members, subject=subject, text=text, html=html, message_id=message_id
    )


def email_send_to_user(*, user_id: int, subject: str, body: str) -> EmailOutcome:
    """A plain-text notice to one staff member (班長 follow-up, chair summary).

    Goes to the account's login address, else to an address the person gave as a member.
    The Message-ID is derived from (user, subject, body): a retry is the same mail.
    """
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return EmailOutcome(sent=0, failed=0, no_address=True)
    member: Member | None = None
    address = user.email
    if not address:
        member = members_with_working_email().filter(user=user).order_by("pk").first()
        address = member.email if member is not None else ""
    if not address:
        return EmailOutcome(sent=0, failed=0, no_address=True)
    fingerprint = hashlib.sha256(f"{subject}\n{body}".encode()).hexdigest()
    message_id = _message_id("staff", user.pk, fingerprint)
    with translation.override("ja"):
        text = render_to_string(
            "notifications/email/staff_notice.txt",
            {"body": body, "app_url": settings.KAIRAN_PUBLIC_URL + "/"},
        )
    return _deliver(
        [(member, _mail(to=address, subject=subject, text=text, html=None, message_id=message_id))]
    )

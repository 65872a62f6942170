"""Email through Django's real SMTP backend to a local SMTP server (aiosmtpd on loopback):
delivery, a refused address, and a server that is not there."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.test import override_settings
from django.utils import timezone

from circulars import services
from circulars.models import Circular, Receipt
from circulars.services import CircularData
from communities.models import Member
from notifications.email import email_link_read, email_send_circular
from tests.conftest import Town
from tests.factories import MemberFactory

PUBLIC_URL = "https://kairan.example.jp"


@dataclass
class Recorder:
    """An SMTP server's handler: refuses some recipients with 550, keeps what it accepts."""

    refuse: set[str] = field(default_factory=set)
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 <" + address + ">: no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def smtp_mailer(port: int) -> Iterator[None]:
    """Django's SMTP backend pointed at loopback (inside pytest MAILERS is locmem until here)."""
    mailers = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": port, "use_tls": False, "timeout": 5},
        }
    }
    with override_settings(MAILERS=mailers, KAIRAN_PUBLIC_URL=PUBLIC_URL):
        yield


@pytest.fixture
def server() -> Iterator[tuple[Recorder, int]]:
    recorder = Recorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield recorder, port
    finally:
        controller.stop()


def publish(town: Town) -> Circular:
    circular = services.circular_create(
        community=town.community,
        author=town.chair,
        data=CircularData(title="防災訓練のお知らせ", body="9月1日 午前9時 公園に集合"),
    )
    return services.circular_publish(circular=circular)


def with_email(town: Town, address: str) -> Member:
    member = Member.objects.filter(household=town.household1).get()
    member.email = address
    member.save(update_fields=["email"])
    return member


def plain_text(raw: bytes) -> str:
    parsed = BytesParser(policy=default_policy).parsebytes(raw)
    part = parsed.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def test_mail_arrives_at_a_real_smtp_server_with_the_signed_link(
    town: Town, server: tuple[Recorder, int]
) -> None:
    recorder, port = server
    with_email(town, "yamada@example.jp")
    circular = publish(town)
    receipt = Receipt.objects.get(circular=circular, household=town.household1)

    with smtp_mailer(port):
        outcome = email_send_circular(receipt=receipt, kind="new")

    assert (outcome.sent, outcome.failed, outcome.errors) == (1, 0, ())
    [(mail_from, recipients, raw)] = recorder.received
    assert recipients == ["yamada@example.jp"]
    assert mail_from == "noreply@kairan.invalid"
    body = plain_text(raw)
    assert "防災訓練のお知らせ" in body
    [token] = re.findall(re.escape(PUBLIC_URL) + r"/e/([^/\s]+)/", body)
    assert email_link_read(token) == (circular.pk, town.household1.pk)
    assert message_from_bytes(raw)["Message-ID"].endswith("@kairan.example.jp>")


def test_refused_address_is_marked_bounced_and_the_others_still_get_theirs(
    town: Town, server: tuple[Recorder, int]
) -> None:
    recorder, port = server
    good = with_email(town, "yamada@example.jp")
    bad = MemberFactory.create(household=town.household1, email="gone@example.jp")
    recorder.refuse.add("gone@example.jp")
    circular = publish(town)
    receipt = Receipt.objects.get(circular=circular, household=town.household1)

    with smtp_mailer(port):
        outcome = email_send_circular(receipt=receipt, kind="new")

    assert (outcome.sent, outcome.failed) == (1, 1)
    assert outcome.bounced == (bad.pk,)
    assert any("550" in error for error in outcome.errors)
    assert [recipients for _from, recipients, _raw in recorder.received] == [["yamada@example.jp"]]
    bad.refresh_from_db()
    good.refresh_from_db()
    assert bad.email_bounced_at is not None
    assert good.email_bounced_at is None

    # The next send skips the bounced address without asking the server again.
    with smtp_mailer(port):
        again = email_send_circular(receipt=receipt, kind="reminder")
    assert (again.sent, again.failed) == (1, 0)
    assert [r for _f, r, _raw in recorder.received] == [["yamada@example.jp"]] * 2


def test_stopped_server_counts_as_failed_without_raising(town: Town) -> None:
    with_email(town, "yamada@example.jp")
    circular = publish(town)
    receipt = Receipt.objects.get(circular=circular, household=town.household1)
    recorder = Recorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    controller.stop()  # nothing listens on the port any more

    before = timezone.now()
    with smtp_mailer(port):
        outcome = email_send_circular(receipt=receipt, kind="new")

    assert (outcome.sent, outcome.failed, outcome.no_address) == (0, 1, False)
    assert outcome.errors and "ConnectionRefusedError" in outcome.errors[0]
    assert outcome.bounced == ()
    assert (timezone.now() - before).total_seconds() < 5
    assert recorder.received == []
    member = Member.objects.get(household=town.household1)
    assert member.email_bounced_at is None  # an outage is not a bounce

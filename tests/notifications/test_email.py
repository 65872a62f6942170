"""Email through Django's locmem backend: the mails, their signed links, and the page the
link opens (read, confirm once, without logging in)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, timedelta
from urllib.parse import urlsplit

import pytest
import time_machine
from django.core import mail
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.test import Client, override_settings
from django.utils import timezone

from circulars import services
from circulars.models import Attachment, AttachmentKind, Circular, Receipt, ReceiptMethod
from circulars.services import CircularData
from communities.models import Block, Household, Member
from notifications.email import (
    EmailLinkExpired,
    EmailLinkInvalid,
    email_link_read,
    email_link_token,
    email_send_circular,
    email_send_digest,
    email_send_to_user,
)
from tests.conftest import Town
from tests.factories import HouseholdFactory, MemberFactory

PUBLIC_URL = "https://kairan.example.jp"
LINK = re.compile(re.escape(PUBLIC_URL) + r"/e/[^/\s\"<>]+/")


@pytest.fixture(autouse=True)
def public_url() -> Iterator[None]:
    with override_settings(KAIRAN_PUBLIC_URL=PUBLIC_URL):
        yield


@pytest.fixture
def outbox(db: None) -> list[EmailMessage]:
    mail.outbox = []
    return mail.outbox


def publish(
    town: Town,
    title: str = "ごみ収集日の変更について",
    *,
    blocks: list[Block] | None = None,
    due_date: date | None = date(2031, 6, 14),
) -> Circular:
    circular = services.circular_create(
        community=town.community,
        author=town.chair,
        data=CircularData(
            title=title,
            body="4月から燃えるごみは火曜と金曜です。",
            all_blocks=blocks is None,
            blocks=blocks or [],
            due_date=due_date,
        ),
    )
    return services.circular_publish(circular=circular)


def give_email(household: Household, address: str) -> Member:
    member = Member.objects.filter(household=household).order_by("pk").first()
    assert member is not None
    member.email = address
    member.save(update_fields=["email"])
    return member


def receipt_of(circular: Circular, household: Household) -> Receipt:
    return Receipt.objects.get(circular=circular, household=household)


def link_in(message: EmailMessage) -> str:
    links = LINK.findall(str(message.body))
    assert len(links) == 1, message.body
    return links[0]


def html_of(message: EmailMessage) -> str:
    assert isinstance(message, EmailMultiAlternatives)
    [(content, mimetype)] = message.alternatives
    assert mimetype == "text/html"
    return str(content)


def path_of(link: str) -> str:
    return urlsplit(link).path


def text_of(html: bytes) -> str:
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", html.decode(), flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)).strip()


def csrf_post(client: Client, path: str) -> str:
    response = client.post(path, {"csrfmiddlewaretoken": client.cookies["csrftoken"].value})
    assert response.status_code == 200
    return text_of(response.content)


# --- The mails --------------------------------------------------------------------------


def test_new_circular_mail_reaches_the_household_with_a_working_link(
    town: Town, outbox: list[EmailMessage]
) -> None:
    address = give_email(town.household1, "yamada@example.jp")
    circular = publish(town)

    outcome = email_send_circular(receipt=receipt_of(circular, town.household1), kind="new")

    assert (outcome.sent, outcome.failed, outcome.no_address, outcome.errors) == (1, 0, False, ())
    [message] = outbox
    assert message.to == [address.email]
    assert "ごみ収集日の変更について" in message.subject
    assert "さくら町内会" in message.subject
    body = str(message.body)
    assert "ごみ収集日の変更について" in body
    assert "さくら町内会" in body
    assert "6月14日までにお読みください" in body  # the due date, in Japanese
    link = link_in(message)
    assert link in html_of(message)
    assert message.extra_headers["Message-ID"].endswith("@kairan.example.jp>")

    page = Client().get(path_of(link))
    assert page.status_code == 200
    assert "ごみ収集日の変更について" in text_of(page.content)
    assert "確認しました" in text_of(page.content)
    assert receipt_of(circular, town.household1).opened_at is not None
    assert receipt_of(circular, town.household1).confirmed_at is None  # opening ≠ confirming


def test_the_link_confirms_once_by_post_with_csrf_and_method_email(
    town: Town, outbox: list[EmailMessage]
) -> None:
    give_email(town.household1, "yamada@example.jp")
    circular = publish(town)
    email_send_circular(receipt=receipt_of(circular, town.household1), kind="new")
    path = path_of(link_in(outbox[0]))
    browser = Client(enforce_csrf_checks=True)  # a phone's browser, not logged in

    assert browser.get(path).status_code == 200
    assert browser.post(path).status_code == 403  # no CSRF token: refused
    assert receipt_of(circular, town.household1).confirmed_at is None

    first = csrf_post(browser, path)
    assert "ありがとうございます。確認を記録しました。" in first
    assert "確認済み" in first
    receipt = receipt_of(circular, town.household1)
    assert receipt.confirmed_at is not None
    assert receipt.method == ReceiptMethod.EMAIL
    confirmed_at = receipt.confirmed_at

    second = csrf_post(browser, path)
    assert "もう確認済みです。" in second
    assert receipt_of(circular, town.household1).confirmed_at == confirmed_at
    # The other household is untouched.
    assert receipt_of(circular, town.household2).confirmed_at is None


def test_reminder_mail_has_its_own_subject_and_message_id(
    town: Town, outbox: list[EmailMessage]
) -> None:
    give_email(town.household1, "yamada@example.jp")
    circular = publish(town)
    receipt = receipt_of(circular, town.household1)

    email_send_circular(receipt=receipt, kind="new")
    email_send_circular(receipt=receipt, kind="reminder")

    new, reminder = outbox
    assert "ごみ収集日の変更について" in reminder.subject
    assert reminder.subject != new.subject
    assert reminder.extra_headers["Message-ID"] != new.extra_headers["Message-ID"]
    assert Client().get(path_of(link_in(reminder))).status_code == 200


def test_message_id_is_the_same_on_a_retry_and_differs_per_household(
    town: Town, outbox: list[EmailMessage]
) -> None:
    give_email(town.household1, "yamada@example.jp")
    give_email(town.household2, "tanaka@example.jp")
    circular = publish(town)
    mine = receipt_of(circular, town.household1)

    email_send_circular(receipt=mine, kind="new")
    email_send_circular(receipt=mine, kind="new")  # a retry of the same step
    email_send_circular(receipt=receipt_of(circular, town.household2), kind="new")
    with time_machine.travel(timezone.now() + timedelta(days=1)):
        # A retry on the same day is the same reminder; the next day's is a new one.
        email_send_circular(receipt=mine, kind="reminder")
        email_send_circular(receipt=mine, kind="reminder")
    with time_machine.travel(timezone.now() + timedelta(days=2)):
        email_send_circular(receipt=mine, kind="reminder")

    ids = [message.extra_headers["Message-ID"] for message in outbox]
    assert ids[0] == ids[1]
    assert ids[2] != ids[0]
    assert ids[3] == ids[4]
    assert len({ids[0], ids[2], ids[3], ids[5]}) == 4
    # The header is opaque: no database ids in it.
    assert str(circular.pk) + "." not in ids[0]


def test_every_working_address_of_the_household_gets_its_own_mail_bounced_skipped(
    town: Town, outbox: list[EmailMessage]
) -> None:
    give_email(town.household1, "yamada@example.jp")
    MemberFactory.create(household=town.household1, email="musume@example.jp")
    MemberFactory.create(
        household=town.household1, email="old@example.jp", email_bounced_at=timezone.now()
    )
    MemberFactory.create(household=town.household1, email="")
    circular = publish(town)

    outcome = email_send_circular(receipt=receipt_of(circular, town.household1), kind="new")

    assert (outcome.sent, outcome.failed, outcome.no_address) == (2, 0, False)
    assert sorted(address for message in outbox for address in message.to) == [
        "musume@example.jp",
        "yamada@example.jp",
    ]
    assert all(len(message.to) == 1 and not message.cc and not message.bcc for message in outbox)


def test_household_without_a_working_address_is_reported(
    town: Town, outbox: list[EmailMessage]
) -> None:
    give_email(town.household2, "tanaka@example.jp")
    MemberFactory.create(
        household=town.household1, email="old@example.jp", email_bounced_at=timezone.now()
    )
    circular = publish(town)

    outcome = email_send_circular(receipt=receipt_of(circular, town.household1), kind="new")

    assert outcome.no_address is True
    assert (outcome.sent, outcome.failed) == (0, 0)
    assert outbox == []


def test_no_other_household_data_in_the_mail(town: Town, outbox: list[EmailMessage]) -> None:
    give_email(town.household1, "yamada@example.jp")
    neighbour = give_email(town.household2, "tanaka@example.jp")
    circular = publish(town)

    email_send_circular(receipt=receipt_of(circular, town.household1), kind="new")

    [message] = outbox
    whole = message.message().as_string() + html_of(message)
    for private in (neighbour.email, neighbour.display_name, town.household2.label):
        assert private not in whole
    page = Client().get(path_of(link_in(message)))
    for private in (neighbour.email, neighbour.display_name, town.household2.label):
        assert private not in page.content.decode()


def test_digest_lists_each_open_circular_with_its_own_link(
    town: Town, outbox: list[EmailMessage]
) -> None:
    give_email(town.household1, "yamada@example.jp")
    give_email(town.household2, "tanaka@example.jp")
    first = publish(town, "ごみ収集日の変更について")
    second = publish(town, "夏祭りのお知らせ", due_date=None)
    only_block2 = publish(town, "2班だけの連絡", blocks=[town.block2])
    receipts = [receipt_of(first, town.household1), receipt_of(second, town.household1)]
    # A receipt of another household slipped into the list: it must not appear.
    receipts.append(receipt_of(only_block2, town.household2))

    outcome = email_send_digest(household_id=town.household1.pk, receipts=receipts)

    assert (outcome.sent, outcome.failed, outcome.no_address) == (1, 0, False)
    [message] = outbox
    assert message.to == ["yamada@example.jp"]
    body = str(message.body)
    assert "ごみ収集日の変更について" in body and "夏祭りのお知らせ" in body
    assert "2班だけの連絡" not in body and "2班だけの連絡" not in html_of(message)
    links = LINK.findall(body)
    assert len(links) == 2
    titles = [text_of(Client().get(path_of(link)).content) for link in links]
    assert "ごみ収集日の変更について" in titles[0]
    assert "夏祭りのお知らせ" in titles[1]
    assert {email_link_read(urlsplit(link).path.split("/")[2]) for link in links} == {
        (first.pk, town.household1.pk),
        (second.pk, town.household1.pk),
    }

    again = email_send_digest(household_id=town.household1.pk, receipts=list(reversed(receipts)))
    assert again.sent == 1
    assert outbox[1].extra_headers["Message-ID"] == message.extra_headers["Message-ID"]


def test_digest_with_nothing_to_list_sends_nothing(town: Town, outbox: list[EmailMessage]) -> None:
    give_email(town.household1, "yamada@example.jp")
    outcome = email_send_digest(household_id=town.household1.pk, receipts=[])
    assert (outcome.sent, outcome.failed, outcome.no_address) == (0, 0, False)
    assert outbox == []


def test_staff_notice_goes_to_the_account_address(town: Town, outbox: list[EmailMessage]) -> None:
    outcome = email_send_to_user(
        user_id=town.leader1.pk, subject="【班長】確認が必要な世帯", body="山田さん: 未確認"
    )
    assert outcome.sent == 1
    [message] = outbox
    assert message.to == [town.leader1.email]
    assert message.subject == "【班長】確認が必要な世帯"
    assert "山田さん: 未確認" in str(message.body)

    town.leader1.email = ""
    town.leader1.save(update_fields=["email"])
    assert email_send_to_user(user_id=town.leader1.pk, subject="s", body="b").no_address


# --- The signed link --------------------------------------------------------------------


def test_token_round_trip_and_tampering() -> None:
    token = email_link_token(circular_id=12, household_id=345)
    assert email_link_read(token) == (12, 345)
    assert "/" not in token
    with pytest.raises(EmailLinkInvalid):
        email_link_read(token.replace("12-345", "12-346"))
    with pytest.raises(EmailLinkInvalid):
        email_link_read(token[:-2])
    with pytest.raises(EmailLinkInvalid):
        email_link_read("not-a-token")


def test_tampered_link_shows_the_gone_page(town: Town, outbox: list[EmailMessage]) -> None:
    give_email(town.household1, "yamada@example.jp")
    circular = publish(town)
    email_send_circular(receipt=receipt_of(circular, town.household1), kind="new")
    path = path_of(link_in(outbox[0]))
    # Point the link at the neighbour's household without the key: refused.
    forged = path.replace(
        f"/e/{circular.pk}-{town.household1.pk}:", f"/e/{circular.pk}-{town.household2.pk}:"
    )
    assert forged != path

    for bad in (forged, path[:-3] + "/", "/e/garbage/"):
        response = Client().get(bad)
        assert response.status_code == 410
        assert 'href="/"' in response.content.decode()  # the way to the app
        assert "ごみ収集日の変更について" not in response.content.decode()
        assert Client().post(bad).status_code == 410
    assert receipt_of(circular, town.household2).opened_at is None


def test_expired_link_shows_the_gone_page(town: Town, outbox: list[EmailMessage]) -> None:
    give_email(town.household1, "yamada@example.jp")
    circular = publish(town)
    email_send_circular(receipt=receipt_of(circular, town.household1), kind="new")
    path = path_of(link_in(outbox[0]))
    token = path.split("/")[2]

    with time_machine.travel(timezone.now() + timedelta(days=59)):
        assert Client().get(path).status_code == 200
    with time_machine.travel(timezone.now() + timedelta(days=61)):
        with pytest.raises(EmailLinkExpired):
            email_link_read(token)
        response = Client().get(path)
        assert response.status_code == 410
        assert "ごみ収集日の変更について" not in response.content.decode()
        browser = Client(enforce_csrf_checks=True)
        browser.get("/e/garbage/")  # sets the CSRF cookie
        assert (
            browser.post(
                path, {"csrfmiddlewaretoken": browser.cookies["csrftoken"].value}
            ).status_code
            == 410
        )
    assert receipt_of(circular, town.household1).confirmed_at is None


def test_link_for_a_removed_household_or_circular_not_sent_to_it_is_404(town: Town) -> None:
    circular = publish(town, blocks=[town.block1])
    not_sent = email_link_token(circular_id=circular.pk, household_id=town.household2.pk)
    assert Client().get(f"/e/{not_sent}/").status_code == 404
    assert not Receipt.objects.filter(circular=circular, household=town.household2).exists()

    moved_out = HouseholdFactory.create(block=town.block1, label="転出")
    services.receipts_sync_for_household(household=moved_out)
    token = email_link_token(circular_id=circular.pk, household_id=moved_out.pk)
    assert Client().get(f"/e/{token}/").status_code == 200
    moved_out.delete()
    assert Client().get(f"/e/{token}/").status_code == 404

    gone = email_link_token(circular_id=circular.pk + 1000, household_id=town.household1.pk)
    assert Client().get(f"/e/{gone}/").status_code == 404


def test_attachments_are_a_note_pointing_to_the_app(town: Town) -> None:
    circular = publish(town)
    Attachment.objects.create(
        circular=circular,
        kind=AttachmentKind.IMAGE,
        file="attachments/test/photo.jpg",
        original_name="地図.jpg",
        size=10,
    )
    token = email_link_token(circular_id=circular.pk, household_id=town.household1.pk)
    page = Client().get(f"/e/{token}/").content.decode()
    assert "<img" not in page.split('<main id="main"', 1)[1]
    assert "地図.jpg" not in page
    assert "attachments/test/photo.jpg" not in page


def test_subject_and_gone_page_read_in_japanese(town: Town, outbox: list[EmailMessage]) -> None:
    give_email(town.household1, "yamada@example.jp")
    circular = publish(town)
    email_send_circular(receipt=receipt_of(circular, town.household1), kind="new")
    assert outbox[0].subject == "【さくら町内会】新しい回覧「ごみ収集日の変更について」"
    assert "ログインは要りません" in str(outbox[0].body)
    gone = Client().get("/e/garbage/").content.decode()
    assert "このリンクは使えません" in gone
    assert "班長" in gone

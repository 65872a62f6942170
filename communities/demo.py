"""The demo association さくら町内会: fictional people, plausible names. Never in production."""

from __future__ import annotations

from dataclasses import dataclass

from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import CommandError
from django.db import transaction
from django.utils import timezone

from communities import services
from communities.models import (
    Block,
    Community,
    DeliveryMode,
    Household,
    Member,
    MemberKind,
    RoleKind,
)

DEMO_SLUG = "sakura"
DEMO_TOTP_SECRET = "JBSWY3DPEHPK3PXPKAIRAN2"  # noqa: S105 - printed by the run command; demo only

FAMILY_NAMES = [
    "佐藤",
    "鈴木",
    "高橋",
    "田中",
    "伊藤",
    "渡辺",
    "山本",
    "中村",
    "小林",
    "加藤",
    "吉田",
    "山田",
    "佐々木",
    "山口",
    "松本",
    "井上",
    "木村",
    "林",
    "斎藤",
    "清水",
    "山崎",
    "森",
    "池田",
    "橋本",
    "阿部",
    "石川",
    "山下",
    "中島",
    "石井",
    "小川",
    "前田",
    "岡田",
    "長谷川",
    "藤田",
    "後藤",
    "近藤",
    "村上",
    "遠藤",
    "青木",
    "坂本",
    "斉藤",
    "福田",
    "太田",
    "西村",
    "藤井",
    "金子",
    "岡本",
    "藤原",
    "中野",
    "三浦",
    "原田",
    "中川",
    "松田",
    "竹内",
    "小野",
    "田村",
    "中山",
    "和田",
    "石田",
    "森田",
]
GIVEN_NAMES = ["美智子", "健一", "和子", "誠", "幸子", "博", "恵子", "隆", "節子", "清"]


@dataclass(frozen=True)
class DemoPerson:
    role: str
    email: str
    name: str


STAFF = [
    DemoPerson("chair", "chair@sakura.example", "佐藤 美智子"),
    DemoPerson("officer", "officer@sakura.example", "鈴木 健一"),
    DemoPerson("helper", "helper1@sakura.example", "森 さやか"),
    DemoPerson("helper", "helper2@sakura.example", "原田 翔"),
]
BLOCK_COUNT = 5
HOUSEHOLDS_PER_BLOCK = 12


def refuse_in_production() -> None:
    if settings.PRODUCTION:
        raise CommandError(
            "Demo commands are refused with production settings (KAIRAN_ENV=production)."
        )


def _staff_user(email: str, name: str) -> User:
    user = services.user_get_or_create_by_email(email=email, name=name)
    EmailAddress.objects.filter(user=user, email=email).update(verified=True, primary=True)
    return user


def _enable_totp(user: User) -> None:
    from allauth.mfa.models import Authenticator
    from allauth.mfa.totp.internal.auth import TOTP

    if not Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists():
        TOTP.activate(user, DEMO_TOTP_SECRET)


def _resident(household: Household, key: str, name: str, kind: str) -> Member:
    user, created = User.objects.get_or_create(
        username=f"demo-{key}", defaults={"first_name": name}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    member, _ = Member.objects.get_or_create(
        household=household,
        user=user,
        defaults={
            "display_name": name,
            "kind": kind,
            "consented_at": timezone.now(),
            "consent_version": services.CONSENT_VERSION,
        },
    )
    return member


@transaction.atomic
def seed_demo() -> Community:
    """Create or complete the demo association; running it twice changes nothing."""
    refuse_in_production()
    chair = _staff_user(STAFF[0].email, STAFF[0].name)
    community = Community.objects.filter(slug=DEMO_SLUG).first()
    if community is None:
        community = services.community_create(
            name="さくら町内会", slug=DEMO_SLUG, chair=chair, contact="会長 佐藤 (090-0000-0000)"
        )
    officer = _staff_user(STAFF[1].email, STAFF[1].name)
    services.role_assign(community=community, user=officer, role=RoleKind.OFFICER)
    _enable_totp(chair)
    _enable_totp(officer)

    blocks = []
    for number in range(1, BLOCK_COUNT + 1):
        block = Block.objects.filter(community=community, name=f"{number}班").first()
        blocks.append(block or services.block_create(community=community, name=f"{number}班"))

    names = iter(FAMILY_NAMES)
    for b_index, block in enumerate(blocks):
        for h_index in range(HOUSEHOLDS_PER_BLOCK):
            label = next(names)
            number = b_index * HOUSEHOLDS_PER_BLOCK + h_index
            # Roughly a third of the households stay on paper.
            mode = (
                DeliveryMode.PAPER
                if number % 3 == 0
                else DeliveryMode.BOTH
                if number % 7 == 0
                else DeliveryMode.APP
            )
            household = Household.objects.filter(block=block, label=label).first()
            if household is None:
                household = services.household_create(
                    community=community,
                    data=services.HouseholdData(
                        label=label,
                        block=block,
                        address=f"さくら町{b_index + 1}丁目{h_index + 1}-{(h_index * 3) % 9 + 1}",
                        delivery_mode=mode,
                        helper_note="インターホン故障。手渡しで。" if number == 9 else "",
                    ),
                )
            # Most app households have someone on a phone; a few have not joined yet.
            if mode != DeliveryMode.PAPER and number % 5 != 4:
                given = GIVEN_NAMES[number % len(GIVEN_NAMES)]
                _resident(household, f"r{number}", f"{label} {given}", MemberKind.RESIDENT)

        leader_name = f"{FAMILY_NAMES[b_index * HOUSEHOLDS_PER_BLOCK + 1]} 班長"
        leader = _staff_user(f"leader{b_index + 1}@sakura.example", leader_name)
        services.role_assign(
            community=community, user=leader, role=RoleKind.BLOCK_LEADER, block=block
        )

    helper1 = _staff_user(STAFF[2].email, STAFF[2].name)
    helper2 = _staff_user(STAFF[3].email, STAFF[3].name)
    for block in blocks[:3]:
        services.role_assign(community=community, user=helper1, role=RoleKind.HELPER, block=block)
    for block in blocks[3:]:
        services.role_assign(community=community, user=helper2, role=RoleKind.HELPER, block=block)

    # A daughter in Osaka looks after her mother's household (高橋, app and paper).
    parent = Household.objects.get(block=blocks[0], label="高橋")
    _resident(parent, "supporter", "高橋 由美 (娘)", MemberKind.SUPPORTER)
    _seed_circulars(community, chair)
    return community


def _seed_circulars(community: Community, chair: User) -> None:
    """Two published circulars (one half confirmed) and a draft, once."""
    from datetime import timedelta

    from circulars import services as circulars
    from circulars.models import Circular, Priority, ReceiptMethod

    if Circular.objects.filter(community=community).exists():
        return
    today = timezone.localdate()
    garbage = circulars.circular_create(
        community=community,
        author=chair,
        data=circulars.CircularData(
            title="ごみ収集日の変更について",
            body=(
                "市からのお知らせです。\n\n"
                "来月から、燃えるごみの収集日が月曜・木曜に変わります。\n"
                "資源ごみは第2・第4水曜日のままです。\n\n"
                "詳しくは市のホームページをご覧ください。 https://www.city.example.jp/gomi"
            ),
            priority=Priority.IMPORTANT,
            due_date=today + timedelta(days=7),
        ),
    )
    garbage = circulars.circular_publish(circular=garbage)
    for index, receipt in enumerate(garbage.receipts.select_related("household")):
        if receipt.household is None or index % 2:
            continue
        member = receipt.household.members.first()
        if member is not None:
            circulars.receipt_confirm(
                circular=garbage,
                household=receipt.household,
                method=ReceiptMethod.APP,
                member=member,
                recorded_by=member.user,
            )
    festival = circulars.circular_create(
        community=community,
        author=chair,
        data=circulars.CircularData(
            title="夏祭りのお手伝い募集",
            body="8月の夏祭りで、テント設営のお手伝いを募集します。\n班長までお知らせください。",
            due_date=today + timedelta(days=14),
        ),
    )
    circulars.circular_publish(circular=festival)
    circulars.circular_create(
        community=community,
        author=chair,
        data=circulars.CircularData(title="防災訓練のお知らせ（下書き）", body="日時：未定"),
    )


def demo_user(role: str) -> User:
    """The demo person who plays ``role``."""
    refuse_in_production()
    community = Community.objects.filter(slug=DEMO_SLUG).first()
    if community is None:
        raise CommandError("Run 'python manage.py seed_demo' first.")
    emails = {
        "chair": "chair@sakura.example",
        "officer": "officer@sakura.example",
        "block_leader": "leader1@sakura.example",
        "helper": "helper1@sakura.example",
    }
    if role in emails:
        return User.objects.get(email=emails[role])
    if role == "resident":
        member = (
            Member.objects.filter(
                household__community=community,
                kind=MemberKind.RESIDENT,
                user__username__startswith="demo-r",
            )
            .order_by("household__block__position", "household__circulation_order")
            .first()
        )
    elif role == "supporter":
        member = Member.objects.filter(
            household__community=community, kind=MemberKind.SUPPORTER
        ).first()
    else:
        raise CommandError(
            "ROLE must be one of: chair, officer, block_leader, helper, resident, supporter"
        )
    if member is None:
        raise CommandError("Run 'python manage.py seed_demo' first.")
    return member.user

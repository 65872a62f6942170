"""A synthetic city, written fast with bulk_create into the benchmark's own database.

One main association (2,000 households in 40 blocks by default) holds the scenarios; the
rest of the requested households are spread over further associations of about 200
households in 5 blocks (100,000 households → 500 associations), each with one published
circular, so the tables have a city's size. Every household has one resident member; the
first ``sessions`` of them (main association first) are logged in the way joining with an
invite card logs a phone in: a database session for the member's user, marked as the long
resident session (renewed today, so pages do not rewrite it on every request).

Needs Django set up with the benchmark's environment (see ``production.py``).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

BACKEND = "django.contrib.auth.backends.ModelBackend"
BODY = (
    "来月から燃えるごみの収集日が変わります。資源ごみは第2・第4水曜日のままです。"
    "集積所の清掃当番は班ごとに交代でお願いします。ご不明な点は班長までお問い合わせください。\n"
) * 6


@dataclass
class Resident:
    household_id: int
    user_id: int
    block_id: int
    cookie: str  # the Cookie header value: session and CSRF cookies
    csrf: str


@dataclass
class City:
    slug: str
    community_id: int
    chair_id: int
    chair: Resident
    residents: list[Resident]  # logged-in members, main association first
    main_household_ids: list[int]
    page_circular_id: int  # 2,000-household ledger, half confirmed; residents' page
    pool: list[int] = field(default_factory=list)  # fresh circulars for the receipts runs
    households: int = 0
    communities: int = 0


def _csrf() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(32))


def _sessions(users: list, *, long: bool) -> list[tuple[str, str]]:
    """Database sessions for ``users``: [(session key, csrf secret)]."""
    from django.conf import settings
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from communities.middleware import LONG_SESSION_KEY, RENEWED_KEY

    store = SessionStore()
    today = timezone.localdate().isoformat()
    expire = timezone.now() + timedelta(days=settings.KAIRAN_RESIDENT_SESSION_DAYS)
    rows, keys = [], []
    for user in users:
        data = {
            "_auth_user_id": str(user.pk),
            "_auth_user_backend": BACKEND,
            "_auth_user_hash": user.get_session_auth_hash(),
        }
        if long:
            data[LONG_SESSION_KEY] = True
            data[RENEWED_KEY] = today
        key = secrets.token_hex(16)
        rows.append(Session(session_key=key, session_data=store.encode(data), expire_date=expire))
        keys.append((key, _csrf()))
    Session.objects.bulk_create(rows, batch_size=2000)
    return keys


def _cookie(session_key: str, csrf: str) -> str:
    from django.conf import settings

    return f"{settings.SESSION_COOKIE_NAME}={session_key}; {settings.CSRF_COOKIE_NAME}={csrf}"


def circulars_add(*, community_id: int, author_id: int, count: int, title: str) -> list[int]:
    """Published circulars with one open receipt per household, as publishing leaves them."""
    from django.db import transaction
    from django.utils import timezone

    from circulars.models import Circular, CircularStatus, Receipt
    from circulars.search import search_normalise
    from communities.models import Household

    now = timezone.now()
    households = list(
        Household.objects.filter(community_id=community_id).values_list("pk", "block_id")
    )
    with transaction.atomic():
        made = Circular.objects.bulk_create(
            [
                Circular(
                    community_id=community_id,
                    author_id=author_id,
                    title=f"{title} {n + 1}",
                    body=BODY,
                    status=CircularStatus.PUBLISHED,
                    published_at=now,
                    publish_at=now,
                    search_text=search_normalise(f"{title} {n + 1}\n{BODY}"),
                )
                for n in range(count)
            ]
        )
        receipts = [
            Receipt(circular_id=c.pk, household_id=h, block_id=b)
            for c in made
            for h, b in households
        ]
        Receipt.objects.bulk_create(receipts, batch_size=5000)
    return [c.pk for c in made]


def load(
    *,
    households: int,
    main_households: int = 2000,
    main_blocks: int = 40,
    sessions: int = 1000,
    pool: int = 10,
) -> City:
    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
    from django.contrib.auth.models import User
    from django.db import transaction
    from django.utils import timezone

    from circulars.models import Receipt, ReceiptMethod
    from communities import services
    from communities.models import (
        Block,
        Community,
        DeliveryMode,
        Household,
        Member,
        MemberKind,
        RoleAssignment,
        RoleKind,
    )

    main_households = min(main_households, households)
    rest = households - main_households
    others = max(1, round(households / 200)) - 1 if rest else 0
    chair = User.objects.create_user(username="bench-chair", first_name="会長")
    TOTP.activate(chair, generate_totp_secret())  # the ledger needs two-step login
    main = services.community_create(name="ベンチ町内会", slug="bench-main", chair=chair)
    year = timezone.localdate().year
    with transaction.atomic():
        communities = [
            main,
            *Community.objects.bulk_create(
                [Community(name=f"市内{n:03d}町内会", slug=f"city-{n:03d}") for n in range(others)]
            ),
        ]
        RoleAssignment.objects.bulk_create(
            [
                RoleAssignment(community=c, user=chair, role=RoleKind.CHAIR, fiscal_year=year)
                for c in communities[1:]
            ]
        )
        plan: list[tuple[Community, int, int]] = [(main, main_blocks, main_households)]
        for index, community in enumerate(communities[1:]):
            share = rest // others + (1 if index < rest % others else 0)
            plan.append((community, 5, share))
        blocks = Block.objects.bulk_create(
            [
                Block(community=c, name=f"{n + 1}班", position=n)
                for c, block_count, _ in plan
                for n in range(block_count)
            ]
        )
        by_community: dict[int, list[Block]] = {}
        for block in blocks:
            by_community.setdefault(block.community_id, []).append(block)
        rows = []
        for community, block_count, share in plan:
            own = by_community[community.pk]
            for n in range(share):
                block = own[n * block_count // max(share, 1)]
                rows.append(
                    Household(
                        community=community,
                        block=block,
                        label=f"{block.name}-{n + 1:04d}",
                        circulation_order=n,
                        delivery_mode=DeliveryMode.APP,
                    )
                )
        made = Household.objects.bulk_create(rows, batch_size=5000)
        now = timezone.now()
        users = User.objects.bulk_create(
            [
                User(username=f"r{h.pk}", first_name="住民", password="!" + uuid.uuid4().hex)
                for h in made
            ],
            batch_size=5000,
        )
        Member.objects.bulk_create(
            [
                Member(
                    household=h,
                    user=u,
                    display_name=f"住民{h.pk}",
                    kind=MemberKind.RESIDENT,
                    consented_at=now,
                    consent_version="1",
                )
                for h, u in zip(made, users, strict=True)
            ],
            batch_size=5000,
        )
        chair_key, chair_csrf = _sessions([chair], long=False)[0]
        keys = _sessions(users[:sessions], long=True)
    residents = [
        Resident(
            household_id=h.pk,
            user_id=u.pk,
            block_id=h.block_id,
            cookie=_cookie(key, csrf),
            csrf=csrf,
        )
        for h, u, (key, csrf) in zip(made, users, keys, strict=False)
    ]
    # One circular going round in each other association, so the tables are a city's.
    for community in communities[1:]:
        circulars_add(
            community_id=community.pk, author_id=chair.pk, count=1, title="市からのお知らせ"
        )
    page_circular = circulars_add(
        community_id=main.pk, author_id=chair.pk, count=1, title="ごみ収集日の変更について"
    )[0]
    half = list(
        Receipt.objects.filter(circular_id=page_circular)
        .order_by("pk")
        .values_list("pk", flat=True)[: main_households // 2]
    )
    Receipt.objects.filter(pk__in=half).update(
        confirmed_at=timezone.now(), opened_at=timezone.now(), method=ReceiptMethod.APP, version=1
    )
    city = City(
        slug=main.slug,
        community_id=main.pk,
        chair_id=chair.pk,
        chair=Resident(0, chair.pk, 0, _cookie(chair_key, chair_csrf), chair_csrf),
        residents=residents,
        main_household_ids=[h.pk for h in made[:main_households]],
        page_circular_id=page_circular,
        households=len(made),
        communities=len(communities),
    )
    if pool:
        city.pool = circulars_add(
            community_id=main.pk, author_id=chair.pk, count=pool, title="確認のお願い"
        )
    return city

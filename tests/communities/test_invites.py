"""Invite cards and device invites: issuing, looking up and redeeming them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from communities import services
from communities.models import HouseholdInvite, InviteKind, Member, MemberKind
from communities.selectors import InviteStatus, household_invite_lookup
from communities.services import InviteRefused
from communities.tokens import CODE_ALPHABET, CODE_LENGTH, code_format, code_normalise
from tests.conftest import Town

pytestmark = pytest.mark.django_db


def _issue(town: Town, kind: str = InviteKind.CARD) -> services.IssuedInvite:
    return services.household_invite_issue(
        household=town.household1, created_by=town.leader1, kind=kind
    )


def _redeem(
    *,
    token: str = "",
    code: str = "",
    user: User | None = None,
    name: str = "山田 花子",
    kind: str = MemberKind.RESIDENT,
) -> Member:
    return services.household_invite_redeem(
        token=token, code=code, display_name=name, kind=kind, consent=True, user=user
    )


def _expire(issued: services.IssuedInvite) -> None:
    HouseholdInvite.objects.filter(pk=issued.invite.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )


# --- Issuing ----------------------------------------------------------------------------


def test_card_lasts_thirty_days(town: Town) -> None:
    before = timezone.now()
    issued = _issue(town)
    invite = HouseholdInvite.objects.get(pk=issued.invite.pk)
    assert invite.kind == InviteKind.CARD
    assert invite.created_by == town.leader1
    lifetime = timedelta(days=services.INVITE_CARD_DAYS)
    assert services.INVITE_CARD_DAYS == 30
    assert before + lifetime <= invite.expires_at <= timezone.now() + lifetime
    day_29 = invite.expires_at - timedelta(days=1)
    after = invite.expires_at + timedelta(seconds=1)
    assert household_invite_lookup(token=issued.token, now=day_29).status == InviteStatus.OK
    assert household_invite_lookup(token=issued.token, now=after).status == InviteStatus.EXPIRED
    assert household_invite_lookup(code=issued.code, now=after).status == InviteStatus.EXPIRED


def test_device_invite_lasts_fifteen_minutes(town: Town) -> None:
    before = timezone.now()
    issued = _issue(town, InviteKind.DEVICE)
    invite = HouseholdInvite.objects.get(pk=issued.invite.pk)
    assert invite.kind == InviteKind.DEVICE
    lifetime = timedelta(minutes=15)
    assert before + lifetime <= invite.expires_at <= timezone.now() + lifetime
    minute_14 = before + timedelta(minutes=14)
    minute_16 = timezone.now() + timedelta(minutes=16)
    assert household_invite_lookup(token=issued.token, now=minute_14).status == InviteStatus.OK
    assert household_invite_lookup(token=issued.token, now=minute_16).status == (
        InviteStatus.EXPIRED
    )


def test_the_code_is_typable(town: Town) -> None:
    code = _issue(town).code
    assert len(code) == CODE_LENGTH
    assert set(code) <= set(CODE_ALPHABET)
    assert not set(code) & set("01OIL")


def test_a_new_card_revokes_the_old_card(town: Town) -> None:
    old = _issue(town)
    device = _issue(town, InviteKind.DEVICE)
    other_household = services.household_invite_issue(
        household=town.household2, created_by=town.chair
    )
    new = _issue(town)
    assert household_invite_lookup(token=old.token).status == InviteStatus.REVOKED
    assert household_invite_lookup(code=old.code).status == InviteStatus.REVOKED
    assert household_invite_lookup(token=new.token).status == InviteStatus.OK
    # Device invites and other households' cards are not touched by a new card.
    assert household_invite_lookup(token=device.token).status == InviteStatus.OK
    assert household_invite_lookup(token=other_household.token).status == InviteStatus.OK
    with pytest.raises(InviteRefused) as refused:
        _redeem(token=old.token)
    assert refused.value.status == InviteStatus.REVOKED
    assert not Member.objects.filter(display_name="山田 花子").exists()


def test_a_new_device_invite_does_not_revoke_the_card(town: Town) -> None:
    card = _issue(town)
    _issue(town, InviteKind.DEVICE)
    assert household_invite_lookup(token=card.token).status == InviteStatus.OK


def test_a_new_card_keeps_a_used_card_used(town: Town) -> None:
    old = _issue(town)
    _redeem(token=old.token)
    _issue(town)
    invite = HouseholdInvite.objects.get(pk=old.invite.pk)
    assert invite.used_at is not None
    assert invite.revoked_at is None
    assert household_invite_lookup(token=old.token).status == InviteStatus.USED


def test_issue_for_block_makes_one_card_per_household(town: Town) -> None:
    second = services.household_create(
        community=town.community,
        data=services.HouseholdData(label="鈴木", block=town.block1),
    )
    issued = services.household_invites_issue_for_block(block=town.block1, created_by=town.chair)
    assert {household.pk for household, _issued in issued} == {town.household1.pk, second.pk}
    for household, item in issued:
        lookup = household_invite_lookup(token=item.token)
        assert lookup.status == InviteStatus.OK
        assert lookup.invite is not None
        assert lookup.invite.household_id == household.pk
    assert not HouseholdInvite.objects.filter(household=town.household2).exists()


def _text_columns() -> list[tuple[type[models.Model], str]]:
    columns = []
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if isinstance(field, models.CharField | models.TextField | models.JSONField):
                columns.append((model, field.attname))
    return columns


def test_only_hashes_are_stored(town: Town) -> None:
    issued_card = _issue(town)
    issued_device = _issue(town, InviteKind.DEVICE)
    _redeem(code=issued_device.code)
    columns = _text_columns()
    assert (HouseholdInvite, "token_hash") in columns
    for issued in (issued_card, issued_device):
        invite = HouseholdInvite.objects.get(pk=issued.invite.pk)
        assert issued.token not in (invite.token_hash, invite.code_hash)
        assert len(invite.token_hash) == len(invite.code_hash) == 64
        for secret in (issued.token, issued.code, code_format(issued.code)):
            for model, column in columns:
                if isinstance(model._meta.get_field(column), models.JSONField):
                    continue
                hits = model._default_manager.filter(**{f"{column}__contains": secret})
                assert not hits.exists(), f"{secret!r} found in {model.__name__}.{column}"


# --- Looking up -------------------------------------------------------------------------


def test_lookup_statuses(town: Town) -> None:
    ok = _issue(town, InviteKind.DEVICE)
    used = _issue(town, InviteKind.DEVICE)
    expired = _issue(town, InviteKind.DEVICE)
    revoked = _issue(town)
    _issue(town)  # revokes the previous card
    _redeem(token=used.token)
    _expire(expired)

    assert household_invite_lookup(token=ok.token).status == InviteStatus.OK
    assert household_invite_lookup(code=ok.code).status == InviteStatus.OK
    assert household_invite_lookup(token=used.token).status == InviteStatus.USED
    assert household_invite_lookup(token=expired.token).status == InviteStatus.EXPIRED
    assert household_invite_lookup(token=revoked.token).status == InviteStatus.REVOKED
    unknown = household_invite_lookup(token="not-a-token")
    assert (unknown.status, unknown.invite) == (InviteStatus.UNKNOWN, None)
    assert household_invite_lookup(code="ABCD-EFGH").status == InviteStatus.UNKNOWN
    assert household_invite_lookup().status == InviteStatus.UNKNOWN
    assert household_invite_lookup(token="", code="").status == InviteStatus.UNKNOWN
    lookup = household_invite_lookup(token=ok.token)
    assert lookup.invite is not None
    assert lookup.invite.household == town.household1


def test_lookup_used_wins_over_expired(town: Town) -> None:
    issued = _issue(town)
    _redeem(token=issued.token)
    _expire(issued)
    assert household_invite_lookup(token=issued.token).status == InviteStatus.USED


@pytest.mark.parametrize(
    "typed",
    [
        lambda code: code,
        lambda code: code.lower(),
        lambda code: code_format(code),
        lambda code: f" {code[:4]} - {code[4:].lower()} ",
        # Full-width letters and digits, as typed on a Japanese keyboard.
        lambda code: "".join(chr(ord(ch) + 0xFEE0) for ch in code),
        lambda code: "".join(chr(ord(ch) + 0xFEE0) for ch in code_format(code).lower()),
    ],
)
def test_typed_code_is_normalised(town: Town, typed: Callable[[str], str]) -> None:
    issued = _issue(town)
    text = typed(issued.code)
    assert code_normalise(text) == issued.code
    assert household_invite_lookup(code=text).status == InviteStatus.OK
    member = _redeem(code=text)
    assert member.household == town.household1


def test_code_normalise() -> None:
    assert code_normalise("ａｂｃｄ－ｅｆ２３") == "ABCDEF23"
    assert code_normalise("abcd-ef23") == "ABCDEF23"
    assert code_normalise(" AB CD\u3000EF-23 ") == "ABCDEF23"


# --- Redeeming --------------------------------------------------------------------------


def test_redeem_creates_a_passwordless_member(town: Town) -> None:
    issued = _issue(town)
    users_before = User.objects.count()
    member = _redeem(token=issued.token, name="  山田 花子  ", kind=MemberKind.SUPPORTER)
    assert User.objects.count() == users_before + 1
    member.refresh_from_db()
    assert member.household == town.household1
    assert member.display_name == "山田 花子"
    assert member.kind == MemberKind.SUPPORTER
    assert member.consent_version == services.CONSENT_VERSION
    assert member.consented_at is not None
    assert not member.user.has_usable_password()
    assert member.user.email == ""
    invite = HouseholdInvite.objects.get(pk=issued.invite.pk)
    assert invite.used_at is not None
    assert invite.used_by == member


def test_redeem_with_an_empty_name_uses_a_default(town: Town) -> None:
    member = _redeem(token=_issue(town).token, name="   ")
    assert member.display_name


def test_redeem_is_single_use(town: Town) -> None:
    issued = _issue(town)
    _redeem(token=issued.token)
    for token, code in ((issued.token, ""), ("", issued.code)):
        with pytest.raises(InviteRefused) as refused:
            _redeem(token=token, code=code)
        assert refused.value.status == InviteStatus.USED
        assert refused.value.invite is not None
        assert refused.value.invite.pk == issued.invite.pk
    assert Member.objects.filter(household=town.household1).count() == 2  # resident1 + one


def test_redeem_refuses_an_expired_invite(town: Town) -> None:
    issued = _issue(town, InviteKind.DEVICE)
    _expire(issued)
    members_before = Member.objects.count()
    with pytest.raises(InviteRefused) as refused:
        _redeem(token=issued.token)
    assert refused.value.status == InviteStatus.EXPIRED
    assert Member.objects.count() == members_before
    assert HouseholdInvite.objects.get(pk=issued.invite.pk).used_at is None


def test_redeem_refuses_an_unknown_invite(town: Town) -> None:
    users_before = User.objects.count()
    with pytest.raises(InviteRefused) as refused:
        _redeem(code="ZZZZ-ZZZZ")
    assert refused.value.status == InviteStatus.UNKNOWN
    assert refused.value.invite is None
    with pytest.raises(InviteRefused):
        _redeem()
    assert User.objects.count() == users_before


def test_redeem_needs_consent(town: Town) -> None:
    issued = _issue(town)
    users_before = User.objects.count()
    with pytest.raises(ValidationError) as error:
        services.household_invite_redeem(
            token=issued.token, display_name="山田", kind=MemberKind.RESIDENT, consent=False
        )
    assert "consent" in error.value.message_dict
    assert User.objects.count() == users_before
    assert household_invite_lookup(token=issued.token).status == InviteStatus.OK


def test_redeem_needs_a_known_kind(town: Town) -> None:
    issued = _issue(town)
    with pytest.raises(ValidationError) as error:
        _redeem(token=issued.token, kind="landlord")
    assert "kind" in error.value.message_dict
    assert household_invite_lookup(token=issued.token).status == InviteStatus.OK


def test_redeem_attaches_a_logged_in_user(town: Town) -> None:
    issued = _issue(town, InviteKind.DEVICE)
    users_before = User.objects.count()
    # resident2 lives in household2 and also looks after household1.
    member = _redeem(token=issued.token, user=town.resident2, kind=MemberKind.SUPPORTER)
    assert member.user == town.resident2
    assert member.household == town.household1
    assert User.objects.count() == users_before
    assert set(Member.objects.filter(user=town.resident2).values_list("household", flat=True)) == {
        town.household1.pk,
        town.household2.pk,
    }


def test_redeem_refuses_someone_already_in_the_household(town: Town) -> None:
    issued = _issue(town, InviteKind.DEVICE)
    members_before = Member.objects.count()
    with pytest.raises(InviteRefused) as refused:
        _redeem(token=issued.token, user=town.resident1)
    assert refused.value.status == "already_member"
    assert Member.objects.count() == members_before
    # The invite is still good for someone else.
    assert household_invite_lookup(token=issued.token).status == InviteStatus.OK


def test_token_takes_precedence_over_code(town: Town) -> None:
    first = _issue(town, InviteKind.DEVICE)
    second = services.household_invite_issue(
        household=town.household2, created_by=town.chair, kind=InviteKind.DEVICE
    )
    member = _redeem(token=first.token, code=second.code)
    assert member.household == town.household1
    assert household_invite_lookup(token=second.token).status == InviteStatus.OK

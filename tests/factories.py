"""Test data built through the real services where a rule applies, factories elsewhere."""

from __future__ import annotations

import factory
from django.contrib.auth.models import User
from django.utils import timezone

from communities import services
from communities.models import (
    Block,
    Community,
    DeliveryMode,
    Household,
    Member,
    MemberKind,
    RoleAssignment,
)


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.Sequence(lambda n: f"user{n}@example.jp")
    first_name = factory.Sequence(lambda n: f"利用者{n}")
    password = factory.django.Password(None)


class CommunityFactory(factory.django.DjangoModelFactory[Community]):
    class Meta:
        model = Community

    name = factory.Sequence(lambda n: f"第{n}町内会")
    slug = factory.Sequence(lambda n: f"community-{n}")


class BlockFactory(factory.django.DjangoModelFactory[Block]):
    class Meta:
        model = Block

    community = factory.SubFactory(CommunityFactory)
    name = factory.Sequence(lambda n: f"{n}班")
    position = factory.Sequence(lambda n: n)


class HouseholdFactory(factory.django.DjangoModelFactory[Household]):
    class Meta:
        model = Household

    block = factory.SubFactory(BlockFactory)
    community = factory.SelfAttribute("block.community")
    label = factory.Sequence(lambda n: f"世帯{n}")
    circulation_order = factory.Sequence(lambda n: n)
    delivery_mode = DeliveryMode.APP


class MemberFactory(factory.django.DjangoModelFactory[Member]):
    class Meta:
        model = Member

    household = factory.SubFactory(HouseholdFactory)
    user = factory.SubFactory(UserFactory)
    display_name = factory.Sequence(lambda n: f"住民{n}")
    kind = MemberKind.RESIDENT
    consented_at = factory.LazyFunction(timezone.now)
    consent_version = services.CONSENT_VERSION


def give_role(
    *, user: User, community: Community, role: str, block: Block | None = None
) -> RoleAssignment:
    return services.role_assign(community=community, user=user, role=role, block=block)


def mfa_enable(user: User) -> None:
    """Give a user a TOTP authenticator, as an officer who turned on two-step login."""
    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

    TOTP.activate(user, generate_totp_secret())

"""Shared fixtures: a small association with every role, and real services when needed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from channels.layers import channel_layers
from django.contrib.auth.models import User
from django.test import override_settings

from communities.models import Block, Community, Household, RoleKind
from tests.factories import (
    BlockFactory,
    CommunityFactory,
    HouseholdFactory,
    MemberFactory,
    UserFactory,
    give_role,
    mfa_enable,
)

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Each test starts with an empty cache: rate-limit counters and cached renders
    must not leak from one test into the next (ids repeat after rollbacks)."""
    from django.core.cache import cache

    cache.clear()


def service_unavailable(reason: str) -> None:
    """In CI a test that needs a service fails; on a developer's machine it skips."""
    if IN_CI or os.environ.get("KAIRAN_CI_SERVICES"):
        pytest.fail(reason)
    pytest.skip(reason)


def _layer_config(kind: str, redis_url: str = "") -> dict[str, Any]:
    if kind == "memory":
        return {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    return {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [redis_url]},
    }


@pytest.fixture(params=["memory", "redis"])
def layer(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test against one channel layer backend; the layers are rebuilt each time."""
    redis = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    with override_settings(CHANNEL_LAYERS={"default": _layer_config(request.param, redis)}):
        channel_layers.backends = {}
        yield request.param
    channel_layers.backends = {}


@pytest.fixture
def memory_layer() -> Iterator[None]:
    """The in-memory layer, whatever REDIS_URL says, rebuilt for this test."""
    with override_settings(CHANNEL_LAYERS={"default": _layer_config("memory")}):
        channel_layers.backends = {}
        yield
    channel_layers.backends = {}


@pytest.fixture
def redis_url() -> str:
    """A real Redis on loopback (REDIS_URL, else 127.0.0.1:6379)."""
    import redis

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.ping()
        client.close()
    except redis.RedisError as error:
        service_unavailable(f"Redis is not reachable at {url}: {error}")
    return url


@dataclass
class Town:
    """One association with two blocks and a person in every role, plus a stranger."""

    community: Community
    block1: Block
    block2: Block
    household1: Household
    household2: Household
    chair: User
    officer: User
    leader1: User
    helper2: User
    resident1: User
    resident2: User
    other_community: Community
    other_chair: User
    other_resident: User


@pytest.fixture
def town(db: None) -> Town:
    community = CommunityFactory.create(name="さくら町内会", slug="sakura-test")
    block1 = BlockFactory.create(community=community, name="1班", position=1)
    block2 = BlockFactory.create(community=community, name="2班", position=2)
    household1 = HouseholdFactory.create(block=block1, label="山田")
    household2 = HouseholdFactory.create(block=block2, label="田中")
    chair, officer, leader1, helper2 = (UserFactory.create() for _ in range(4))
    give_role(user=chair, community=community, role=RoleKind.CHAIR)
    give_role(user=officer, community=community, role=RoleKind.OFFICER)
    give_role(user=leader1, community=community, role=RoleKind.BLOCK_LEADER, block=block1)
    give_role(user=helper2, community=community, role=RoleKind.HELPER, block=block2)
    for user in (chair, officer):
        mfa_enable(user)
    resident1 = MemberFactory.create(household=household1).user
    resident2 = MemberFactory.create(household=household2).user

    other = CommunityFactory.create(name="もみじ自治会", slug="momiji-test")
    other_block = BlockFactory.create(community=other, name="1組")
    other_household = HouseholdFactory.create(block=other_block, label="佐藤")
    other_chair = UserFactory.create()
    give_role(user=other_chair, community=other, role=RoleKind.CHAIR)
    mfa_enable(other_chair)
    other_resident = MemberFactory.create(household=other_household).user
    return Town(
        community=community,
        block1=block1,
        block2=block2,
        household1=household1,
        household2=household2,
        chair=chair,
        officer=officer,
        leader1=leader1,
        helper2=helper2,
        resident1=resident1,
        resident2=resident2,
        other_community=other,
        other_chair=other_chair,
        other_resident=other_resident,
    )

"""One association's queries read that association's rows, however big the city grows.

PostgreSQL picks its plans by cost: for a circular of a few hundred households it used to
answer the paper rule (``paper_q``: does any member of the household have a working
login?) by hashing every member and user of the *city*, once per query. Each confirm
recounts its circular, so the whole city's size landed on every confirmation (210 ms per
count at 100,000 households). Here a small association sits in a city of 20,000
households, and the plans of the queries over one whole circular or association must
not scan the city-wide tables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.models import QuerySet

from bench.city import City, load
from circulars import questions, safety, selectors
from circulars.models import Circular, Receipt
from communities.models import Community
from communities.selectors import (
    Access,
    community_access_for,
    household_list_get,
    households_visible,
)
from notifications import ladder

CITY_WIDE = re.compile(r"Seq Scan on (communities_member|auth_user|communities_household)\b")


@pytest.fixture(scope="module")
def city(django_db_setup: None, django_db_blocker: Any) -> Iterator[City]:
    if connection.vendor != "postgresql":
        pytest.skip("query plans are PostgreSQL's")
    with django_db_blocker.unblock():
        city = load(households=20_000, main_households=400, main_blocks=8, sessions=0, pool=0)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        yield city
        # The module's city leaves with it: the other tests expect an empty database.
        with connection.cursor() as cursor:
            cursor.execute(
                "TRUNCATE circulars_receipt, circulars_circular, communities_member, "
                "communities_household, communities_block, communities_roleassignment, "
                "communities_community, auth_user, django_session CASCADE"
            )


def explain(sql: str, params: Any = None) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def plan(queryset: QuerySet[Any]) -> str:
    return explain(*queryset.query.sql_with_params())


def plans_of(call: Callable[[], object]) -> list[str]:
    """The plans of every SELECT that ``call`` runs."""
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        call()
    return [
        explain(query["sql"])
        for query in queries.captured_queries
        if query["sql"].lstrip().upper().startswith("SELECT")
    ]


def chair_access(city: City) -> Access:
    community = Community.objects.get(pk=city.community_id)
    return community_access_for(community=community, user_id=city.chair_id)


@pytest.mark.django_db
def test_counting_a_circular_reads_no_other_association(city: City) -> None:
    scanned = [
        CITY_WIDE.findall(text)
        for text in plans_of(
            lambda: (
                selectors.ledger_counts(circular_id=city.page_circular_id),
                selectors.ledger_block_counts(circular_id=city.page_circular_id),
            )
        )
    ]
    assert scanned == [[], []]
    counts = selectors.ledger_counts(circular_id=city.page_circular_id)
    assert counts.total == 400 and counts.confirmed == 200  # the filter drops no receipt


@pytest.mark.django_db
def test_the_ledger_followup_households_safety_and_ladder_read_no_other_association(
    city: City,
) -> None:
    access = chair_access(city)
    circular = Circular.objects.get(pk=city.page_circular_id)
    texts = plans_of(lambda: selectors.ledger_snapshot(access=access, circular=circular))
    texts += plans_of(lambda: selectors.followup_receipts(access=access))
    texts += [
        plan(households_visible(access=access)),
        plan(ladder._digital_receipts(circular)),
        plan(safety._annotated(selectors.circular_receipts(circular))),
    ]
    assert [CITY_WIDE.findall(text) for text in texts] == [[] for _ in texts]
    assert (
        selectors.circular_receipts(circular).count()
        == Receipt.objects.filter(circular=circular).count()
    )
    assert selectors.circular_receipts(circular.pk).count() == 400


@pytest.mark.django_db
def test_the_folded_household_list_and_answers_read_no_other_association(city: City) -> None:
    """Past PAGE_ROWS_MAX both pages count each block instead of listing rows: those
    per-block counts (the paper rule again, and whether each receipt has answers) too."""
    access = chair_access(city)
    circular = Circular.objects.get(pk=city.page_circular_id)
    listing = household_list_get(access=access)
    sheet = questions.answers_rows(access=access, circular=circular, fold=True)
    assert listing.rows_folded and sheet.rows_folded  # 400 households: the folded pages
    assert sum(item.households for item in listing.blocks) == 400
    assert sum(item.households for item in sheet.blocks) == 400
    texts = plans_of(lambda: household_list_get(access=access))
    texts += plans_of(lambda: questions.answers_rows(access=access, circular=circular, fold=True))
    assert len(texts) >= 4
    assert [CITY_WIDE.findall(text) for text in texts] == [[] for _ in texts]

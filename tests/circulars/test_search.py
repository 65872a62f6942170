"""Inbox search in the way Japanese is typed: kana, width and case do not matter."""

from __future__ import annotations

import pytest

from circulars.search import search_normalise
from circulars.selectors import inbox
from communities.selectors import community_access_for
from tests.circulars.test_paper import publish
from tests.conftest import Town

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("ごみ", "ゴミ収集日"),
        ("ｺﾞﾐ", "ごみ収集日"),
        ("ＡＢＣ", "abc祭り"),
        ("ごみ", "ごみ収集日の変更"),
    ],
)
def test_normalised_forms_match(typed: str, stored: str) -> None:
    assert search_normalise(typed) in search_normalise(stored)


def test_inbox_search_finds_katakana_with_hiragana_and_half_width(town: Town) -> None:
    publish(town, title="ゴミ収集日の変更について")
    publish(town, title="夏祭りのお知らせ")
    access = community_access_for(community=town.community, user_id=town.resident1.pk)
    for query in ("ごみ収集", "ｺﾞﾐ収集", "ごみ 収集"):
        titles = [item.circular.title for item in inbox(access=access, query=query)]
        assert titles == ["ゴミ収集日の変更について"], query
    assert inbox(access=access, query="ふゆ") == []

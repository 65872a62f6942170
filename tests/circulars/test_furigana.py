"""Furigana: readings from the real analyser, okurigana left bare, text kept exactly."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circulars import furigana
from circulars.furigana import (
    Segment,
    furigana_for_circular,
    furigana_segments,
    furigana_words,
    ruby_html,
)


def readings(text: str, **kwargs: Any) -> dict[str, str]:
    return {s.text: s.reading for s in furigana_segments(text, **kwargs) if s.reading}


def joined(segments: list[Segment]) -> str:
    return "".join(s.text for s in segments)


# --- readings -------------------------------------------------------------------------


def test_title_of_a_typical_circular() -> None:
    segments = furigana_segments("ごみ収集日の変更について")
    assert joined(segments) == "ごみ収集日の変更について"
    assert readings("ごみ収集日の変更について") == {
        "収集": "しゅうしゅう",
        "日": "ひ",
        "変更": "へんこう",
    }
    # Kana-only stretches carry no ruby and are merged into one segment.
    assert segments[0] == Segment("ごみ")
    assert segments[-1] == Segment("について")


def test_burnable_rubbish_leaves_the_okurigana_bare() -> None:
    assert furigana_segments("燃えるごみ") == [Segment("燃", "も"), Segment("えるごみ")]


def test_prefix_and_okurigana_around_one_kanji() -> None:
    assert furigana_segments("お知らせ") == [
        Segment("お"),
        Segment("知", "し"),
        Segment("らせ"),
    ]


def test_next_month_it_changes() -> None:
    assert furigana_segments("来月から変わります") == [
        Segment("来月", "らいげつ"),
        Segment("から"),
        Segment("変", "か"),
        Segment("わります"),
    ]


def test_okurigana_between_two_kanji() -> None:
    assert furigana_segments("取り扱い") == [
        Segment("取", "と"),
        Segment("り"),
        Segment("扱", "あつか"),
        Segment("い"),
    ]


def test_alignment_failure_puts_the_whole_reading_on_the_whole_word() -> None:
    assert furigana._align("変わる", "かわる") == [Segment("変", "か"), Segment("わる")]
    assert furigana._align("変わる", "ちがう") == [Segment("変わる", "ちがう")]


def test_readings_are_hiragana() -> None:
    for segment in furigana_segments("町内会の総会を公民館で行います。"):
        if segment.reading:
            assert all("\u3041" <= ch <= "\u309f" for ch in segment.reading), segment


def test_kanji_repeat_mark_and_ke_belong_to_the_ruby() -> None:
    assert Segment("佐々木", "ささき") in furigana_segments("佐々木さん")
    assert Segment("ヶ月", "かげつ") in furigana_segments("一ヶ月")


def test_placeholder_circles_are_not_read_as_zero() -> None:
    assert furigana_segments("〇〇町")[0] == Segment("〇〇")


def test_dates_read_as_dates() -> None:
    assert readings("8月1日（金）")["1日"] == "ついたち"
    assert readings("毎月 1日")["1日"] == "ついたち"
    assert readings("1日2回")["1日"] == "いちにち"
    assert readings("20日")["20日"] == "はつか"
    assert readings("３日間")["３日間"] == "みっかかん"
    assert furigana_segments("15日") == [Segment("15"), Segment("日", "にち")]


def test_unknown_word_has_no_ruby_but_is_offered_for_correction() -> None:
    assert furigana_segments("龘が") == [Segment("龘が")]
    assert ("龘", "") in furigana_words("龘が")


def test_latin_and_urls_are_untouched() -> None:
    text = "詳しくは https://example.jp/gomi をご覧ください。"
    segments = furigana_segments(text)
    assert joined(segments) == text
    assert Segment("しくは https://example.jp/gomi をご") in segments
    assert furigana_segments("https://example.jp/gomi") == [Segment("https://example.jp/gomi")]


def test_line_breaks_and_spaces_are_kept() -> None:
    text = "  第1班\n\n\t回覧板  \r\n終わり "
    segments = furigana_segments(text)
    assert joined(segments) == text
    assert segments[0] == Segment("  ")
    assert Segment("1") in segments
    assert Segment("回覧板", "かいらんばん") in segments or Segment("回覧", "かいらん") in segments


# --- overrides ------------------------------------------------------------------------


def test_override_of_one_token() -> None:
    assert readings("ごみ収集日", overrides={"日": "び"}) == {"収集": "しゅうしゅう", "日": "び"}


def test_override_spanning_several_tokens_wins_over_shorter_keys() -> None:
    overrides = {"日": "にち", "収集日": "しゅうしゅうび"}
    segments = furigana_segments("ごみ収集日の変更", overrides=overrides)
    assert segments[:2] == [Segment("ごみ"), Segment("収集日", "しゅうしゅうび")]


def test_override_keeps_to_word_boundaries() -> None:
    # 「日」 corrects the word 日, not the 日 inside 日曜.
    segments = furigana_segments("日曜日", overrides={"日": "び"})
    assert segments == [Segment("日曜", "にちよう"), Segment("日", "び")]


def test_override_of_the_kanji_part_keeps_the_okurigana_bare() -> None:
    segments = furigana_segments("変わります", overrides={"変": "へん"})
    assert segments == [Segment("変", "へん"), Segment("わります")]


def test_override_with_okurigana_is_aligned() -> None:
    segments = furigana_segments("来月から変わります", overrides={"変わります": "カワリマス"})
    assert segments[-2:] == [Segment("変", "か"), Segment("わります")]


def test_empty_override_removes_the_ruby() -> None:
    assert furigana_segments("来月", overrides={"来月": ""}) == [Segment("来月")]


def test_words_for_the_correction_form() -> None:
    words = furigana_words("ごみ収集日の変更について。収集日は日曜日です。")
    assert words == [
        ("収集", "しゅうしゅう"),
        ("日", "ひ"),
        ("変更", "へんこう"),
        ("日曜", "にちよう"),
    ]
    corrected = furigana_words("ごみ収集日", overrides={"収集日": "しゅうしゅうび"})
    assert corrected == [("収集日", "しゅうしゅうび")]


# --- the text survives, whatever it is --------------------------------------------------

JAPANESE = (
    "あいうえおかがきぎっゃゅょをんアイウエオカガッャーヴヶヵ"
    "日本語収集変更来月燃知取扱回覧板町内会々〆〇"
    "、。「」（）・！？　"
)
ASCII = "abcXYZ019 :/.-_<>&\"'"
WHITESPACE = "\n\r\t \u3000"
EMOJI = "😀🗑️👴🏻🇯🇵"

mixed_text = st.text(alphabet=st.sampled_from(list(JAPANESE + ASCII + WHITESPACE + EMOJI)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(mixed_text, st.text()))
def test_every_character_is_kept(text: str) -> None:
    segments = furigana_segments(text)
    assert joined(segments) == text
    for segment in segments:
        assert segment.text
        if segment.reading is not None:
            assert segment.reading
            assert furigana._has_kanji(segment.text)
    # Plain neighbours are always merged.
    for left, right in itertools.pairwise(segments):
        assert left.reading is not None or right.reading is not None


@settings(max_examples=100, deadline=None)
@given(
    text=mixed_text,
    overrides=st.dictionaries(
        st.text(alphabet=st.sampled_from(list(JAPANESE)), min_size=1, max_size=3),
        st.text(alphabet=st.sampled_from(list("あいうかがアイ")), max_size=4),
        max_size=4,
    ),
)
def test_every_character_is_kept_with_overrides(text: str, overrides: dict[str, str]) -> None:
    assert joined(furigana_segments(text, overrides=overrides)) == text


def test_concurrent_use_of_the_shared_tagger() -> None:
    texts = ["ごみ収集日の変更について", "来月から変わります", "取り扱いにご注意ください"] * 10
    expected = [furigana_segments(text) for text in texts]
    results: list[list[list[Segment]]] = [[] for _ in range(8)]

    def work(slot: int) -> None:
        results[slot] = [furigana_segments(text) for text in texts]

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(result == expected for result in results)


# --- HTML -----------------------------------------------------------------------------


def test_ruby_html() -> None:
    html = ruby_html(furigana_segments("燃えるごみ\n来月"))
    assert html == "<ruby>燃<rt>も</rt></ruby>えるごみ<br><ruby>来月<rt>らいげつ</rt></ruby>"


def test_ruby_html_escapes_the_body() -> None:
    body = '<script>alert("収集")</script>\n<img src=x onerror="日">'
    html = ruby_html(furigana_segments(body))
    assert "<script" not in html
    assert "<img" not in html
    assert '"' not in html
    assert html.count("<br>") == 1
    assert "&lt;script&gt;" in html
    assert "<ruby>収集<rt>しゅうしゅう</rt></ruby>" in html


def test_ruby_html_escapes_readings_and_windows_line_breaks() -> None:
    html = ruby_html([Segment("日", '<b>"び"</b>'), Segment("a\r\nb\rc")])
    assert html == "<ruby>日<rt>&lt;b&gt;&quot;び&quot;&lt;/b&gt;</rt></ruby>a<br>b<br>c"


def test_override_readings_are_escaped() -> None:
    html = ruby_html(furigana_segments("来月", overrides={"来月": "<script>"}))
    assert "<script>" not in html


# --- the cache ------------------------------------------------------------------------


@pytest.fixture
def own_cache(settings: Any) -> None:
    """A private in-memory cache, whatever the environment configures."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "furigana-tests",
        }
    }


@pytest.fixture
def tokenise_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every text handed to the real analyser (which still does the work)."""
    calls: list[str] = []
    real: Callable[[str], list[Any]] = furigana._tokenise

    def counting(text: str) -> list[Any]:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(furigana, "_tokenise", counting)
    yield calls


@pytest.mark.usefixtures("own_cache")
def test_the_same_revision_is_analysed_once(tokenise_calls: list[str]) -> None:
    arguments: dict[str, Any] = {
        "circular_id": 7,
        "revision": 1,
        "title": "ごみ収集日の変更について",
        "body": "来月から変わります。\n燃えるごみは月曜日です。",
        "overrides": {"収集日": "しゅうしゅうび"},
    }
    first = furigana_for_circular(**arguments)
    assert tokenise_calls
    assert first[0][1] == Segment("収集日", "しゅうしゅうび")
    assert joined(first[1]) == arguments["body"]

    tokenise_calls.clear()
    assert furigana_for_circular(**arguments) == first
    assert tokenise_calls == []


@pytest.mark.usefixtures("own_cache")
def test_a_new_revision_or_correction_or_draft_edit_is_analysed_again(
    tokenise_calls: list[str],
) -> None:
    base: dict[str, Any] = {
        "circular_id": 8,
        "revision": 1,
        "title": "お知らせ",
        "body": "収集日",
        "overrides": {},
    }
    furigana_for_circular(**base)
    changes: list[dict[str, Any]] = [
        {"revision": 2},
        {"overrides": {"日": "び"}},
        {"body": "収集日が変わります"},  # a draft is edited without a new revision
        {"circular_id": 9},
    ]
    for change in changes:
        tokenise_calls.clear()
        furigana_for_circular(**(base | change))
        assert tokenise_calls, change


def test_the_tagger_is_created_once() -> None:
    furigana_segments("一回目")
    tagger = furigana._tagger
    furigana_segments("二回目")
    assert tagger is not None
    assert furigana._tagger is tagger

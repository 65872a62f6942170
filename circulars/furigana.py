"""Furigana: readings for the kanji in a circular, from fugashi + unidic-lite.

Many residents are over 70 and some read kanji poorly, so a circular can be shown (and
printed) with its readings above the kanji. The analyser guesses; an officer corrects a
guess with an override (word → reading) before publishing.

Ruby covers only the kanji, never the okurigana: 変わります → 変(か)わります, which is
how a printed 回覧 would carry it and keeps the kana line short.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.cache import cache
from django.utils.html import escape, urlize
from django.utils.safestring import SafeString, mark_safe

if TYPE_CHECKING:
    from circulars.models import Circular

logger = logging.getLogger(__name__)

# Entries are keyed by content, so they never go stale; the timeout only frees memory.
CACHE_TIMEOUT = 60 * 60 * 24 * 30
# Bump when the output for the same input changes (analyser upgrade, alignment fix).
CACHE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of text; `reading` (hiragana) only when the run contains kanji."""

    text: str
    reading: str | None = None


# --- characters ---------------------------------------------------------------------

# 々 (repeat mark), 〆 and ヶ/ヵ (as in ヶ月, 一ヵ所) read like kanji, so the ruby must cover
# them. 〇 is left out: in circulars it is a placeholder (〇月〇日), not 零.
_KANJI_RE = re.compile(
    "[\u3005\u3006\u30f5\u30f6\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]"
)
_KANJI_RUNS_RE = re.compile(rf"{_KANJI_RE.pattern}+")
_KATAKANA_RE = re.compile("[\u30a1-\u30f6\u30fd\u30fe]")


def _has_kanji(text: str) -> bool:
    return _KANJI_RE.search(text) is not None


def _hiragana(text: str) -> str:
    """Katakana → hiragana; everything else (ー, ヷ, latin) as it was."""
    return _KATAKANA_RE.sub(lambda m: chr(ord(m.group()) - 0x60), text)


# --- the analyser ---------------------------------------------------------------------

# MeCab's tagger keeps state between calls and is not thread-safe; one per process, used
# under a lock (creating one takes tens of milliseconds and loads the dictionary).
_tagger: Any = None
_tagger_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class _Token:
    surface: str
    reading: str | None  # hiragana, None when the dictionary has none (unknown word)


def _token_reading(feature: Any) -> str | None:
    for name in ("kana", "pron"):
        value = getattr(feature, name, None)
        if value and value != "*":
            return _hiragana(str(value))
    return None


def _tokenise(text: str) -> list[_Token]:
    """The analyser's tokens for `text` (whitespace is dropped by MeCab)."""
    global _tagger
    with _tagger_lock:
        if _tagger is None:
            import fugashi

            _tagger = fugashi.Tagger()
        # Read every field while holding the lock: nodes point into the tagger's buffer.
        return [
            _Token(surface=node.surface, reading=_token_reading(node.feature))
            for node in _tagger(text)
        ]


# --- alignment ------------------------------------------------------------------------


def _align(surface: str, reading: str) -> list[Segment]:
    """Split `surface` so that each kanji run carries its part of `reading`.

    The kana between kanji runs must appear literally in the reading: 取り扱い / とりあつかい
    → 取(と) り 扱(あつか) い. When they do not (irregular readings, latin inside a word),
    the whole reading goes on the whole word.
    """
    parts = [part for part in re.split(f"({_KANJI_RUNS_RE.pattern})", surface) if part]
    pattern = "".join(
        "(.+?)" if _KANJI_RE.match(part) else f"({re.escape(_hiragana(part))})" for part in parts
    )
    match = re.fullmatch(pattern, reading, flags=re.DOTALL)
    if match is None:
        return [Segment(surface, reading)]
    return [
        Segment(part, read if _KANJI_RE.match(part) else None)
        for part, read in zip(parts, match.groups(), strict=True)
    ]


# --- words ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Word:
    """A stretch of the original text: one token, one override, or plain text between."""

    text: str
    reading: str | None  # None: no reading known (plain text, unknown word)
    overridden: bool = False


def _clean_overrides(overrides: Mapping[str, str] | None) -> dict[str, str]:
    if not overrides:
        return {}
    return {key: _hiragana(value.strip()) for key, value in overrides.items() if key}


def _words_in_line(line: str, overrides: Mapping[str, str]) -> list[_Word]:
    try:
        tokens = _tokenise(line)
    except UnicodeError:  # e.g. a lone surrogate: no readings, but keep the text
        tokens = []

    # Where each token sits in the line. MeCab drops whitespace, and a token is only
    # trusted if nothing but whitespace lies between it and the previous one, so the
    # original text is always rebuilt from the line itself, never from the analyser.
    spans: list[tuple[int, int, str | None]] = []
    position = 0
    for token in tokens:
        if not token.surface:
            continue
        start = line.find(token.surface, position)
        if start < 0 or line[position:start].strip():
            continue
        end = start + len(token.surface)
        spans.append((start, end, token.reading))
        position = end

    ends = {end for _, end, _ in spans}
    keys = sorted(overrides, key=len, reverse=True)
    words: list[_Word] = []
    position = 0
    index = 0
    while index < len(spans):
        start, end, reading = spans[index]
        if start > position:
            words.append(_Word(line[position:start], None))
        # The longest override that starts at this token and ends where a token ends:
        # 「収集日」 replaces 収集 + 日, but 「日」 does not touch the 日 inside 日曜.
        key = next((k for k in keys if line.startswith(k, start) and start + len(k) in ends), None)
        if key is not None:
            words.append(_Word(key, overrides[key], overridden=True))
            position = start + len(key)
            while index < len(spans) and spans[index][0] < position:
                index += 1
            continue
        words.append(_Word(line[start:end], reading))
        position = end
        index += 1
    if position < len(line):
        words.append(_Word(line[position:], None))
    return words


# Days of the month and counts of days read irregularly, and UniDic gets them wrong
# (8月1日 → 日(か)); dates are in nearly every circular. Other numbers read 〜にち.
_DAY_READINGS = {
    2: "ふつか",
    3: "みっか",
    4: "よっか",
    5: "いつか",
    6: "むいか",
    7: "なのか",
    8: "ようか",
    9: "ここのか",
    10: "とおか",
    14: "じゅうよっか",
    20: "はつか",
    24: "にじゅうよっか",
}


def _fix_days(words: list[_Word]) -> list[_Word]:
    """`<number>日` as one word with its reading: 1日 → ついたち after 月, else いちにち."""
    fixed: list[_Word] = []
    for word in words:
        previous = fixed[-1] if fixed else None
        if (
            word.text in ("日", "日間")
            and not word.overridden
            and previous is not None
            and not previous.overridden
            and previous.text.isdecimal()
            and len(previous.text) <= 2
        ):
            number = int(previous.text)
            suffix = "かん" if word.text == "日間" else ""
            if number == 1:
                before = next((w.text for w in reversed(fixed[:-1]) if w.text.strip()), "")
                on_date = before.endswith("月") and not suffix
                reading = "ついたち" if on_date else "いちにち"
            else:
                reading = _DAY_READINGS.get(number, "")
            if reading:
                fixed[-1] = _Word(previous.text + word.text, reading + suffix)
            else:
                fixed.append(_Word(word.text, "にち" + suffix))
            continue
        fixed.append(word)
    return fixed


def _words(text: str, overrides: Mapping[str, str]) -> list[_Word]:
    words: list[_Word] = []
    # Line by line: a line is a natural sentence boundary, and MeCab never sees "\n".
    for number, line in enumerate(text.split("\n")):
        if number:
            words.append(_Word("\n", None))
        if line:
            words.extend(_fix_days(_words_in_line(line, overrides)))
    return words


def _segments_of(word: _Word, overrides: Mapping[str, str]) -> list[Segment]:
    if not _has_kanji(word.text):
        return [Segment(word.text)]
    if word.overridden and not word.reading:
        return [Segment(word.text)]  # the officer removed the reading on purpose
    segments = [Segment(word.text)] if word.reading is None else _align(word.text, word.reading)
    if word.overridden:
        return segments
    # An override for the kanji part of a word: 「変」 → か also fixes 変わります.
    return [
        Segment(s.text, overrides[s.text] or None)
        if s.text in overrides and _KANJI_RUNS_RE.fullmatch(s.text)
        else s
        for s in segments
    ]


def _merge_plain(segments: Iterable[Segment]) -> list[Segment]:
    merged: list[Segment] = []
    for segment in segments:
        if not segment.text:
            continue
        if segment.reading is None and merged and merged[-1].reading is None:
            merged[-1] = Segment(merged[-1].text + segment.text)
        else:
            merged.append(segment)
    return merged


# --- public API -----------------------------------------------------------------------


def furigana_segments(text: str, *, overrides: Mapping[str, str] | None = None) -> list[Segment]:
    """`text` cut into segments, readings (hiragana) on the kanji parts only.

    `"".join(s.text for s in segments) == text` always holds. `overrides` maps a word as
    it appears in the text (one token, several tokens, or the kanji part of a token) to
    its corrected reading; an empty reading removes the ruby from that word.
    """
    clean = _clean_overrides(overrides)
    return _merge_plain(
        segment for word in _words(text, clean) for segment in _segments_of(word, clean)
    )


def furigana_words(
    text: str, *, overrides: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """The distinct (word, reading) pairs with kanji, in order of first appearance.

    For the officer's correction form. A word the dictionary does not know comes with an
    empty reading, so that the officer can supply one.
    """
    clean = _clean_overrides(overrides)
    seen: dict[tuple[str, str], None] = {}
    for word in _words(text, clean):
        if _has_kanji(word.text):
            seen.setdefault((word.text, word.reading or ""), None)
    return list(seen)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _dump(segments: Sequence[Segment]) -> list[list[str | None]]:
    return [[s.text, s.reading] for s in segments]


def _load(data: Sequence[Sequence[str | None]]) -> list[Segment]:
    return [Segment(str(text), reading) for text, reading in data]


def furigana_for_circular(
    *, circular_id: int, revision: int, title: str, body: str, overrides: Mapping[str, str]
) -> tuple[list[Segment], list[Segment]]:
    """Title and body segments for a circular, analysed once per revision and overrides.

    The key also carries a digest of the text: a draft is edited without a new revision,
    and a stale reading on a notice for the elderly is worse than a second analysis.
    """
    overrides_json = json.dumps(sorted(overrides.items()), ensure_ascii=False)
    overrides_digest = _digest(overrides_json)
    text_digest = _digest(title, body)
    key = (
        f"circulars:furigana:v{CACHE_VERSION}:{circular_id}:{revision}"
        f":{overrides_digest}:{text_digest}"
    )
    try:
        cached = cache.get(key)
    except Exception:  # a cache outage costs time, never the page
        logger.warning("furigana cache read failed", exc_info=True)
        cached = None
    if cached is not None:
        return _load(cached[0]), _load(cached[1])

    title_segments = furigana_segments(title, overrides=overrides)
    body_segments = furigana_segments(body, overrides=overrides)
    try:
        cache.set(key, [_dump(title_segments), _dump(body_segments)], CACHE_TIMEOUT)
    except Exception:
        logger.warning("furigana cache write failed", exc_info=True)
    return title_segments, body_segments


def ruby_html(segments: Iterable[Segment]) -> SafeString:
    """Segments as HTML: `<ruby>漢字<rt>かんじ</rt></ruby>`, line breaks as `<br>`.

    Every text and reading is escaped here; this is the only place where furigana HTML
    is made from user text.
    """
    parts: list[str] = []
    plain: list[str] = []

    def flush() -> None:
        # Runs of unannotated text get the same auto-linking as the page without furigana.
        if plain:
            text = "".join(plain).replace("\r\n", "\n").replace("\r", "\n")
            parts.append(urlize(text, nofollow=True, autoescape=True).replace("\n", "<br>"))
            plain.clear()

    for segment in segments:
        if segment.reading:
            flush()
            text = escape(segment.text)
            parts.append(f"<ruby>{text}<rt>{escape(segment.reading)}</rt></ruby>")
        else:
            plain.append(segment.text)
    flush()
    return mark_safe("".join(parts))  # noqa: S308 - escaped above or by urlize(autoescape)


def circular_ruby_html(*, circular: Circular) -> tuple[SafeString, SafeString]:
    """The circular's title and body with furigana, from the cache for its revision."""
    title, body = furigana_for_circular(
        circular_id=circular.pk,
        revision=circular.revision,
        title=circular.title,
        body=circular.body,
        overrides=circular.furigana_overrides or {},
    )
    return ruby_html(title), ruby_html(body)

"""The Japanese catalogue is complete, compiled, uses the product's words, and is served.

The UI is written with English msgids; residents read the ``ja`` catalogue. A msgid with no
msgstr would show English to a 70-year-old, so an incomplete catalogue fails the suite.
"""

from __future__ import annotations

import ast
import gettext
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

PO = Path(settings.BASE_DIR) / "locale" / "ja" / "LC_MESSAGES" / "django.po"
MO = PO.with_suffix(".mo")
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]|%[sd]")

# The product's fixed words (see the brief): msgid -> the exact Japanese.
GLOSSARY = {
    "Help": "困ったとき",
    "Larger text": "文字を大きく",
    "High contrast": "高コントラスト",
    "Log in": "ログイン",
    "Log out": "ログアウト",
    "My data": "自分の情報",
    "New year": "年度切替",
    "Join": "参加する",
    "Paper": "紙",
    "App": "アプリ",
    "App and paper": "アプリと紙",
    "Chair": "会長",
    "Officer": "役員",
    "Block leader": "班長",
    "Helper": "お手伝い",
    "Block": "班",
    "Households": "世帯",
    "I have read it": "確認しました",
    "Confirmed": "確認済み",
    "Delivery status": "配布状況",
}

needs_msgfmt = pytest.mark.skipif(
    shutil.which("msgfmt") is None, reason="gettext (msgfmt) is not installed"
)


@dataclass
class Entry:
    msgid: str
    msgid_plural: str | None = None
    msgstrs: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)


def _catalogue() -> list[Entry]:
    """The live (non-obsolete) entries of the .po file, header excluded."""
    entries: list[Entry] = []
    for block in PO.read_text(encoding="utf-8").split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith("#~")]
        fields: dict[str, list[str]] = {}
        flags: set[str] = set()
        current = ""
        for line in lines:
            if line.startswith("#,"):
                flags |= {flag.strip() for flag in line[2:].split(",")}
            elif line.startswith("#") or not line.strip():
                continue
            elif match := re.match(
                r"^(msgctxt|msgid_plural|msgid|msgstr(?:\[\d+\])?) (\".*\")$", line
            ):
                current = match[1]
                fields[current] = [match[2]]
            else:
                fields[current].append(line.strip())
        if "msgid" not in fields:
            continue
        text = {
            key: "".join(ast.literal_eval(part) for part in parts) for key, parts in fields.items()
        }
        if text["msgid"] == "":
            continue
        strs = [value for key, value in sorted(text.items()) if key.startswith("msgstr")]
        entries.append(Entry(text["msgid"], text.get("msgid_plural"), strs, flags))
    return entries


@needs_msgfmt
def test_msgfmt_reports_everything_translated() -> None:
    result = subprocess.run(
        ["msgfmt", "--check", "--statistics", "-o", "/dev/null", str(PO)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    stats = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ translated messages\.", stats), stats
    assert int(stats.split()[0]) == len(_catalogue())


def test_every_entry_has_a_translation_and_no_fuzzy_flag() -> None:
    entries = _catalogue()
    assert len(entries) > 100
    empty = [entry.msgid for entry in entries if not all(entry.msgstrs) or not entry.msgstrs]
    fuzzy = [entry.msgid for entry in entries if "fuzzy" in entry.flags]
    assert not empty, f"untranslated: {empty}"
    assert not fuzzy, f"fuzzy: {fuzzy}"
    header = PO.read_text(encoding="utf-8").split("\n\n", 1)[0]
    assert "#, fuzzy" not in header
    assert '"Language: ja\\n"' in header
    assert '"Plural-Forms: nplurals=1; plural=0;\\n"' in header


def test_placeholders_survive_translation() -> None:
    for entry in _catalogue():
        expected = sorted(PLACEHOLDER.findall(entry.msgid))
        for msgstr in entry.msgstrs:
            assert sorted(PLACEHOLDER.findall(msgstr)) == expected, (entry.msgid, msgstr)


def test_plural_entries_have_one_form() -> None:
    plurals = [entry for entry in _catalogue() if entry.msgid_plural is not None]
    assert plurals
    for entry in plurals:
        assert len(entry.msgstrs) == 1, entry.msgid


def test_the_product_words_are_used() -> None:
    translations = {entry.msgid: entry.msgstrs[0] for entry in _catalogue()}
    for msgid, word in GLOSSARY.items():
        if msgid in translations:
            assert translations[msgid] == word, msgid
    assert "Help" in translations
    assert "Larger text" in translations


def test_the_compiled_catalogue_matches_the_po_file() -> None:
    """The committed .mo is what Django serves: it must not lag behind the .po."""
    with MO.open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    for entry in _catalogue():
        if entry.msgid_plural is None:
            assert compiled.gettext(entry.msgid) == entry.msgstrs[0], (
                f"{entry.msgid!r}: run compilemessages"
            )
        else:
            assert compiled.ngettext(entry.msgid, entry.msgid_plural, 2) == entry.msgstrs[0], (
                f"{entry.msgid!r}: run compilemessages"
            )


@pytest.mark.django_db
def test_pages_speak_japanese_by_default(client: Client) -> None:
    page = client.get("/").content.decode()
    assert 'lang="ja"' in page
    for word in ("困ったとき", "文字を大きく", "高コントラスト", "ログイン"):
        assert word in page
    assert "Larger text" not in page

    help_page = client.get("/help/").content.decode()
    assert "招待カードが使えない" in help_page
    assert "The invite card does not work" not in help_page


@pytest.mark.django_db
def test_english_with_accept_language(client: Client) -> None:
    page = client.get("/", headers={"accept-language": "en"}).content.decode()
    assert 'lang="en"' in page
    assert "Help" in page
    assert "Larger text" in page
    assert "文字を大きく" not in page


@pytest.mark.django_db
def test_english_with_the_language_cookie(client: Client) -> None:
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
    page = client.get("/", headers={"accept-language": "ja"}).content.decode()
    assert "Larger text" in page
    assert "High contrast" in page
    assert "困ったとき" not in page

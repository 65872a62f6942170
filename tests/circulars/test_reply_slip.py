"""The paper side of circulars that ask, read back from the PDF: the tear-off reply slip at
the end of each household's copy (各戸配布) and the reply sheet of the circulating copy (回覧).

UI words are looked up through gettext (``ja``), so the checks hold before and after the
Japanese catalogue gains them; names, questions and options are the officer's own text.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import time_machine
from pypdf import PdfReader

from circulars import questions, services
from circulars.models import Circular, QuestionKind
from circulars.questions import QuestionData
from circulars.services import CircularData
from communities.models import DeliveryMode, Household, PaperDistribution
from tests.circulars.test_print_pack import ARTIFACTS, Pdf, fonts, pack, read_back, run, words
from tests.conftest import Town
from tests.e2e.live_browser import ja
from tests.factories import HouseholdFactory, MemberFactory

TOKYO = ZoneInfo("Asia/Tokyo")
TITLE = "清掃活動のお知らせ"
BODY = "6月の第一日曜日に公園の清掃をします。"
# (kind, prompt, choices), in the order the officer added them.
ASKED: list[tuple[str, str, list[str]]] = [
    (QuestionKind.ATTENDANCE, "清掃活動に参加しますか", []),
    (QuestionKind.SINGLE, "集合場所はどちらがよいですか", ["公民館", "公園の入口"]),
    (QuestionKind.MULTIPLE, "持って来られる道具", ["軍手", "ほうき", "ごみ袋"]),
    (QuestionKind.TEXT, "ご意見があればお書きください", []),
]
PAPER = [("青木", 30), ("石井", 10), ("上田", 20)]
COVER_NOTE = (
    "This circular asks questions: each household's copy ends with a tear-off reply slip (the "
    "circulating copy has a reply sheet). Enter returned answers with “Enter the answers” on "
    "the sign-off screen."
)


def compact(text: str) -> str:
    return re.sub(r"\s+", "", text)


def asking(town: Town, *, mode: str, asked: list[tuple[str, str, list[str]]] = ASKED) -> Circular:
    circular = services.circular_create(
        community=town.community,
        author=town.chair,
        data=CircularData(title=TITLE, body=BODY, due_date=date(2026, 6, 5)),
    )
    circular.paper_distribution = mode
    circular.save(update_fields=["paper_distribution"])
    for kind, prompt, choices in asked:
        questions.question_add(
            circular=circular, data=QuestionData(kind=kind, prompt=prompt, choices=choices)
        )
    return services.circular_publish(circular=circular)


def paper_households(town: Town) -> list[Household]:
    households = [
        HouseholdFactory.create(block=town.block1, label=label, circulation_order=order)
        for label, order in PAPER
    ]
    return sorted(households, key=lambda household: household.circulation_order)


def slip_pages(pdf: Pdf) -> list[tuple[int, str]]:
    """(page number, text) of every reply-slip page."""
    cut = ja("Cut along this line")
    return [(number, text) for number, text in enumerate(pdf.pages, start=1) if cut in text]


def assert_in_order(text: str, parts: list[str]) -> None:
    positions = [text.find(part) for part in parts]
    assert -1 not in positions, (parts, text)
    assert positions == sorted(positions), (parts, positions)


@pytest.fixture
def leader(town: Town) -> str:
    town.leader1.first_name = "鈴木 花子"
    town.leader1.save()
    return town.leader1.get_full_name()


@pytest.fixture(autouse=True)
def _june() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(datetime(2026, 6, 1, 9, 0, tzinfo=TOKYO), tick=False) as traveller:
        yield traveller


def test_each_copy_ends_with_a_reply_slip(town: Town, leader: str, tmp_path: Path) -> None:
    households = paper_households(town)
    circular = asking(town, mode=PaperDistribution.EACH)

    result = pack(circular, [town.block1])
    pdf = read_back(result, tmp_path)

    slips = slip_pages(pdf)
    assert len(slips) == len(households)
    # Each slip comes right after that household's copy of the circular (invite card, the
    # circular, then the slip), in circulation order.
    kinds = pdf.kinds()
    for (number, text), household in zip(slips, households, strict=True):
        assert kinds[number - 2] == "circular", kinds
        assert kinds[number - 3] == f"invite:{household.label}", kinds
        assert household.label in text
        for other in households:
            if other != household:
                assert other.label not in text
    for _number, text in slips:
        flat = compact(text)
        # Above the line: what to do; below it, the slip itself.
        cut, slip = compact(ja("Cut along this line")), compact(ja("Reply slip"))
        assert flat.index(cut) < flat.rindex(slip)
        # The questions in order, each with its options as boxes, in order.
        assert_in_order(
            flat,
            [
                # At the top of the slip, so that they go with it: when and to whom.
                "6月5日",
                leader.replace(" ", ""),
                "1." + ASKED[0][1],
                "□" + compact(ja("Attending")),
                "□" + compact(ja("Not attending")),
                "2." + ASKED[1][1],
                "(" + compact(ja("Choose one.")) + ")",
                "□公民館",
                "□公園の入口",
                "3." + ASKED[2][1],
                "(" + compact(ja("Choose as many as apply.")) + ")",
                "□軍手",
                "□ほうき",
                "□ごみ袋",
                "4." + ASKED[3][1],
            ],
        )
        assert flat.count("□") == 2 + 2 + 3  # no box for the written answer
        people = ja("Number: %(blank)s people").split("%(blank)s")
        assert compact(people[0]) in flat and compact(people[1]) in flat
    # The cover tells the helper about the slips.
    assert compact(ja(COVER_NOTE)) in compact(pdf.pages[0])

    embedded = fonts(pdf.path)
    assert embedded and all("BIZ-UDGothic" in name for name, _ in embedded), embedded
    assert all(flag == "yes" for _, flag in embedded), embedded

    ARTIFACTS.mkdir(exist_ok=True)
    first_slip = slips[0][0]
    run(
        "pdftoppm",
        "-png",
        "-r",
        "60",
        "-f",
        str(first_slip),
        "-l",
        str(first_slip),
        "-singlefile",
        str(pdf.path),
        str(ARTIFACTS / "reply-slip"),
    )


def test_slip_without_a_block_leader_names_who_collects_it(town: Town, tmp_path: Path) -> None:
    HouseholdFactory.create(block=town.block2, label="江藤")
    circular = asking(town, mode=PaperDistribution.EACH, asked=ASKED[:1])

    pdf = read_back(pack(circular, [town.block2]), tmp_path)

    [(_number, text)] = slip_pages(pdf)
    expected = ja("Hand it to: the block leader or helper of %(block)s") % {"block": "2班"}
    assert compact(expected) in compact(text)


def test_circulating_copy_gets_a_reply_sheet(town: Town, leader: str, tmp_path: Path) -> None:
    households = paper_households(town)
    both = HouseholdFactory.create(
        block=town.block1, label="江藤", circulation_order=40, delivery_mode=DeliveryMode.BOTH
    )
    member = MemberFactory.create(household=both)
    households.append(both)
    fifth = (QuestionKind.SINGLE, "反省会に参加しますか", ["はい", "いいえ"])
    circular = asking(town, mode=PaperDistribution.CIRCULATE, asked=[*ASKED, fifth])
    # 江藤 answered on the phone already: the sheet says so in its row.
    [attendance, *_rest] = questions.questions_for(circular=circular)
    questions.answers_submit(
        circular=circular,
        household=both,
        values={attendance.pk: {"attending": "yes", "people": "2"}},
        member=member,
        recorded_by=member.user,
        method="app",
    )

    result = pack(circular, [town.block1])
    pdf = read_back(result, tmp_path)

    kinds = pdf.kinds()
    assert kinds[:3] == ["cover:1班", "circular", "sheet"]
    assert slip_pages(pdf) == []  # no per-household copies in 回覧 mode
    # Right after the 回覧表; the cover mentions it too, so go by position.
    assert ja("Reply sheet") in pdf.pages[3]
    # Table cells read in document order (-raw), not in the columns of -layout.
    sheet = run("pdftotext", "-raw", "-f", "4", "-l", str(result.pages), str(pdf.path), "-")
    # Landscape, so that a row holds three questions' boxes.
    page = PdfReader(io.BytesIO(result.pdf)).pages[3]
    assert float(page.mediabox.width) > float(page.mediabox.height)
    # Two tables (four questions, then the fifth), each listing the households in order.
    flat = compact(sheet)
    first, second = flat.split("5." + fifth[1], 1)
    assert_in_order(first, [f"{n}.{prompt}" for n, (_kind, prompt, _c) in enumerate(ASKED, 1)])
    assert second.count("□いいえ") == len(households) - 1
    for table in (first, second):
        assert_in_order(table, [household.label for household in households])
    # Every household still to answer gets boxes for 出席/欠席 and each option; 江藤 not.
    assert first.count("□" + compact(ja("Attending"))) == len(households) - 1
    assert first.count("□公民館") == len(households) - 1
    assert first.count("□ごみ袋") == len(households) - 1
    assert flat.count(compact(ja("Answered on the phone"))) == 2  # once per table
    assert "6月5日" in flat


def test_large_print_and_furigana_reach_the_slip(town: Town, leader: str, tmp_path: Path) -> None:
    HouseholdFactory.create(block=town.block1, label="青木")
    circular = asking(town, mode=PaperDistribution.EACH, asked=ASKED[:2])

    normal = read_back(pack(circular, [town.block1]), tmp_path, "normal.pdf")
    large = read_back(pack(circular, [town.block1], large=True), tmp_path, "large.pdf")
    ruby = read_back(pack(circular, [town.block1], furigana=True), tmp_path, "ruby.pdf")

    def prompt_size(pdf: Pdf) -> float:
        [(number, _text)] = slip_pages(pdf)
        found = [word for word in words(pdf.path, number) if "公民館" in word.text]
        assert found
        return found[0].y1 - found[0].y0

    # In large print the whole slip still fits on its page (the pack's last page here).
    [(number, text)] = slip_pages(large)
    assert number == len(large.pages)
    assert_in_order(compact(text), [compact(ja("Household name")), "青木", "2." + ASKED[1][1]])
    assert prompt_size(normal) == pytest.approx(14, abs=0.3)
    assert prompt_size(large) == pytest.approx(20, abs=0.3)
    [(_number, text)] = slip_pages(ruby)
    assert "こうみんかん" in compact(text)
    assert "しゅうごう" in compact(text)
    [(_number, text)] = slip_pages(normal)
    assert "こうみんかん" not in compact(text)


def test_markup_in_questions_prints_as_plain_text(town: Town, tmp_path: Path) -> None:
    HouseholdFactory.create(block=town.block1, label="青木")
    prompt = '<b>参加</b> & "見学" <script>x</script>'
    circular = asking(
        town,
        mode=PaperDistribution.BOTH,
        asked=[(QuestionKind.SINGLE, prompt, ["<i>はい</i>", "いいえ"])],
    )
    for furigana in (False, True):
        pdf = read_back(pack(circular, [town.block1], furigana=furigana), tmp_path)
        [(_number, slip)] = slip_pages(pdf)
        reply = pdf.pages[pdf.kinds().index("sheet") + 1]
        for text in (slip, reply):
            flat = compact(text)
            # With furigana the reading of 参加 sits in the text flow between the tags.
            assert re.search(r"<b>(さんか)?参加(さんか)?</b>&\"見学", flat), flat
            assert "<script>x</script>" in flat
            assert "□<i>はい</i>" in flat

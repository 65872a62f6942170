"""Roster CSV: decoding what Excel writes, checking rows, applying all or nothing, export."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from communities import services
from communities.models import Block, DeliveryMode, Household, RosterImport
from communities.roster_csv import (
    EXPORT_HEADER,
    AlreadyApplied,
    decode,
    roster_export_csv,
    roster_import_apply,
    roster_import_create,
)
from tests.conftest import Town
from tests.factories import HouseholdFactory

pytestmark = pytest.mark.django_db

SAMPLE = (
    "世帯名,班,住所,電話,配布方法,備考\n"
    "鈴木,1班,さくら町1-1,090-1111-2222,アプリ,犬がいます\n"
    "高橋,2班,,,紙,\n"
)


def _create(town: Town, data: bytes, file_name: str = "名簿.csv") -> RosterImport:
    return roster_import_create(
        community=town.community, user=town.chair, file_name=file_name, data=data
    )


def _rows(roster_import: RosterImport) -> list[dict[str, Any]]:
    rows = roster_import.rows
    assert isinstance(rows, list)
    return rows


def _household_snapshot(town: Town) -> list[tuple[Any, ...]]:
    return list(
        Household.objects.filter(community=town.community)
        .order_by("pk")
        .values_list("pk", "block_id", "label", "address", "phone", "delivery_mode", "helper_note")
    )


# --- Decoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (SAMPLE.encode("utf-8"), "UTF-8"),
        (SAMPLE.encode("utf-8-sig"), "UTF-8"),
        (SAMPLE.encode("cp932"), "Shift_JIS"),
        (SAMPLE.encode("shift_jis"), "Shift_JIS"),
    ],
)
def test_decode(data: bytes, encoding: str) -> None:
    text, found = decode(data)
    assert found == encoding
    assert text == SAMPLE
    assert not text.startswith("\ufeff")


def test_decode_cp932_only_characters() -> None:
    # ① and 髙 exist in cp932 (Windows) but not in plain Shift_JIS.
    text = "世帯名,班\n髙橋①,1班\n"
    assert decode(text.encode("cp932")) == (text, "Shift_JIS")


@pytest.mark.parametrize(
    "data",
    [b"", b"   \r\n ", b"PK\x03\x04\x00\x00 excel", b"x" * (2 * 1024 * 1024 + 1)],
)
def test_decode_refuses(data: bytes) -> None:
    with pytest.raises(ValidationError):
        decode(data)


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (SAMPLE.encode("utf-8"), "UTF-8"),
        (SAMPLE.encode("utf-8-sig"), "UTF-8"),
        (SAMPLE.encode("cp932"), "Shift_JIS"),
    ],
)
def test_import_reads_every_encoding(town: Town, data: bytes, encoding: str) -> None:
    roster_import = _create(town, data)
    assert roster_import.encoding == encoding
    assert roster_import.error_count == 0
    rows = _rows(roster_import)
    assert [row["values"]["label"] for row in rows] == ["鈴木", "高橋"]
    assert rows[0]["values"] == {
        "label": "鈴木",
        "block": "1班",
        "address": "さくら町1-1",
        "phone": "090-1111-2222",
        "delivery_mode": DeliveryMode.APP,
        "helper_note": "犬がいます",
    }
    assert rows[1]["values"]["delivery_mode"] == DeliveryMode.PAPER


# --- Headers and rows -------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "世帯名,班,住所,電話,配布方法,備考",
        "世帯,組,住所,電話番号,配布,メモ",
        "氏名,班名,住所,tel,受け取り方,備考",
        "household,block,address,phone,delivery,note",
        "Label,Block,Address,TEL,Mode,Helper_Note",
        "name,BLOCK,address,phone,delivery_mode,helper_note",
        " 世帯名 ,ＢＬＯＣＫ,住所,電話,配布方法,備考",
    ],
)
def test_header_aliases(town: Town, header: str) -> None:
    data = f"{header}\n鈴木,1班,さくら町1-1,090-1111-2222,両方,鍵は隣\n".encode()
    rows = _rows(_create(town, data))
    assert rows == [
        {
            "line": 2,
            "values": {
                "label": "鈴木",
                "block": "1班",
                "address": "さくら町1-1",
                "phone": "090-1111-2222",
                "delivery_mode": DeliveryMode.BOTH,
                "helper_note": "鍵は隣",
            },
            "action": "add",
            "errors": [],
        }
    ]


def test_columns_may_come_in_any_order_and_extra_columns_are_ignored(town: Town) -> None:
    data = "順番,備考,班,世帯名,ふりがな\n3,メモ,2班,鈴木,すずき\n".encode()
    [row] = _rows(_create(town, data))
    assert row["values"]["label"] == "鈴木"
    assert row["values"]["block"] == "2班"
    assert row["values"]["helper_note"] == "メモ"
    assert row["values"]["delivery_mode"] == DeliveryMode.PAPER
    assert row["errors"] == []


@pytest.mark.parametrize("header", ["世帯名,住所", "班,住所", "a,b,c"])
def test_missing_required_columns_refused(town: Town, header: str) -> None:
    with pytest.raises(ValidationError):
        _create(town, f"{header}\n鈴木,1班\n".encode())
    assert not RosterImport.objects.exists()


def test_a_header_with_no_rows_imports_nothing(town: Town) -> None:
    roster_import = _create(town, "世帯名,班\n,\n\n".encode())
    assert _rows(roster_import) == []
    assert roster_import_apply(roster_import=roster_import) == 0


def test_row_errors(town: Town) -> None:
    data = (
        "世帯名,班,配布方法\n"
        "鈴木,1班,アプリ\n"  # 2: fine
        "高橋,9班,紙\n"  # 3: unknown block
        "鈴木,1班,紙\n"  # 4: duplicate in file
        ",1班,紙\n"  # 5: empty name
        "伊藤,1班,FAX\n"  # 6: bad mode
        "渡辺,,紙\n"  # 7: empty block
        f"{'長' * 61},1班,紙\n"  # 8: name too long
        "鈴木,2班,PAPER\n"  # 9: fine (same name, other block; mode is case-insensitive)
    ).encode()
    roster_import = _create(town, data)
    rows = {row["line"]: row for row in _rows(roster_import)}
    assert set(rows) == set(range(2, 10))
    with_errors = {line for line, row in rows.items() if row["errors"]}
    assert with_errors == {3, 4, 5, 6, 7, 8}
    assert roster_import.error_count == 6
    assert "9班" in rows[3]["errors"][0]
    assert "FAX" in rows[6]["errors"][0]
    assert len(rows[4]["errors"]) == 1
    assert rows[9]["values"]["delivery_mode"] == DeliveryMode.PAPER


def test_values_are_normalised(town: Town) -> None:
    data = "世帯名,班,電話,配布方法\n ｽｽﾞｷ ,１班,０９０-１１１１-２２２２, ｱﾌﾟﾘ \n".encode()
    [row] = _rows(_create(town, data))
    assert row["errors"] == []
    assert row["values"]["label"] == "スズキ"
    assert row["values"]["block"] == "1班"
    assert row["values"]["phone"] == "090-1111-2222"
    assert row["values"]["delivery_mode"] == DeliveryMode.APP


def test_existing_households_are_updates(town: Town) -> None:
    data = "世帯名,班\n山田,1班\n山田,2班\n田中,2班\n".encode()
    rows = _rows(_create(town, data))
    assert [(row["values"]["label"], row["values"]["block"], row["action"]) for row in rows] == [
        ("山田", "1班", "update"),
        ("山田", "2班", "add"),
        ("田中", "2班", "update"),
    ]


def test_other_communities_do_not_count(town: Town) -> None:
    # The other association has 佐藤 in 1組; here 1組 is unknown.
    [row] = _rows(_create(town, "世帯名,班\n佐藤,1組\n".encode()))
    assert row["errors"]
    assert row["action"] == "add"


def test_import_create_writes_nothing_to_the_roster(town: Town) -> None:
    before = _household_snapshot(town)
    roster_import = _create(town, SAMPLE.encode(), file_name="x" * 300 + ".csv")
    assert _household_snapshot(town) == before
    assert roster_import.applied_at is None
    assert roster_import.community == town.community
    assert roster_import.created_by == town.chair
    assert len(roster_import.file_name) == 200


# --- Applying ---------------------------------------------------------------------------


def test_apply_adds_and_updates(town: Town) -> None:
    HouseholdFactory.create(block=town.block1, label="伊藤", circulation_order=7)
    data = (
        "世帯名,班,住所,電話,配布方法,備考\n"
        "山田,1班,さくら町1-9,03-0000-0000,両方,\n"
        "鈴木,1班,,,アプリ,新しく\n"
        "高橋,1班,,,,\n"
        "中村,2班,,,紙,\n"
    ).encode()
    roster_import = _create(town, data)
    assert roster_import_apply(roster_import=roster_import) == 4

    yamada = Household.objects.get(pk=town.household1.pk)
    assert (yamada.address, yamada.phone, yamada.delivery_mode) == (
        "さくら町1-9",
        "03-0000-0000",
        DeliveryMode.BOTH,
    )
    suzuki = Household.objects.get(block=town.block1, label="鈴木")
    takahashi = Household.objects.get(block=town.block1, label="高橋")
    nakamura = Household.objects.get(block=town.block2, label="中村")
    assert suzuki.community == town.community
    assert (suzuki.delivery_mode, suzuki.helper_note) == (DeliveryMode.APP, "新しく")
    assert takahashi.delivery_mode == DeliveryMode.PAPER
    # New households go to the end of their block's round, in file order.
    last1 = max(yamada.circulation_order, 7)
    assert (suzuki.circulation_order, takahashi.circulation_order) == (last1 + 1, last1 + 2)
    assert nakamura.circulation_order == town.household2.circulation_order + 1
    roster_import.refresh_from_db()
    assert roster_import.applied_at is not None
    assert Household.objects.filter(community=town.community).count() == 6


def test_apply_into_an_empty_block_starts_at_one(town: Town) -> None:
    services.block_create(community=town.community, name="3班")
    roster_import = _create(town, "世帯名,班\n鈴木,3班\n高橋,3班\n".encode())
    roster_import_apply(roster_import=roster_import)
    orders = Household.objects.filter(block__name="3班", community=town.community).order_by(
        "circulation_order"
    )
    assert [(h.label, h.circulation_order) for h in orders] == [("鈴木", 1), ("高橋", 2)]


def test_apply_refuses_an_import_with_errors(town: Town) -> None:
    before = _household_snapshot(town)
    roster_import = _create(town, "世帯名,班\n鈴木,1班\n高橋,9班\n".encode())
    assert roster_import.error_count == 1
    with pytest.raises(ValidationError):
        roster_import_apply(roster_import=roster_import)
    assert _household_snapshot(town) == before
    roster_import.refresh_from_db()
    assert roster_import.applied_at is None


def test_apply_twice_raises(town: Town) -> None:
    roster_import = _create(town, SAMPLE.encode())
    roster_import_apply(roster_import=roster_import)
    after_first = _household_snapshot(town)
    with pytest.raises(AlreadyApplied):
        roster_import_apply(roster_import=roster_import)
    # Even with a stale object in hand.
    stale = RosterImport.objects.get(pk=roster_import.pk)
    stale.applied_at = None
    with pytest.raises(AlreadyApplied):
        roster_import_apply(roster_import=stale)
    assert _household_snapshot(town) == after_first


def test_apply_rechecks_the_roster_and_writes_nothing(town: Town) -> None:
    block3 = services.block_create(community=town.community, name="3班")
    data = "世帯名,班,住所\n山田,1班,更新\n鈴木,1班,\n高橋,3班,\n".encode()
    roster_import = _create(town, data)
    assert roster_import.error_count == 0
    # Meanwhile, an officer removes block 3.
    services.block_delete(block=block3)
    before = _household_snapshot(town)
    with pytest.raises(ValidationError):
        roster_import_apply(roster_import=roster_import)
    assert _household_snapshot(town) == before
    assert not Household.objects.filter(label__in=["鈴木", "高橋"]).exists()
    roster_import.refresh_from_db()
    assert roster_import.applied_at is None


def test_apply_after_a_rename_refuses(town: Town) -> None:
    roster_import = _create(town, "世帯名,班\n鈴木,2班\n".encode())
    services.block_rename(block=town.block2, name="二班")
    with pytest.raises(ValidationError):
        roster_import_apply(roster_import=roster_import)
    assert not Household.objects.filter(label="鈴木").exists()


def test_apply_writes_only_to_its_own_community(town: Town) -> None:
    foreign = Block.objects.get(community=town.other_community)
    foreign_before = list(Household.objects.filter(block=foreign).values_list("label", "address"))
    services.block_create(community=town.community, name="1組")
    roster_import = _create(town, "世帯名,班,住所\n佐藤,1組,ここ\n".encode())
    roster_import_apply(roster_import=roster_import)
    assert list(Household.objects.filter(block=foreign).values_list("label", "address")) == (
        foreign_before
    )
    assert Household.objects.get(community=town.community, label="佐藤").address == "ここ"


# --- Export -----------------------------------------------------------------------------


def _export_rows(town: Town) -> list[list[str]]:
    data = roster_export_csv(
        households=Household.objects.filter(community=town.community).select_related("block")
    )
    assert data.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


def test_export_has_a_bom_and_japanese_headers(town: Town) -> None:
    Household.objects.filter(pk=town.household2.pk).update(delivery_mode=DeliveryMode.BOTH)
    HouseholdFactory.create(
        block=town.block1,
        label="鈴木",
        address="さくら町1-1",
        phone="090-1111-2222",
        delivery_mode=DeliveryMode.PAPER,
        helper_note="犬",
    )
    rows = _export_rows(town)
    assert rows[0] == EXPORT_HEADER == ["班", "順番", "世帯名", "住所", "電話", "配布方法", "備考"]
    by_label = {row[2]: row for row in rows[1:]}
    assert set(by_label) == {"山田", "鈴木", "田中"}
    assert by_label["山田"][5] == "アプリ"
    assert by_label["田中"][5] == "両方"
    suzuki = Household.objects.get(label="鈴木")
    assert by_label["鈴木"] == [
        "1班",
        str(suzuki.circulation_order),
        "鈴木",
        "さくら町1-1",
        "090-1111-2222",
        "紙",
        "犬",
    ]


@pytest.mark.parametrize("dangerous", ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\t=1", "=HYPERLINK()"])
def test_export_neutralises_formulas(town: Town, dangerous: str) -> None:
    HouseholdFactory.create(
        block=town.block1,
        label=dangerous,
        address=dangerous,
        phone=dangerous[:30],
        helper_note=dangerous,
    )
    [row] = [row for row in _export_rows(town)[1:] if row[2] != "山田" and row[0] == "1班"]
    for column in (2, 3, 4, 6):
        assert row[column] == "'" + dangerous, (column, row)


@pytest.mark.parametrize("phone", ["+81-90-1234-5678", "090-1234-5678", "(03) 1234 5678", ""])
def test_export_keeps_phone_numbers(town: Town, phone: str) -> None:
    Household.objects.filter(pk=town.household1.pk).update(phone=phone)
    [row] = [row for row in _export_rows(town)[1:] if row[2] == "山田"]
    assert row[4] == phone


def test_export_then_import_is_all_updates(town: Town) -> None:
    HouseholdFactory.create(
        block=town.block2,
        label="鈴木",
        address="さくら町2-2",
        phone="+81-90-1234-5678",
        delivery_mode=DeliveryMode.BOTH,
        helper_note="鍵は隣",
    )
    data = roster_export_csv(
        households=Household.objects.filter(community=town.community).select_related("block")
    )
    before = _household_snapshot(town)
    roster_import = _create(town, data)
    assert roster_import.encoding == "UTF-8"
    assert roster_import.error_count == 0
    assert {row["action"] for row in _rows(roster_import)} == {"update"}
    roster_import_apply(roster_import=roster_import)
    assert _household_snapshot(town) == before


# --- Whatever arrives -------------------------------------------------------------------


def test_a_nul_byte_anywhere_is_refused(town: Town) -> None:
    # A NUL after the first few kilobytes must not reach the database either
    # (PostgreSQL cannot store U+0000 in text or jsonb).
    data = (
        "世帯名,班,備考\n" + "鈴木,1班,メモ\n" * 400
    ).encode() + b"\xe6\x9d\xbe\x00,1\xe7\x8f\xad\n"
    assert len(data) > 4096
    with pytest.raises(ValidationError):
        _create(town, data)
    assert not RosterImport.objects.exists()


_csv_cells = st.text(alphabet=st.sampled_from(list("鈴木1班紙アプリ両方,\"'\r\n =+-@\t ｱ①髙x")))
_inputs = st.one_of(
    st.binary(max_size=300),
    st.binary(min_size=4090, max_size=4200),
    st.builds(lambda body: "世帯名,班,配布方法\n".encode() + body, st.binary(max_size=200)),
    st.builds(lambda text: ("世帯名,班,配布方法\n" + text).encode(), _csv_cells),
    st.builds(lambda text: ("世帯名,班,配布方法\n" + text).encode("cp932"), _csv_cells),
    st.builds(lambda text: text.encode("utf-8", "surrogatepass"), st.text(max_size=200)),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=_inputs)
def test_any_bytes_import_or_a_validation_error(town: Town, data: bytes) -> None:
    try:
        roster_import = _create(town, data)
    except ValidationError:
        return
    rows = _rows(roster_import)
    assert roster_import.error_count == sum(1 for row in rows if row["errors"])
    assert all(row["action"] in {"add", "update"} for row in rows)

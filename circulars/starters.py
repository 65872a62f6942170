"""Built-in starting texts for common circulars. Officers edit them before publishing."""

from __future__ import annotations

from dataclasses import dataclass

from circulars.models import Priority


@dataclass(frozen=True)
class Starter:
    key: str
    name: str
    title: str
    body: str
    priority: str = Priority.NORMAL


STARTERS = [
    Starter(
        "cleanup",
        "清掃活動",
        "地域清掃のお知らせ",
        "下記のとおり地域清掃を行います。ご協力をお願いします。\n\n"
        "日時：○月○日（日）午前8時から（小雨決行）\n"
        "集合：○○公園\n"
        "持ち物：軍手、ごみ袋\n\n"
        "ご都合の悪い方は班長までお知らせください。",
    ),
    Starter(
        "fees",
        "会費のお知らせ",
        "町内会費の集金について",
        "今年度の町内会費の集金を行います。\n\n"
        "金額：1世帯 年額○○円\n"
        "集金日：○月○日ごろ、班長がお伺いします。\n\n"
        "ご不在の場合は班長までご連絡ください。",
        Priority.IMPORTANT,
    ),
    Starter(
        "event",
        "行事",
        "○○祭りのお知らせ",
        "今年も○○祭りを開催します。どなたでもお気軽にご参加ください。\n\n"
        "日時：○月○日（土）午後1時から\n"
        "場所：○○集会所\n\n"
        "お手伝いいただける方は役員までお知らせください。",
    ),
    Starter(
        "cancel",
        "中止のお知らせ",
        "【中止】○○について",
        "○月○日に予定していた○○は、○○のため中止します。\n\n"
        "ご迷惑をおかけしますが、ご理解をお願いします。",
        Priority.IMPORTANT,
    ),
]

STARTERS_BY_KEY = {starter.key: starter for starter in STARTERS}

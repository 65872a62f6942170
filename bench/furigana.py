"""Benchmark: furigana for a ~1,500-character circular body (fugashi + unidic-lite).

Run on demand, never in the test suite:

    .venv/bin/python bench/furigana.py [--runs 10] [--chars 1500]

The first call includes creating the Tagger (loading the dictionary); the runs after it
reuse it, as a running server does. No database or cache is involved.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

PARAGRAPHS = [
    "ごみ収集日の変更について",
    "町内会の皆様へ。来月から燃えるごみの収集日が変わります。"
    "これまでの月曜日と木曜日から、火曜日と金曜日になります。",
    "収集は午前8時30分までに、決められた集積所へお出しください。"
    "前日の夜に出すと、カラスや猫に荒らされることがあります。",
    "資源ごみ（缶・瓶・ペットボトル）は、毎月1日と15日に回収します。"
    "ペットボトルはキャップとラベルを取り外し、中を軽く洗ってから出してください。",
    "粗大ごみの取り扱いについては、市役所の環境課へ事前にお申し込みください。"
    "詳しくは https://example.jp/gomi をご覧ください。",
    "お問い合わせは、町内会長の佐々木（電話 012-345-6789）までお願いいたします。"
    "ご高齢の方やお体の不自由な方で、集積所まで運ぶのが難しい場合はご相談ください。",
    "班長の皆様には、回覧板の回付にご協力いただき、誠にありがとうございます。"
    "確認の印をお忘れなく押していただきますよう、よろしくお願い申し上げます。",
]


def body_of(chars: int) -> str:
    parts: list[str] = []
    while sum(len(p) + 1 for p in parts) < chars:
        parts.append(PARAGRAPHS[len(parts) % len(PARAGRAPHS)])
    return "\n".join(parts)[:chars]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--chars", type=int, default=1500)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from circulars.furigana import furigana_segments, ruby_html

    body = body_of(args.chars)

    started = time.perf_counter()
    segments = furigana_segments(body)
    first_ms = (time.perf_counter() - started) * 1000

    timings: list[float] = []
    for _ in range(args.runs):
        started = time.perf_counter()
        furigana_segments(body)
        timings.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    ruby_html(segments)
    html_ms = (time.perf_counter() - started) * 1000

    with_ruby = sum(1 for s in segments if s.reading)
    print(f"body: {len(body)} characters, {len(segments)} segments, {with_ruby} with ruby")
    print(f"first call (incl. Tagger start-up): {first_ms:.1f} ms")
    print(
        f"furigana_segments x{args.runs}: median {statistics.median(timings):.1f} ms, "
        f"min {min(timings):.1f} ms, max {max(timings):.1f} ms"
    )
    print(f"ruby_html: {html_ms:.2f} ms")


if __name__ == "__main__":
    main()

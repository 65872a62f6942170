"""Benchmark: print packs (issue 4 goals: 50-household pack ≤ 150 ms, ≤ 300 ms with furigana).

Run on demand, never in the test suite:

    .venv/bin/python bench/print_pack.py [--runs 10] [--mode circulate|each|both]

A throw-away association in a temporary SQLite file: one block of 50 paper households and
four more blocks of 50; a circular of about two pages with two 12 MP photos.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--mode", default="circulate", choices=["circulate", "each", "both"])
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ["KAIRAN_DATA_DIR"] = tempfile.mkdtemp(prefix="kairan-bench-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command
    from PIL import Image

    from circulars import services as circulars
    from circulars.attachments import attachment_add
    from circulars.print_pack import print_pack_pdf
    from communities import services
    from communities.models import DeliveryMode

    call_command("migrate", verbosity=0)
    chair = User.objects.create_user(username="bench-chair", first_name="会長")
    community = services.community_create(name="ベンチ町内会", slug="bench", chair=chair)
    community.paper_distribution = args.mode
    community.save()
    blocks = [services.block_create(community=community, name=f"{n}班") for n in range(1, 6)]
    for block in blocks:
        for number in range(50):
            services.household_create(
                community=community,
                data=services.HouseholdData(
                    label=f"{block.name}-{number + 1:02d}",
                    block=block,
                    delivery_mode=DeliveryMode.PAPER,
                ),
            )
    paragraph = (
        "来月から燃えるごみの収集日が変わります。資源ごみは第2・第4水曜日のままです。"
        "集積所の清掃当番は班ごとに交代でお願いします。ご不明な点は班長までお問い合わせください。\n"
    )
    circular = circulars.circular_create(
        community=community,
        author=chair,
        data=circulars.CircularData(title="ごみ収集日の変更について", body=paragraph * 14),
    )
    for index in range(2):
        buffer = io.BytesIO()
        Image.new("RGB", (4000, 3000), (200, 120 + index * 40, 90)).save(buffer, "JPEG", quality=90)
        attachment_add(
            circular=circular,
            upload=SimpleUploadedFile(f"photo{index}.jpg", buffer.getvalue(), "image/jpeg"),
        )
    circular = circulars.circular_publish(circular=circular)

    def timed(blocks: list[Any], furigana: bool = False) -> tuple[list[float], list[float], int]:
        timings, cpu, pages = [], [], 0
        for _ in range(args.runs):
            start, start_cpu = time.perf_counter(), time.process_time()
            result = print_pack_pdf(
                circular=circular,
                blocks=blocks,
                base_url="http://127.0.0.1:8000",
                printed_by=chair,
                furigana=furigana,
            )
            timings.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
            pages = result.pages
        return sorted(timings), cpu, pages

    # Warm up: the analyser's dictionary, fonts, and the cached circular pages.
    print_pack_pdf(
        circular=circular, blocks=blocks[:1], base_url="http://x", printed_by=chair, furigana=True
    )
    load = os.getloadavg()[0]
    print(f"print packs, mode {args.mode}, {args.runs} runs, load {load:.2f}")
    for name, chosen, furigana in [
        ("50 households", blocks[:1], False),
        ("50 households + furigana", blocks[:1], True),
        ("whole community (250)", blocks, False),
    ]:
        timings, cpu, pages = timed(chosen, furigana)
        # CPU time too: on a busy machine it moves far less than the wall clock.
        print(
            f"  {name:28s} median {statistics.median(timings):6.0f} ms   "
            f"min {timings[0]:6.0f} ms   max {timings[-1]:6.0f} ms   "
            f"cpu {statistics.median(cpu):6.0f} ms   {pages} pages"
        )


if __name__ == "__main__":
    main()

"""Benchmark: invite-card PDF for one block (BIZ UD Gothic embedded, one QR per card).

Run on demand, never in the test suite:

    .venv/bin/python bench/invite_cards.py [--households 30] [--runs 10]

It builds a throw-away association in a temporary SQLite file and prints the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--households", type=int, default=30)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ["KAIRAN_DATA_DIR"] = tempfile.mkdtemp(prefix="kairan-bench-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from communities import services
    from communities.invite_cards import invite_cards_pdf
    from communities.models import DeliveryMode

    call_command("migrate", verbosity=0)
    chair = User.objects.create_user(username="bench-chair")
    community = services.community_create(name="ベンチ町内会", slug="bench", chair=chair)
    block = services.block_create(community=community, name="1班")
    for number in range(args.households):
        services.household_create(
            community=community,
            data=services.HouseholdData(
                label=f"世帯{number:03d}", block=block, delivery_mode=DeliveryMode.PAPER
            ),
        )
    timings = []
    size = 0
    for _ in range(args.runs):
        start = time.perf_counter()
        cards = services.household_invites_issue_for_block(block=block, created_by=chair)
        pdf = invite_cards_pdf(community=community, cards=cards, base_url="http://127.0.0.1:8000")
        timings.append((time.perf_counter() - start) * 1000)
        size = len(pdf)
    timings.sort()
    load = os.getloadavg()[0]
    print(f"invite cards, {args.households} households, {args.runs} runs, load {load:.2f}")
    print(
        f"  median {statistics.median(timings):.0f} ms   min {timings[0]:.0f} ms   "
        f"max {timings[-1]:.0f} ms   pdf {size / 1024:.0f} KiB"
    )


if __name__ == "__main__":
    main()

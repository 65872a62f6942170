"""PostgreSQL crashes and comes back while people use Kairan.

During the outage every request gets the 503 page (in Japanese, saying the confirmation
was not recorded, with ``Retry-After``), ``/healthz`` says 503, and a background writer
publishing circulars (one circular row plus a receipt per household) and answering
questions (answer plus confirmation) keeps failing cleanly. Afterwards the same server
answers again without a restart, and no write is half done.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.utils import translation

from tests.faults.stack import BASE_DIR, Stack, confirm, request, run_seed

pytestmark = pytest.mark.services

HOUSEHOLDS = 40
RECOVERY_WITHIN = 20.0


def writer(households: int, stop_file: str) -> None:
    """Run in a subprocess against the stack: multi-row writes in a loop until ``stop_file``
    exists, one line of progress after each, failures counted."""
    from pathlib import Path

    from django.contrib.auth.models import User
    from django.db import connections

    from circulars import questions
    from circulars.models import QuestionKind, ReceiptMethod
    from circulars.services import CircularData, circular_create, circular_publish
    from communities.models import Community, Household

    community = Community.objects.get(slug="sakura-faults")
    chair = User.objects.get(first_name="会長")
    homes = list(Household.objects.filter(block__community=community).order_by("pk"))
    done = {"published": 0, "answered": 0, "failed": 0}
    number = 0
    while not Path(stop_file).exists():
        number += 1
        try:
            draft = circular_create(
                community=community, author=chair, data=CircularData(title=f"書き込み {number}")
            )
            question = questions.question_add(
                circular=draft,
                data=questions.QuestionData(
                    kind=QuestionKind.SINGLE, prompt="参加しますか", choices=["はい", "いいえ"]
                ),
            )
            circular = circular_publish(circular=draft)
            done["published"] += 1
            for home in homes[: households // 4]:
                questions.answers_submit(
                    circular=circular,
                    household=home,
                    values={question.pk: "0"},
                    member=None,
                    recorded_by=chair,
                    method=ReceiptMethod.PROXY_PHONE,
                )
                done["answered"] += 1
        except Exception:
            done["failed"] += 1
            connections.close_all()
            time.sleep(0.05)
        print(json.dumps(done), flush=True)


def _progress(
    background: subprocess.Popen[str], until: Callable[[dict[str, int]], bool]
) -> dict[str, int]:
    assert background.stdout is not None
    for line in background.stdout:
        done: dict[str, int] = json.loads(line)
        if until(done):
            return done
    raise AssertionError(
        f"the writer stopped: {background.stderr.read() if background.stderr else ''}"
    )


def _outage_text() -> list[str]:
    with translation.override("ja"):
        return [
            translation.gettext("Kairan is busy or under maintenance"),
            translation.gettext(
                "What you just did was not saved. If you pressed “I have read it”, "
                "your confirmation was not recorded."
            ),
        ]


def test_postgres_restart_gives_a_clear_503_then_everything_works(stack: Stack) -> None:
    seeded = run_seed(stack.env, households=HOUSEHOLDS)
    (server,) = stack.serve("a")
    slug, circular_id = seeded.slug, seeded.circular_ids[0]
    page = f"/c/{slug}/circulars/{circular_id}/"

    assert (
        confirm(
            server, slug=slug, circular_id=circular_id, session=seeded.resident_sessions[0]
        ).status
        == 302
    )

    stop_file = Path(stack.env["KAIRAN_DATA_DIR"]) / "stop-writer"
    script = (
        "import django; django.setup(); from tests.faults.test_postgres_restart import writer; "
        f"writer({HOUSEHOLDS}, {str(stop_file)!r})"
    )
    background = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=BASE_DIR,
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The writer is mid-stream when the database crashes.
        _progress(background, lambda done: done["answered"] >= 3)
        stack.postgres.stop("immediate")
        down_at = time.monotonic()

        outage = [
            request(server, "GET", page, session=seeded.resident_sessions[1]),
            confirm(
                server, slug=slug, circular_id=circular_id, session=seeded.resident_sessions[1]
            ),
            request(server, "GET", "/", session=seeded.resident_sessions[2]),
        ]
        pressed_through_htmx = request(
            server,
            "POST",
            f"{page}confirm/",
            session=seeded.resident_sessions[1],
            form={"key": "00000000-0000-4000-8000-000000000000"},
            headers={"HX-Request": "true", "HX-Current-URL": f"{server.origin}{page}"},
        )
        health = request(server, "GET", "/healthz")
        stack.postgres.start()
        up_at = time.monotonic()

        recovered_after = None
        while time.monotonic() - up_at < RECOVERY_WITHIN:
            if request(server, "GET", page, session=seeded.resident_sessions[1]).status == 200:
                recovered_after = time.monotonic() - up_at
                break
            time.sleep(0.2)
        interrupted = _progress(background, lambda done: done["failed"] >= 1)
        # …and it writes again after the restart.
        done = _progress(background, lambda done: done["published"] > interrupted["published"])
        stop_file.touch()
        background.communicate(timeout=60)
    finally:
        stop_file.touch()
        if background.poll() is None:
            background.kill()
            background.wait()
    print(f"outage lasted {up_at - down_at:.1f} s; recovered {recovered_after} s after start")

    for response in outage:
        assert response.status == 503, (response.status, response.body[:500], stack.logs())
        assert response.headers["retry-after"] == "120"
        assert response.headers["content-type"].startswith("text/html")
        for sentence in _outage_text():
            assert sentence in response.body
        assert "<script" not in response.body  # nothing that would need a nonce or a session
        assert "content-security-policy" in response.headers
    # htmx swaps no error response but follows HX-Redirect: back to the page, which explains.
    assert pressed_through_htmx.status == 503
    assert pressed_through_htmx.headers["hx-redirect"] == f"{server.origin}{page}"
    assert health.status == 503
    assert json.loads(health.body)["database"] != "ok"

    assert recovered_after is not None, stack.logs()
    # The refused confirmation was not recorded; pressing again now records it.
    assert stack.confirmed(circular_id) == 1
    again = confirm(server, slug=slug, circular_id=circular_id, session=seeded.resident_sessions[1])
    assert again.status == 302
    assert stack.confirmed(circular_id) == 2
    assert request(server, "GET", "/healthz").status == 200

    print(f"writer: {done}")
    assert background.returncode == 0

    # No half-written rows: every published circular has a receipt for every household, no
    # draft has any, and every answer sits on a confirmed receipt of its own circular.
    per_circular = stack.postgres.sql(
        stack.database,
        "SELECT c.status, count(r.id) FROM circulars_circular c "
        "LEFT JOIN circulars_receipt r ON r.circular_id = c.id GROUP BY c.id, c.status",
    )
    assert {status for status, _count in per_circular} <= {"draft", "published"}
    for status, count in per_circular:
        assert count == (HOUSEHOLDS if status == "published" else 0), per_circular
    published = sum(status == "published" for status, _count in per_circular)
    assert published >= done["published"] + 1
    orphans = stack.postgres.sql(
        stack.database,
        "SELECT count(*) FROM circulars_answer a JOIN circulars_receipt r ON r.id = a.receipt_id "
        "JOIN circulars_question q ON q.id = a.question_id "
        "WHERE r.confirmed_at IS NULL OR q.circular_id <> r.circular_id",
    )
    assert orphans == [(0,)]
    answered = stack.postgres.sql(stack.database, "SELECT count(*) FROM circulars_answer")[0][0]
    assert answered >= done["answered"]

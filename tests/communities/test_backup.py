"""Backup and restore: a fresh database finds every circular, receipt and uploaded file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

COUNT = """
import json
from circulars.models import Attachment, Circular, Receipt
print(json.dumps({
    "circulars": Circular.objects.count(),
    "receipts": Receipt.objects.count(),
    "confirmed": Receipt.objects.filter(confirmed_at__isnull=False).count(),
    "attachments": sorted(a.file.name for a in Attachment.objects.all()),
    "files_present": all(a.file.storage.exists(a.file.name) for a in Attachment.objects.all()),
}))
"""

ATTACH = """
import io
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from circulars.attachments import attachment_add
from circulars.models import Circular
buffer = io.BytesIO()
Image.new("RGB", (640, 480), (20, 120, 200)).save(buffer, "JPEG")
attachment_add(
    circular=Circular.objects.order_by("pk").first(),
    upload=SimpleUploadedFile("notice.jpg", buffer.getvalue(), "image/jpeg"),
)
"""


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def environment(tmp: Path, database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIRAN_TEST")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        KAIRAN_DATA_DIR=str(tmp),
        KAIRAN_MEDIA_ROOT=str(tmp / "media"),
    )
    env.pop("DATABASE_URL", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def _pg_database(base_url: str, name: str, *, drop: bool = False) -> str:
    import psycopg

    parts = urlsplit(base_url)
    with psycopg.connect(urlunsplit(parts._replace(query="")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop:
            conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path="/" + name))


def test_backup_restores_into_a_fresh_database(tmp_path: Path) -> None:
    base_url = os.environ.get("DATABASE_URL")
    names = [f"kairan_bk_src_{os.getpid()}", f"kairan_bk_dst_{os.getpid()}"]
    source_url = _pg_database(base_url, names[0]) if base_url else None
    target_url = _pg_database(base_url, names[1]) if base_url else None
    try:
        source = environment(tmp_path / "source", source_url)
        manage(source, "migrate", "--noinput")
        manage(source, "seed_demo")
        manage(source, "shell", "-c", ATTACH)
        before = json.loads(manage(source, "shell", "-c", COUNT).strip().splitlines()[-1])
        assert before["circulars"] >= 2 and before["receipts"] >= 100
        assert before["confirmed"] > 0 and len(before["attachments"]) == 1

        manage(source, "backup", str(tmp_path / "backup"))
        assert (tmp_path / "backup" / "manifest.json").exists()

        target = environment(tmp_path / "target", target_url)
        if target_url:
            manage(target, "migrate", "--noinput")  # an empty schema, as on a new server
        manage(target, "backup", str(tmp_path / "backup"), "--restore")
        after = json.loads(manage(target, "shell", "-c", COUNT).strip().splitlines()[-1])
        assert after == before
        assert after["files_present"]
    finally:
        if base_url:
            for name in names:
                _pg_database(base_url, name, drop=True)


@pytest.mark.parametrize("bad", ["missing", "mismatch"])
def test_restore_refuses_a_broken_or_foreign_backup(tmp_path: Path, bad: str) -> None:
    env = environment(tmp_path / "target", None)
    backup = tmp_path / "backup"
    backup.mkdir()
    if bad == "mismatch":
        (backup / "manifest.json").write_text(json.dumps({"database": "postgresql"}))
    result = subprocess.run(
        [sys.executable, "manage.py", "backup", str(backup), "--restore"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "CommandError" in result.stderr or "Error" in result.stderr

"""The production settings pass Django's deployment checks, and refuse to start unsafe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "KAIRAN_"))}
    clean.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


PRODUCTION = {
    "KAIRAN_ENV": "production",
    "DJANGO_SECRET_KEY": "k" * 20 + "a-long-random-production-secret-8f3e1c9b2d7a4f60",
    "DJANGO_ALLOWED_HOSTS": "kairan.example.jp",
    "EMAIL_HOST": "smtp.example.jp",
    "KAIRAN_PUBLIC_URL": "https://kairan.example.jp",
}


def test_check_deploy_is_clean_with_production_settings(tmp_path: Path) -> None:
    result = manage("check", "--deploy", KAIRAN_DATA_DIR=str(tmp_path), **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_without_a_secret_or_mail_refuses_to_start(tmp_path: Path) -> None:
    for missing in ("DJANGO_SECRET_KEY", "EMAIL_HOST", "KAIRAN_PUBLIC_URL"):
        env = {k: v for k, v in PRODUCTION.items() if k != missing}
        result = manage("check", KAIRAN_DATA_DIR=str(tmp_path), **env)
        assert result.returncode != 0
        assert missing in result.stderr

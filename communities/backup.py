"""Backup and restore: the database and the uploaded files, into one directory.

PostgreSQL goes through pg_dump/pg_restore (custom format, consistent snapshot); the
embedded SQLite database through SQLite's online backup API. Media files go into a tar.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.utils import timezone


class BackupError(RuntimeError):
    pass


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(f"{name} is not installed (Debian package postgresql-client)")
    return path


def _pg_run(*command: str, env: dict[str, str]) -> None:
    result = subprocess.run(  # noqa: S603 - our own arguments
        list(command), env=env, capture_output=True, text=True, check=False, timeout=3600
    )
    if result.returncode:
        raise BackupError(result.stderr.strip())


def _pg_env() -> tuple[list[str], dict[str, str]]:
    db = settings.DATABASES["default"]
    args = ["-h", str(db["HOST"] or "127.0.0.1"), "-p", str(db["PORT"] or "5432")]
    if db["USER"]:
        args += ["-U", str(db["USER"])]
    env = {**os.environ}
    if db["PASSWORD"]:
        env["PGPASSWORD"] = str(db["PASSWORD"])
    return args, env


def backup_create(*, directory: Path) -> Path:
    """Write database.* , media.tar.gz and manifest.json into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    vendor = connection.vendor
    if vendor == "postgresql":
        args, env = _pg_env()
        target = directory / "database.pgdump"
        _pg_run(
            _tool("pg_dump"),
            *args,
            "-Fc",
            "-f",
            str(target),
            str(settings.DATABASES["default"]["NAME"]),
            env=env,
        )
    elif vendor == "sqlite":
        target = directory / "database.sqlite3"
        source = sqlite3.connect(str(settings.DATABASES["default"]["NAME"]))
        copy = sqlite3.connect(str(target))
        with copy:
            source.backup(copy)
        source.close()
        copy.close()
    else:
        raise BackupError(f"unsupported database {vendor}")
    media_root = Path(settings.MEDIA_ROOT)
    with tarfile.open(directory / "media.tar.gz", "w:gz") as tar:
        if media_root.exists():
            tar.add(media_root, arcname="media")
    (directory / "manifest.json").write_text(
        json.dumps({"created_at": timezone.now().isoformat(), "database": vendor}, indent=2)
    )
    return directory


def backup_restore(*, directory: Path) -> None:
    """Restore a backup into the configured (empty or disposable) database and MEDIA_ROOT."""
    manifest = json.loads((directory / "manifest.json").read_text())
    vendor = connection.vendor
    if manifest["database"] != vendor:
        raise BackupError(f"backup is {manifest['database']}, this database is {vendor}")
    connection.close()
    if vendor == "postgresql":
        args, env = _pg_env()
        _pg_run(
            _tool("pg_restore"),
            *args,
            "--clean",
            "--if-exists",
            "--no-owner",
            "-d",
            str(settings.DATABASES["default"]["NAME"]),
            str(directory / "database.pgdump"),
            env=env,
        )
    else:
        shutil.copyfile(directory / "database.sqlite3", str(settings.DATABASES["default"]["NAME"]))
    media_root = Path(settings.MEDIA_ROOT)
    media_root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(directory / "media.tar.gz", "r:gz") as tar:
        for member in tar.getmembers():
            if not member.name.startswith("media/") or member.issym() or member.islnk():
                continue
            member.name = member.name.removeprefix("media/")
            if not member.name or ".." in Path(member.name).parts:
                continue
            tar.extract(member, media_root, filter="data")

"""Settings for the test suite: the same module, with quick hashing and local mail."""

import os

from config.settings import *  # noqa: F403
from config.settings import DATA_DIR, DATABASES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
MEDIA_ROOT = DATA_DIR / "test-media"
# Tests count their own rate limits; allauth's would make runs order-dependent.
ACCOUNT_RATE_LIMITS: dict[str, str] | bool = False  # type: ignore[no-redef]
WHITENOISE_AUTOREFRESH = True
# Counted inside the test's own transaction; tests of the coalesced counts set it back.
KAIRAN_LEDGER_COUNTS_SECONDS = 0.0

# Each test run gets its own SQLite file, so runs in parallel never share one. The name
# travels in the environment so that the browser tests' server process finds the same file.
if str(DATABASES["default"]["ENGINE"]).endswith("sqlite3"):
    os.environ.setdefault("KAIRAN_TEST_RUN_ID", str(os.getpid()))
    DATABASES["default"]["TEST"] = {
        "NAME": str(DATA_DIR / f"test_kairan_{os.environ['KAIRAN_TEST_RUN_ID']}.sqlite3")
    }

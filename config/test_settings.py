"""Settings for the test suite: the same module, with quick hashing and local mail."""

from config.settings import *  # noqa: F403
from config.settings import DATA_DIR

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
MEDIA_ROOT = DATA_DIR / "test-media"
# Tests count their own rate limits; allauth's would make runs order-dependent.
ACCOUNT_RATE_LIMITS = False
WHITENOISE_AUTOREFRESH = True

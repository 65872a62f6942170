"""Kairan settings: one module, driven by the environment.

With no variables set this is the *embedded* configuration: SQLite in WAL mode, the
in-memory channel layer and tasks run in-process. Setting ``DATABASE_URL`` switches to
PostgreSQL with psycopg's connection pool, ``REDIS_URL`` to the Redis pub/sub channel
layer and a Redis cache, and ``KAIRAN_ENV=production`` to the hardened deployment settings.
"""

import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from django.utils.csp import CSP
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


def database_from_url(url: str) -> dict[str, object]:
    """Translate ``postgres://user:pass@host:port/name?pool_max=10`` into DATABASES."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ValueError(f"DATABASE_URL must be a postgres:// URL, not {parts.scheme!r}")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "kairan",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        # Under ASGI a persistent connection per thread leaks; the pool is the answer.
        "CONN_MAX_AGE": 0,
        "OPTIONS": {
            "pool": {
                "min_size": int(query.get("pool_min", "1")),
                "max_size": int(query.get("pool_max", "10")),
                "timeout": float(query.get("pool_timeout", "10")),
            },
            "connect_timeout": 5,
        },
    }


KAIRAN_ENV = env("KAIRAN_ENV", "embedded")
PRODUCTION = KAIRAN_ENV == "production"

DEBUG = env_bool("DJANGO_DEBUG", not PRODUCTION)

if PRODUCTION and not env("DJANGO_SECRET_KEY"):
    raise RuntimeError("KAIRAN_ENV=production needs DJANGO_SECRET_KEY")
if PRODUCTION and not env("EMAIL_HOST"):
    raise RuntimeError("KAIRAN_ENV=production needs EMAIL_HOST: officers log in by emailed code")
if PRODUCTION and not (env("DJANGO_ALLOWED_HOSTS") and env("KAIRAN_PUBLIC_URL")):
    raise RuntimeError(
        "KAIRAN_ENV=production needs DJANGO_ALLOWED_HOSTS and KAIRAN_PUBLIC_URL "
        "(printed QR codes and mailed links point there)"
    )
SECRET_KEY = env(
    "DJANGO_SECRET_KEY",
    "embedded-only-insecure-key-4f1c9a7e0b3d4c2a8e6f5b1d9c7a3e2f0b4d6c8a",
)

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")
# Absolute links printed on paper (QR codes) need a public origin.
KAIRAN_PUBLIC_URL = env("KAIRAN_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "django_tasks_db",
    "communities",
    "circulars",
    "notifications",
]

MIDDLEWARE = [
    "config.load_shedding.LoadSheddingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "communities.middleware.ResidentSessionRenewalMiddleware",
    "communities.middleware.VaryOnHtmxMiddleware",
    "config.database_outage.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "communities.context_processors.kairan",
            ],
        },
    },
]

# --- Data -------------------------------------------------------------------------------

DATA_DIR = Path(env("KAIRAN_DATA_DIR", str(BASE_DIR / "var")))
DATA_DIR.mkdir(parents=True, exist_ok=True)

if env("DATABASE_URL"):
    DATABASES = {"default": database_from_url(env("DATABASE_URL"))}
    DATABASES["default"]["TEST"] = {"NAME": env("KAIRAN_TEST_DATABASE_NAME", "test_kairan")}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "kairan.sqlite3",
            "OPTIONS": {
                # WAL lets readers go on while one writer commits; IMMEDIATE takes the
                # write lock up front so concurrent writers queue instead of deadlocking.
                "init_command": (
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;"
                ),
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
            # A file, not memory: the browser tests' server runs in another process.
            "TEST": {"NAME": str(DATA_DIR / "test_kairan.sqlite3")},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL")

if REDIS_URL:
    from redis.exceptions import ConnectionError as RedisConnectionError

    CHANNEL_LAYERS = {
        "default": {
            # The pub/sub layer: the core RedisChannelLayer drops group messages over its
            # capacity without a word.
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                # Retry a command once on a dead connection: the first publish after a
                # Redis restart would otherwise fail and its event be lost.
                "hosts": [{"address": REDIS_URL, "retry_on_error": [RedisConnectionError]}],
                "prefix": env("KAIRAN_CHANNEL_PREFIX", "asgi"),
            },
        }
    }
    CACHES = {
        "default": {
            # A cache that shrugs off a Redis outage: a miss, never an error page.
            "BACKEND": "config.resilient_cache.ResilientRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "kairan",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Sessions live in the database, the truth. With Redis they are read from the cache (every
# page reads one): a Redis outage costs a query, never a login, and a logout during the
# outage stays a logout (config/resilient_cache.py). The in-memory cache is per process, so
# without Redis a logout in one worker could not reach another's copy: database only.
SESSION_ENGINE = (
    "django.contrib.sessions.backends.cached_db"
    if REDIS_URL
    else "django.contrib.sessions.backends.db"
)
SESSION_COOKIE_AGE = 60 * 60 * 24 * 14
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
# Residents stay logged in on their phone; the middleware renews this on use.
KAIRAN_RESIDENT_SESSION_DAYS = 180

if env("KAIRAN_TASKS_BACKEND", "immediate") == "database" or PRODUCTION:
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
else:
    TASKS = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}

# --- Accounts ---------------------------------------------------------------------------

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_ADAPTER = "communities.account_adapter.AccountAdapter"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*"]
ACCOUNT_LOGIN_BY_CODE_ENABLED = True
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_EMAIL_VERIFICATION_BY_CODE_ENABLED = True
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_USER_MODEL_USERNAME_FIELD = "username"
ACCOUNT_LOGOUT_ON_GET = False
ACCOUNT_RATE_LIMITS = {
    # allauth's login view has no key to count per address ("/key" there is a 500 on
    # every login); attempts per address are counted by login_failed and request_login_code.
    "login": "30/m/ip",
    "login_failed": "10/m/ip,5/5m/key",
    "confirm_email": "1/3m/key",
    "request_login_code": "20/m/ip,3/m/key",
}
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes", "webauthn"]
MFA_PASSKEY_LOGIN_ENABLED = True
MFA_WEBAUTHN_ALLOW_INSECURE_ORIGIN = DEBUG
MFA_TOTP_ISSUER = "Kairan"

# --- Email ------------------------------------------------------------------------------

if env("EMAIL_HOST"):
    MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {
                "host": env("EMAIL_HOST"),
                "port": int(env("EMAIL_PORT", "587")),
                "username": env("EMAIL_HOST_USER"),
                "password": env("EMAIL_HOST_PASSWORD"),
                "use_tls": env_bool("EMAIL_USE_TLS", True),
                "timeout": 10,
            },
        }
    }
else:
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "Kairan <noreply@kairan.invalid>")

# --- Language and time ------------------------------------------------------------------

LANGUAGE_CODE = "ja"
LANGUAGES = [("ja", _("Japanese")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "Asia/Tokyo"
USE_I18N = True
USE_TZ = True

# --- Static and media -------------------------------------------------------------------

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env("KAIRAN_MEDIA_ROOT", str(DATA_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION

# --- Web push (VAPID) -------------------------------------------------------------------

# Unset, the embedded default keeps a generated key in DATA_DIR/vapid_private.pem.
KAIRAN_VAPID_PRIVATE_KEY = env("KAIRAN_VAPID_PRIVATE_KEY")
KAIRAN_VAPID_PUBLIC_KEY = env("KAIRAN_VAPID_PUBLIC_KEY")
KAIRAN_VAPID_SUBJECT = env("KAIRAN_VAPID_SUBJECT", "mailto:admin@kairan.invalid")

# How often a live page polls while its WebSocket is down (the database is the truth).
KAIRAN_POLL_SECONDS = int(env("KAIRAN_POLL_SECONDS", "15"))
# Overload: a request that waited longer than this in the proxy's and server's queues
# (nginx's X-Request-Start) gets an immediate 503 instead of late service (0: never).
KAIRAN_QUEUE_TIMEOUT_SECONDS = float(
    env("KAIRAN_QUEUE_TIMEOUT_SECONDS", "3" if PRODUCTION else "0")
)
# The ledger's live counts: a row goes out at once; its counts at most this often per
# circular and process, always after the last change (0: counted after every change).
KAIRAN_LEDGER_COUNTS_SECONDS = float(env("KAIRAN_LEDGER_COUNTS_SECONDS", "0.25"))

# The Japanese font that print output embeds; checked at start-up and by /healthz.
KAIRAN_PRINT_FONT_FAMILY = "BIZ UDGothic"
KAIRAN_PRINT_FONT_FILES = [
    Path("/usr/share/fonts/truetype/bizud-gothic/BIZUDGothic-Regular.ttf"),
    Path("/usr/share/fonts/truetype/bizud-gothic/BIZUDGothic-Bold.ttf"),
]

# --- Security ---------------------------------------------------------------------------

SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:", "blob:"],
    "connect-src": [CSP.SELF],
    "font-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie

if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = int(env("DJANGO_HSTS_SECONDS", str(60 * 60 * 24 * 365)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # The QR join links and WebSocket origins must match what people reach.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("KAIRAN_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "weasyprint": {"level": "WARNING"},
        "fontTools": {"level": "WARNING"},
    },
}

"""Raw credentials for invite cards and login links, and the hashes we store instead."""

import hashlib
import hmac
import secrets
import unicodedata

from django.conf import settings

# No 0/O, 1/I/L: the code is read off paper by people with tired eyes.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8


def token_new() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def code_new() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def code_normalise(code: str) -> str:
    """Accept what people type: full-width letters, lower case, spaces and hyphens."""
    text = unicodedata.normalize("NFKC", code).upper()
    return "".join(ch for ch in text if ch.isalnum())


def code_format(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def code_hash(code: str) -> str:
    # Keyed: a short code is guessable offline from a plain hash, not from an HMAC.
    key = settings.SECRET_KEY.encode()
    return hmac.new(key, b"invite-code:" + code_normalise(code).encode(), "sha256").hexdigest()

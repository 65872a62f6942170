"""Reading numbers from query strings and forms without surprises."""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]{1,12}")


def int_param(value: str | None) -> int | None:
    """An ASCII decimal number, or None. (str.isdigit accepts '²', which int() refuses.)"""
    if value is None or not _DIGITS.fullmatch(value):
        return None
    return int(value)

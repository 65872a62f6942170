from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from communities.selectors import display_preferences


def kairan(request: HttpRequest) -> dict[str, object]:
    """Display preferences for the base template: per person, or per browser if logged out."""
    prefs = display_preferences(request=request)
    return {
        "pref_large_text": prefs.large_text,
        "pref_high_contrast": prefs.high_contrast,
        "pref_furigana": prefs.furigana,
        "poll_ms": settings.KAIRAN_POLL_SECONDS * 1000,
        # Households that joined since then show 「スマホに切替」 to their block staff.
        "switched_since": timezone.now() - timedelta(days=60),
    }

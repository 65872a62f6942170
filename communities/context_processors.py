from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from communities.models import Preference


def kairan(request: HttpRequest) -> dict[str, object]:
    """Display preferences for the base template: per person, or per browser if logged out."""
    large_text = high_contrast = furigana = False
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        preference = Preference.objects.filter(user=user).first()
        if preference:
            large_text, high_contrast = preference.large_text, preference.high_contrast
            furigana = preference.furigana
    else:
        saved = set(request.COOKIES.get("kairan_prefs", "").split("."))
        large_text, high_contrast = "large_text" in saved, "high_contrast" in saved
        furigana = "furigana" in saved
    return {
        "pref_large_text": large_text,
        "pref_high_contrast": high_contrast,
        "pref_furigana": furigana,
        "poll_ms": settings.KAIRAN_POLL_SECONDS * 1000,
        # Households that joined since then show 「スマホに切替」 to their block staff.
        "switched_since": timezone.now() - timedelta(days=60),
    }

"""The household invite cards: an A4 sheet, eight cards, each with a QR and a typable code."""

from __future__ import annotations

from django.urls import reverse
from django.utils import timezone

from communities.models import Community, Household
from communities.pdf import pdf_render, qr_png_data_uri
from communities.services import IssuedInvite
from communities.tokens import code_format

CARDS_PER_PAGE = 8


def invite_cards_pdf(
    *, community: Community, cards: list[tuple[Household, IssuedInvite]], base_url: str
) -> bytes:
    """Render invite cards. ``base_url`` is the site origin that the QR codes point to."""
    base = base_url.rstrip("/")
    items = [
        {
            "household": household,
            "block": household.block,
            "url": base + reverse("join_token", kwargs={"token": issued.token}),
            "qr": qr_png_data_uri(base + reverse("join_token", kwargs={"token": issued.token})),
            "code": code_format(issued.code),
            "expires_on": timezone.localtime(issued.invite.expires_at).date(),
        }
        for household, issued in cards
    ]
    pages = [items[i : i + CARDS_PER_PAGE] for i in range(0, len(items), CARDS_PER_PAGE)]
    return pdf_render(
        template="communities/print/invite_cards.html",
        context={"community": community, "pages": pages, "join_url": base + reverse("join_code")},
    )

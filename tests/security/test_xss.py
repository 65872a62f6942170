"""XSS payloads in every text a person can type, rendered on every page that shows it.

The payloads go in through the real services, forms and upload paths (the join form for a
member's name, the attachment upload for a file name, the roster CSV import for its
cells), and every page that shows them is fetched with the test client as the person who
would see it. Each page is parsed: the payload must appear as *text* (proof the field was
rendered at all) and never as markup — no event-handler attribute, no inline script, no
``javascript:`` link, no SVG. The print pack and invite cards are read back with
pdftotext, and WeasyPrint must not have been asked to fetch anything but ``data:`` URLs.
"""

from __future__ import annotations

import csv
import io
import socket
import subprocess
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils.html import escape
from PIL import Image
from pypdf import PdfReader, PdfWriter

from circulars import services as circular_services
from circulars.models import Attachment, AttachmentKind, Circular
from circulars.print_pack import print_pack_pdf
from circulars.services import CircularData
from communities import services
from communities.invite_cards import invite_cards_pdf
from communities.models import (
    Block,
    DeliveryMode,
    Household,
    Member,
    PaperDistribution,
    RoleKind,
)
from communities.roster_csv import roster_import_create
from communities.services import HouseholdData
from tests.conftest import Town
from tests.factories import UserFactory, give_role

PAYLOADS = {
    "script": "<script>alert(1)</script>",
    "img": '"><img src=x onerror=alert(1)>',
    "javascript-url": "javascript:alert(1)",
    "textarea": "</textarea><svg onload=alert(1)>",
    "template": "{{ 7*7 }}",
    "full-width": "＜script＞alert(1)＜/script＞",
}
# What must never reach the page as markup, whatever the payload turned into on the way
# (NFKC folds the full-width brackets of the last payload into real ones).
RAW_MARKERS = ("<script>alert", "<img src=x", "<svg onload", "<svg", "onerror=alert(1)>")
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "srcset", "poster", "data", "xlink:href"}
ACTIVE_TAGS = {"svg", "math", "iframe", "frame", "frameset", "object", "embed", "base", "applet"}
BODY_URL = 'https://example.jp/"><script>alert(1)</script>'
BASE_URL = "https://kairan.example.jp/"


# --- Reading a page ---------------------------------------------------------------------


class PageInspector(HTMLParser):
    """Collects a page's text and attribute values, and anything that could run script."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self.values: list[str] = []
        self.problems: list[str] = []
        self.html_lang: str | None = None
        self.scripts: list[dict[str, str | None]] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "html":
            self.html_lang = attributes.get("lang")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...>")
            if value is None:
                continue
            self.values.append(value)
            scheme = "".join(value.split()).lower()
            if name in URL_ATTRIBUTES and scheme.startswith(
                ("javascript:", "vbscript:", "data:text/html")
            ):
                self.problems.append(f"<{tag} {name}={value!r}>")
        if tag in ACTIVE_TAGS:
            self.problems.append(f"<{tag}>")
        if tag == "img" and attributes.get("src") == "x":
            self.problems.append("<img src=x>")
        if tag == "script":
            self.scripts.append(attributes)
            self._in_script = True
            is_data = attributes.get("type") == "application/json"
            if "src" not in attributes and "nonce" not in attributes and not is_data:
                self.problems.append("inline <script> without a nonce")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and "alert" in data:
            self.problems.append(f"script body {data[:60]!r}")
        self.texts.append(data)


def inspect(html: str) -> PageInspector:
    inspector = PageInspector()
    inspector.feed(html)
    inspector.close()
    return inspector


def forms_of(payload: str) -> set[str]:
    """The payload as typed, and as the Unicode normalisation on some paths leaves it."""
    return {payload, unicodedata.normalize("NFKC", payload)}


def assert_inert(html: str, *, payload: str, where: str, shown: bool = True) -> None:
    """No markup from the payload; and, when the page shows it, the payload as plain text."""
    for marker in RAW_MARKERS:
        assert marker not in html.lower(), f"{where}: {marker!r} in the raw HTML"
    page = inspect(html)
    assert page.problems == [], f"{where}: {page.problems}"
    if shown:
        texts = "\x00".join(page.texts)
        values = "\x00".join(page.values)
        assert any(form in texts or form in values for form in forms_of(payload)), (
            f"{where}: the payload is not shown as text"
        )
        if "<" in payload:
            assert "&lt;" in html, f"{where}: no escaped '<' on the page"


@pytest.mark.parametrize(
    ("payload", "unsafe"),
    [
        (PAYLOADS["script"], "<p><script>alert(1)</script></p>"),
        (PAYLOADS["img"], '<input value=""><img src=x onerror=alert(1)>">'),
        (PAYLOADS["javascript-url"], '<a href=" javascript:alert(1)">x</a>'),
        (PAYLOADS["textarea"], "<textarea></textarea><svg onload=alert(1)></textarea>"),
        (PAYLOADS["full-width"], "<p><script>alert(1)</script></p>"),
    ],
)
def test_the_checker_catches_a_payload_that_became_markup(payload: str, unsafe: str) -> None:
    """The check itself: a page that let the payload through would fail."""
    with pytest.raises(AssertionError):
        assert_inert(f'<html lang="ja"><body>{unsafe}</body></html>', payload=payload, where="x")
    assert_inert(f'<html lang="ja"><p>{escape(payload)}</p></html>', payload=payload, where="x")


# --- A community full of hostile text -----------------------------------------------------


@dataclass
class Visit:
    name: str
    client: Client
    url: str
    shown: bool = True  # does this page show any of the hostile text?


@dataclass
class Hostile:
    """The town, with every text field a person types set to the payload."""

    town: Town
    payload: str
    block: Block
    household: Household
    paper_household: Household
    member: Member
    leader: User
    published: Circular
    draft: Circular
    import_id: int
    join_token: str
    clients: dict[str, Client] = field(default_factory=dict)

    def visits(self) -> list[Visit]:
        slug = self.town.community.slug

        def community(name: str, *args: object) -> str:
            return reverse(name, args=[slug, *args])

        chair, member, leader = (
            self.clients["chair"],
            self.clients["member"],
            self.clients["leader"],
        )
        published, draft = self.published.pk, self.draft.pk
        return [
            Visit("home (chair)", chair, reverse("home")),
            Visit("dashboard", chair, community("communities:dashboard")),
            Visit("blocks", chair, community("communities:block_list")),
            Visit("block detail", chair, community("communities:block_detail", self.block.pk)),
            Visit("households", chair, community("communities:household_list")),
            Visit(
                "household form",
                chair,
                community("communities:household_edit", self.household.pk),
            ),
            Visit(
                "import preview",
                chair,
                community("communities:roster_import_preview", self.import_id),
            ),
            Visit("roles", chair, community("communities:role_list")),
            Visit("settings", chair, community("communities:settings")),
            Visit("circular list", chair, community("circulars:list")),
            Visit("draft", chair, community("circulars:draft", draft)),
            Visit("draft form", chair, community("circulars:edit", draft)),
            Visit("preview", chair, community("circulars:preview", draft)),
            Visit("circular (chair)", chair, community("circulars:detail", published)),
            Visit("ledger", chair, community("circulars:ledger", published)),
            Visit(
                "ledger, hostile filters",
                chair,
                community("circulars:ledger", published)
                + "?"
                + _query(status=self.payload, block=self.payload, method=self.payload),
            ),
            Visit("print page", chair, community("circulars:paper_print", published)),
            Visit(
                "sign-off", chair, community("circulars:paper_signoff", published, self.block.pk)
            ),
            Visit("follow-up", leader, community("circulars:followup")),
            Visit("home (member)", member, reverse("home")),
            Visit("inbox", member, community("circulars:inbox")),
            Visit(
                "inbox search",
                member,
                community("circulars:inbox") + "?" + _query(q=self.payload),
            ),
            Visit("circular (member)", member, community("circulars:detail", published)),
            Visit("my data", member, reverse("me")),
            Visit("join page", Client(), reverse("join_token", args=[self.join_token])),
        ]


def _query(**params: str) -> str:
    from urllib.parse import urlencode

    return urlencode(params)


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def pdf_bytes() -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def roster_csv(*, payload: str, block_name: str) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["世帯名", "班", "住所", "電話", "配布方法", "備考"])
    writer.writerow([payload, block_name, payload, payload, "紙", payload])
    writer.writerow([payload + "2", payload, payload, "", payload, payload])  # unknown block
    return buffer.getvalue().encode("utf-8")


def build_hostile(town: Town, payload: str) -> Hostile:
    cache.clear()  # rate-limit counters from earlier tests must not refuse the join below
    community = services.community_update(
        community=town.community,
        name=payload,
        contact=payload,
        paper_distribution=PaperDistribution.BOTH,
        allow_block_leader_posts=False,
        roster_purpose=f"{payload}\n{payload}",
    )
    block = services.block_create(community=community, name=payload)
    household = services.household_create(
        community=community,
        data=HouseholdData(
            label=payload,
            block=block,
            address=payload,
            phone=payload[:30],
            delivery_mode=DeliveryMode.BOTH,
            helper_note=payload,
        ),
    )
    paper_household = services.household_create(
        community=community,
        data=HouseholdData(
            label=payload + "様方",
            block=block,
            delivery_mode=DeliveryMode.PAPER,
            helper_note=payload,
        ),
    )

    # A member names themselves through the real join form.
    issued = services.household_invite_issue(household=household, created_by=town.chair)
    member_client = Client()
    response = member_client.post(
        reverse("join_token", args=[issued.token]),
        {"step": "join", "display_name": payload, "kind": "resident", "consent": "on"},
    )
    assert response.status_code == 302, response.content.decode()[:500]
    member = Member.objects.get(household=household)
    assert member.display_name == payload.strip()

    leader = UserFactory.create(first_name=payload, last_name=payload)
    give_role(user=leader, community=community, role=RoleKind.BLOCK_LEADER, block=block)

    body = f"{payload}\n{BODY_URL}\n燃えるごみの収集日が変更になります。{payload}"
    published = circular_services.circular_create(
        community=community, author=leader, data=CircularData(title=payload, body=body)
    )
    chair = client_for(town.chair)
    upload = SimpleUploadedFile(f"{payload}.png", png_bytes(), content_type="image/png")
    response = chair.post(
        reverse("circulars:attachment_add", args=[community.slug, published.pk]),
        {"file": upload},
    )
    assert response.status_code == 302
    assert published.attachments.filter(kind=AttachmentKind.IMAGE).count() == 1
    Attachment.objects.create(
        circular=published,
        kind=AttachmentKind.PDF,
        file=ContentFile(pdf_bytes(), name="hostile.pdf"),
        original_name=payload,
        size=len(pdf_bytes()),
        pages=1,
        position=1,
    )
    # A hostile word key is kept as text; the readings themselves must be kana.
    circular_services.circular_furigana_set(
        circular=published, readings={"変更": "へんこう", payload: "かな", "収集日": ""}
    )
    published = circular_services.circular_publish(circular=published)

    draft = circular_services.circular_create(
        community=community, author=town.chair, data=CircularData(title=payload, body=body)
    )
    Attachment.objects.create(
        circular=draft,
        kind=AttachmentKind.PDF,
        file=ContentFile(pdf_bytes(), name="hostile.pdf"),
        original_name=payload,
        size=len(pdf_bytes()),
        pages=1,
    )
    circular_services.circular_furigana_set(circular=draft, readings={payload: "かな"})

    roster_import = roster_import_create(
        community=community,
        user=town.chair,
        file_name=f"{payload}.csv",
        data=roster_csv(payload=payload, block_name=block.name),
    )
    # A second card, for the join page as a stranger sees it.
    second = services.household_invite_issue(household=paper_household, created_by=town.chair)
    return Hostile(
        town=town,
        payload=payload,
        block=block,
        household=household,
        paper_household=paper_household,
        member=member,
        leader=leader,
        published=published,
        draft=draft,
        import_id=roster_import.pk,
        join_token=second.token,
        clients={"chair": chair, "member": member_client, "leader": client_for(leader)},
    )


@pytest.fixture(params=list(PAYLOADS.values()), ids=list(PAYLOADS))
def hostile(request: pytest.FixtureRequest, town: Town) -> Hostile:
    return build_hostile(town, request.param)


# --- Pages ----------------------------------------------------------------------------


def test_every_page_renders_the_payload_as_text(hostile: Hostile) -> None:
    for visit in hostile.visits():
        response = visit.client.get(visit.url)
        assert response.status_code == 200, f"{visit.name}: {response.status_code}"
        assert response["Content-Type"].startswith("text/html"), visit.name
        assert_inert(
            response.content.decode(), payload=hostile.payload, where=visit.name, shown=visit.shown
        )


def test_the_circular_with_furigana_is_inert(hostile: Hostile) -> None:
    member = hostile.member.user
    services.preference_update(user=member, furigana=True)
    url = reverse("circulars:detail", args=[hostile.town.community.slug, hostile.published.pk])
    html = hostile.clients["member"].get(url).content.decode()
    assert "<ruby>" in html  # the furigana path really ran
    assert_inert(html, payload=hostile.payload, where="circular with furigana")


def test_the_link_in_the_body_is_escaped_inside_its_href(hostile: Hostile) -> None:
    url = reverse("circulars:detail", args=[hostile.town.community.slug, hostile.published.pk])
    for furigana in (False, True):
        services.preference_update(user=hostile.member.user, furigana=furigana)
        page = inspect(hostile.clients["member"].get(url).content.decode())
        links = [value for value in page.values if value.startswith("https://example.jp/")]
        assert links, f"urlize made no link (furigana={furigana})"
        for link in links:
            assert not set(link) & set('"<> '), link


def test_the_fragments_htmx_swaps_in_are_inert(hostile: Hostile) -> None:
    slug = hostile.town.community.slug
    chair, member = hostile.clients["chair"], hostile.clients["member"]
    fragments = [
        (chair, reverse("circulars:ledger", args=[slug, hostile.published.pk])),
        (member, reverse("circulars:inbox", args=[slug]) + "?limit=10"),
        (member, reverse("circulars:inbox", args=[slug]) + "?" + _query(q=hostile.payload)),
        (chair, reverse("communities:household_list", args=[slug])),
    ]
    for client, url in fragments:
        response = client.get(url, headers={"HX-Request": "true"})
        assert response.status_code == 200, url
        assert_inert(response.content.decode(), payload=hostile.payload, where=f"htmx {url}")


def test_a_hostile_reading_is_refused(db: None) -> None:
    for reading in PAYLOADS.values():
        with pytest.raises(ValidationError):
            circular_services.circular_furigana_set(
                circular=Circular(pk=0), readings={"変更": reading}
            )


def test_an_uploaded_file_name_keeps_no_path_and_no_control_characters(
    town: Town,
) -> None:
    circular = circular_services.circular_create(
        community=town.community, author=town.chair, data=CircularData(title="写真")
    )
    name = '../../<svg onload=alert(1)>\u202egpj.exe"><img src=x onerror=alert(1)>.png'
    upload = SimpleUploadedFile(name, png_bytes(), content_type="image/png")
    response = client_for(town.chair).post(
        reverse("circulars:attachment_add", args=[town.community.slug, circular.pk]),
        {"file": upload},
    )
    assert response.status_code == 302
    attachment = circular.attachments.get()
    # The last path part only, and the right-to-left override gone.
    assert (
        attachment.original_name == '<svg onload=alert(1)>gpj.exe"><img src=x onerror=alert(1)>.png'
    )
    stored = str(attachment.file.name)
    assert stored.endswith(".jpg")
    assert "<" not in stored
    html = client_for(town.chair).get(
        reverse("circulars:draft", args=[town.community.slug, circular.pk])
    )
    assert_inert(html.content.decode(), payload=attachment.original_name, where="draft")


# --- PDFs -----------------------------------------------------------------------------


@dataclass
class FetchSpy:
    urls: list[str] = field(default_factory=list)


@pytest.fixture
def fetch_spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[FetchSpy]:
    """Record every URL WeasyPrint is asked to load."""
    from weasyprint.urls import URLFetcher

    spy = FetchSpy()
    original = URLFetcher.fetch

    def fetch(self: URLFetcher, url: str, *args: Any, **kwargs: Any) -> Any:
        spy.urls.append(url)
        return original(self, url, *args, **kwargs)

    monkeypatch.setattr(URLFetcher, "fetch", fetch)
    yield spy


def pdf_text(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / "out.pdf"
    path.write_bytes(data)
    return subprocess.run(
        ["pdftotext", "-raw", str(path), "-"], capture_output=True, text=True, check=True
    ).stdout


def squeezed(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).split())


def assert_pdf_inert(data: bytes, *, payload: str, tmp_path: Path) -> None:
    text = squeezed(pdf_text(data, tmp_path))
    assert squeezed(payload) in text
    reader = PdfReader(io.BytesIO(data))
    catalogue = reader.root_object
    assert "/JavaScript" not in str(catalogue.get("/Names", ""))
    assert "/OpenAction" not in catalogue and "/AA" not in catalogue
    for page in reader.pages:
        for annotation in page.get("/Annots") or []:
            action = annotation.get_object().get("/A")
            if action is None:
                continue
            action = action.get_object()
            assert action.get("/S") != "/JavaScript"
            uri = str(action.get("/URI", ""))
            assert uri == "" or uri.startswith(("https://", "http://")), uri


def test_the_print_pack_shows_the_payload_as_text(
    hostile: Hostile, fetch_spy: FetchSpy, tmp_path: Path
) -> None:
    for furigana in (False, True):
        result = print_pack_pdf(
            circular=hostile.published,
            blocks=[hostile.block],
            base_url=BASE_URL,
            printed_by=hostile.town.chair,
            furigana=furigana,
        )
        assert_pdf_inert(result.pdf, payload=hostile.payload, tmp_path=tmp_path)
        assert result.unmerged == []
    assert fetch_spy.urls, "WeasyPrint loaded none of the inline images"
    assert all(url.startswith("data:") for url in fetch_spy.urls), fetch_spy.urls


def test_the_invite_cards_show_the_payload_as_text(
    hostile: Hostile, fetch_spy: FetchSpy, tmp_path: Path
) -> None:
    issued = services.household_invite_issue(
        household=hostile.paper_household, created_by=hostile.town.chair
    )
    data = invite_cards_pdf(
        community=hostile.town.community,
        cards=[(hostile.paper_household, issued)],
        base_url=BASE_URL,
    )
    assert_pdf_inert(data, payload=hostile.payload, tmp_path=tmp_path)
    assert all(url.startswith("data:") for url in fetch_spy.urls), fetch_spy.urls


def test_the_pdf_fetcher_refuses_anything_but_data_urls(db: None) -> None:
    """Markup that reached a print template with outside URLs would still fetch nothing."""
    from communities import pdf

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        html = (
            f'<img src="http://127.0.0.1:{port}/x.png">'
            f'<link rel="stylesheet" href="http://127.0.0.1:{port}/x.css">'
            '<img src="file:///etc/passwd">'
        )
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(pdf, "render_to_string", lambda *_args, **_kwargs: html)
            data = pdf.pdf_render(template="unused.html", context={})
        assert data.startswith(b"%PDF")
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected

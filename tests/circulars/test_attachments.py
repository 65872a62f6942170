"""Attachments: photos re-encoded without metadata, PDFs checked, everything else refused."""

from __future__ import annotations

import io
import random
import resource
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile, UploadedFile
from django.utils import translation
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, ImageDraw
from pypdf import PdfWriter
from pypdf.actions import JavaScript
from pypdf.generic import DictionaryObject, NameObject, TextStringObject

from circulars.attachments import (
    MAX_UPLOAD_BYTES,
    _clean_original_name,
    attachment_add,
    attachment_remove,
)
from circulars.models import Attachment, AttachmentKind, Circular
from tests.conftest import Town

pytestmark = pytest.mark.django_db

GPS_IFD = 0x8825
ORIENTATION = 0x0112


# --- Building real files ---------------------------------------------------------------


def _picture(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """Left half red, right half blue: enough to tell which way up a picture ends up."""
    image = Image.new("RGB", size, (200, 0, 0))
    ImageDraw.Draw(image).rectangle((size[0] // 2, 0, size[0], size[1]), fill=(0, 0, 200))
    return image.convert(mode)


def _encode(image: Image.Image, image_format: str, **options: Any) -> bytes:
    output = io.BytesIO()
    image.save(output, image_format, **options)
    return output.getvalue()


def _jpeg(size: tuple[int, int] = (2400, 1800), **options: Any) -> bytes:
    return _encode(_picture(size), "JPEG", quality=90, **options)


def _png(size: tuple[int, int] = (640, 480)) -> bytes:
    return _encode(_picture(size), "PNG")


def _png_chunk(chunk_type: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body))
        + chunk_type
        + body
        + struct.pack(">I", zlib.crc32(chunk_type + body))
    )


def _png_header_only(width: int, height: int) -> bytes:
    """A few hundred bytes whose IHDR claims width × height RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + _png_chunk(b"IEND", b"")
    )


def _pdf(pages: int = 2, *, configure: Callable[[PdfWriter], None] | None = None) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=595, height=842)
    if configure is not None:
        configure(writer)
    output = io.BytesIO()
    writer.write(output)
    return output.getvalue()


def _upload(content: bytes, name: str = "photo.jpg", content_type: str = "image/jpeg") -> Any:
    return SimpleUploadedFile(name, content, content_type=content_type)


def _read(field: Any) -> bytes:
    with field.open("rb") as handle:
        data: bytes = handle.read()
    return data


def _opened(field: Any) -> Image.Image:
    image = Image.open(io.BytesIO(_read(field)))
    image.load()
    return image


def _files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


# --- Fixtures --------------------------------------------------------------------------


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    """A media root of this test's own, so "no file left behind" can be checked exactly."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = root
    return root


@pytest.fixture
def circular(town: Town) -> Circular:
    return Circular.objects.create(
        community=town.community, author=town.chair, title="防災訓練のお知らせ"
    )


@pytest.fixture
def existing(media: Path, circular: Circular) -> Attachment:
    """An attachment already on the circular, which a rejected upload must not disturb."""
    return attachment_add(circular=circular, upload=_upload(_jpeg((800, 600)), "first.jpg"))


# --- Photos ----------------------------------------------------------------------------


def test_jpeg_is_reencoded_with_display_copy_and_thumbnail(media: Path, circular: Circular) -> None:
    attachment = attachment_add(circular=circular, upload=_upload(_jpeg((4000, 3000))))

    assert attachment.kind == AttachmentKind.IMAGE
    assert attachment.original_name == "photo.jpg"
    display, thumbnail = _opened(attachment.file), _opened(attachment.thumbnail)
    assert display.format == "JPEG" and thumbnail.format == "JPEG"
    assert display.size == (1600, 1200)
    assert (attachment.width, attachment.height) == display.size
    assert max(thumbnail.size) == 400
    assert attachment.size == len(_read(attachment.file))
    assert attachment.pages is None
    assert attachment.position == 0
    assert str(attachment.file.name).startswith("attachments/")
    assert str(attachment.file.name).endswith(".jpg")
    assert len(_files(media)) == 2


def test_small_photo_is_not_enlarged(media: Path, circular: Circular) -> None:
    attachment = attachment_add(circular=circular, upload=_upload(_jpeg((300, 200))))
    assert _opened(attachment.file).size == (300, 200)
    assert _opened(attachment.thumbnail).size == (300, 200)


def test_gps_exif_xmp_and_comments_are_dropped(media: Path, circular: Circular) -> None:
    exif = Image.Exif()
    exif[0x010F] = "KairanPhone"
    gps = exif.get_ifd(GPS_IFD)
    gps[1] = "N"
    gps[2] = (35.0, 39.0, 29.0)
    gps[3] = "E"
    gps[4] = (139.0, 44.0, 28.0)
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        b"<exif:GPSLatitude>35,39N</exif:GPSLatitude></x:xmpmeta>"
    )
    original = _jpeg(exif=exif.tobytes(), xmp=xmp, comment=b"home-address")
    assert GPS_IFD in Image.open(io.BytesIO(original)).getexif()  # the input really has GPS

    attachment = attachment_add(circular=circular, upload=_upload(original))

    for field in (attachment.file, attachment.thumbnail):
        output = _opened(field)
        assert dict(output.getexif()) == {}
        assert GPS_IFD not in output.getexif()
        assert "exif" not in output.info and "xmp" not in output.info
        assert "comment" not in output.info
        data = _read(field)
        assert b"KairanPhone" not in data and b"GPS" not in data and b"home-address" not in data


def test_rotated_phone_photo_ends_up_upright(media: Path, circular: Circular) -> None:
    # Stored landscape, left half red; orientation 6 means "turn 90° clockwise to view",
    # so the upright picture is portrait with red on top.
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    attachment = attachment_add(
        circular=circular, upload=_upload(_jpeg((3200, 2400), exif=exif.tobytes()))
    )

    display = _opened(attachment.file)
    assert display.size == (1200, 1600)
    assert (attachment.width, attachment.height) == (1200, 1600)
    assert _opened(attachment.thumbnail).size == (300, 400)
    top = display.getpixel((600, 100))
    bottom = display.getpixel((600, 1500))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[0] > 150 and top[2] < 50  # red
    assert bottom[2] > 150 and bottom[0] < 50  # blue
    assert ORIENTATION not in display.getexif()


def test_icc_profile_is_kept(media: Path, circular: Circular) -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    attachment = attachment_add(circular=circular, upload=_upload(_jpeg(icc_profile=profile)))
    assert _opened(attachment.file).info.get("icc_profile") == profile
    assert _opened(attachment.thumbnail).info.get("icc_profile") == profile


def test_cmyk_jpeg_becomes_rgb(media: Path, circular: Circular) -> None:
    cmyk = _encode(Image.new("CMYK", (800, 600), (0, 255, 255, 0)), "JPEG")
    display = _opened(attachment_add(circular=circular, upload=_upload(cmyk)).file)
    assert display.mode == "RGB"
    pixel = display.getpixel((10, 10))
    assert isinstance(pixel, tuple)
    assert pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60


def test_png_with_alpha_is_flattened_on_white(media: Path, circular: Circular) -> None:
    image = Image.new("RGBA", (600, 400), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((300, 0, 600, 400), fill=(0, 0, 200, 255))
    attachment = attachment_add(
        circular=circular, upload=_upload(_encode(image, "PNG"), "scan.png", "image/png")
    )
    display = _opened(attachment.file)
    assert display.format == "JPEG" and display.mode == "RGB"
    assert display.getpixel((50, 200)) == (255, 255, 255)
    right = display.getpixel((550, 200))
    assert isinstance(right, tuple) and right[2] > 150
    assert attachment.original_name == "scan.png"
    assert str(attachment.file.name).endswith(".jpg")


def test_palette_png_with_transparency(media: Path, circular: Circular) -> None:
    image = Image.new("P", (200, 100), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    ImageDraw.Draw(image).rectangle((100, 0, 200, 100), fill=1)
    data = _encode(image, "PNG", transparency=0)
    display = _opened(attachment_add(circular=circular, upload=_upload(data, "p.png")).file)
    assert display.getpixel((20, 50)) == (255, 255, 255)


def test_webp(media: Path, circular: Circular) -> None:
    data = _encode(_picture((2000, 1000)), "WEBP", quality=80)
    attachment = attachment_add(circular=circular, upload=_upload(data, "shot.webp"))
    display = _opened(attachment.file)
    assert display.format == "JPEG"
    assert display.size == (1600, 800)
    assert _opened(attachment.thumbnail).size == (400, 200)


def test_content_decides_not_the_name_or_content_type(media: Path, circular: Circular) -> None:
    upload = _upload(_png(), "document.pdf", "application/pdf")
    attachment = attachment_add(circular=circular, upload=upload)
    assert attachment.kind == AttachmentKind.IMAGE
    assert _opened(attachment.file).format == "JPEG"


def test_new_attachments_go_last(media: Path, circular: Circular) -> None:
    first = attachment_add(circular=circular, upload=_upload(_jpeg((400, 300))))
    second = attachment_add(circular=circular, upload=_upload(_pdf(1), "a.pdf"))
    third = attachment_add(circular=circular, upload=_upload(_png((300, 200)), "b.png"))
    assert [first.position, second.position, third.position] == [0, 1, 2]
    with pytest.raises(ValidationError):
        attachment_add(circular=circular, upload=_upload(b"nope", "c.jpg"))
    attachment_remove(attachment=second)
    fourth = attachment_add(circular=circular, upload=_upload(_jpeg((400, 300))))
    assert fourth.position == 3
    assert list(circular.attachments.all()) == [first, third, fourth]


# --- Rejections ------------------------------------------------------------------------


def _truncated_jpeg() -> bytes:
    data = _jpeg((1200, 900))
    return data[: len(data) * 2 // 3]


def _png_then_html() -> bytes:
    return _png((64, 64)) + b"<html><script>alert(document.cookie)</script></html>"


REJECTED: list[tuple[str, str, Callable[[], bytes], str]] = [
    ("empty", "photo.jpg", lambda: b"", "empty"),
    (
        "svg named png",
        "photo.png",
        lambda: b'<svg xmlns="http://www.w3.org/2000/svg"/>',
        "file_type",
    ),
    ("html named png", "x.png", lambda: b"<!doctype html><script>alert(1)</script>", "file_type"),
    (
        "png signature then html",
        "x.png",
        lambda: b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>",
        "image_unreadable",
    ),
    ("valid png then html", "x.png", _png_then_html, "image_unreadable"),
    ("gif", "anim.gif", lambda: _encode(_picture((64, 64)), "GIF"), "file_type"),
    ("bmp", "photo.jpg", lambda: _encode(_picture((64, 64)), "BMP"), "file_type"),
    ("tiff", "scan.jpg", lambda: _encode(_picture((64, 64)), "TIFF"), "file_type"),
    ("truncated jpeg", "photo.jpg", _truncated_jpeg, "image_unreadable"),
    (
        "jpeg signature only",
        "photo.jpg",
        lambda: b"\xff\xd8\xff\xe0" + b"\0" * 64,
        "image_unreadable",
    ),
    ("random bytes", "photo.jpg", lambda: random.Random(7).randbytes(4096), "file_type"),
    ("pdf signature, no pdf", "notice.pdf", lambda: b"%PDF-1.7\nnot really", "pdf_unreadable"),
    ("pdf without pages", "notice.pdf", lambda: _pdf(0), "pdf_no_pages"),
    ("60 megapixel header", "big.png", lambda: _png_header_only(10000, 6000), "too_many_pixels"),
]


@pytest.mark.parametrize(
    ("name", "make", "code"),
    [pytest.param(name, make, code, id=case) for case, name, make, code in REJECTED],
)
def test_rejected_uploads_leave_nothing_behind(
    media: Path,
    circular: Circular,
    existing: Attachment,
    name: str,
    make: Callable[[], bytes],
    code: str,
) -> None:
    files_before = _files(media)

    with pytest.raises(ValidationError) as raised:
        attachment_add(circular=circular, upload=_upload(make(), name))

    assert raised.value.code == code
    assert str(raised.value.messages[0])  # a message for the person uploading
    assert _files(media) == files_before
    assert list(circular.attachments.all()) == [existing]
    existing.refresh_from_db()
    assert _opened(existing.file).size == (800, 600)


def test_message_is_japanese(media: Path, circular: Circular) -> None:
    """English msgids, read in Japanese: the ja catalogue carries these messages."""
    with pytest.raises(ValidationError) as raised, translation.override("ja"):
        attachment_add(circular=circular, upload=_upload(b"GIF89a", "x.gif"))
    with translation.override("ja"):
        message = raised.value.messages[0]
    assert "ファイル" in message
    assert "JPEG" in message and "PDF" in message


def test_decompression_bomb_header_is_rejected_without_decoding(
    media: Path, circular: Circular
) -> None:
    data = _png_header_only(30000, 30000)
    assert len(data) < 200
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()

    with pytest.raises(ValidationError) as raised:
        attachment_add(circular=circular, upload=_upload(data, "bomb.png"))

    assert raised.value.code == "too_many_pixels"
    assert time.perf_counter() - started < 2
    # 30000 × 30000 RGB would be 2.7 GB; ru_maxrss is in KiB on Linux.
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 100 * 1024
    assert _files(media) == []


def test_upload_over_the_cap_is_rejected(media: Path, circular: Circular) -> None:
    content = b"\xff\xd8\xff\xe0" + bytes(MAX_UPLOAD_BYTES)
    with pytest.raises(ValidationError) as raised:
        attachment_add(circular=circular, upload=_upload(content))
    assert raised.value.code == "too_large"
    assert _files(media) == []


class _Unreadable(io.BytesIO):
    def read(self, size: int | None = -1, /) -> bytes:
        raise AssertionError("the upload was read")


def test_declared_size_over_the_cap_is_rejected_before_reading(
    media: Path, circular: Circular
) -> None:
    upload = UploadedFile(_Unreadable(), name="huge.jpg", size=MAX_UPLOAD_BYTES + 1)
    with pytest.raises(ValidationError) as raised:
        attachment_add(circular=circular, upload=upload)
    assert raised.value.code == "too_large"


def test_understated_size_is_caught_while_reading(media: Path, circular: Circular) -> None:
    content = b"%PDF-1.7\n" + bytes(MAX_UPLOAD_BYTES)
    upload = UploadedFile(io.BytesIO(content), name="small.pdf", size=1000)
    with pytest.raises(ValidationError) as raised:
        attachment_add(circular=circular, upload=upload)
    assert raised.value.code == "too_large"


def test_failed_database_write_removes_the_files(media: Path, town: Town) -> None:
    # The files are written before the database step; an unsaved circular makes that step
    # fail, and the files must go with it.
    unsaved = Circular(community=town.community, title="保存されていない回覧")
    with pytest.raises(ValueError, match="must be saved"):
        attachment_add(circular=unsaved, upload=_upload(_jpeg((400, 300))))
    assert _files(media) == []
    assert not Attachment.objects.exists()


# --- PDFs ------------------------------------------------------------------------------


def test_pdf_is_kept_as_it_came(media: Path, circular: Circular) -> None:
    data = _pdf(2)
    attachment = attachment_add(circular=circular, upload=_upload(data, "お知らせ.pdf"))
    assert attachment.kind == AttachmentKind.PDF
    assert attachment.pages == 2
    assert attachment.size == len(data)
    assert _read(attachment.file) == data
    assert str(attachment.file.name).endswith(".pdf")
    assert not attachment.thumbnail
    assert attachment.width is None and attachment.height is None
    assert attachment.original_name == "お知らせ.pdf"


def _add_document_js(writer: PdfWriter) -> None:
    # pypdf 7 removed add_js; add_open_action puts the script in the names tree.
    writer.add_open_action(JavaScript("app.alert('hello');"))


def _add_open_action_js(writer: PdfWriter) -> None:
    action = DictionaryObject(
        {
            NameObject("/S"): NameObject("/JavaScript"),
            NameObject("/JS"): TextStringObject("app.alert(1);//"),
        }
    )
    writer._root_object[NameObject("/OpenAction")] = writer._add_object(action)


def _pdf_with_escaped_js_names() -> bytes:
    """OpenAction JavaScript whose names are written /J#61vaScript and /J#53.

    Same length as the original, so the cross-reference table stays right; a byte scan for
    "/JS" misses it, a parser does not.
    """
    data = _pdf(1, configure=_add_open_action_js)
    escaped = data.replace(b"/S /JavaScript\n/JS (", b"/S /J#61vaScript\n/J#53 (").replace(
        b"\\057\\057)", b"\\057)"
    )
    assert len(escaped) == len(data) and b"/JS" not in escaped
    return escaped


def _encrypt(writer: PdfWriter) -> None:
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")


def _encrypt_without_user_password(writer: PdfWriter) -> None:
    writer.encrypt(user_password="", owner_password="owner", algorithm="RC4-128")


@pytest.mark.parametrize(
    ("make", "code"),
    [
        pytest.param(lambda: _pdf(1, configure=_add_document_js), "pdf_script", id="names-js"),
        pytest.param(lambda: _pdf(1, configure=_add_open_action_js), "pdf_script", id="open-js"),
        pytest.param(_pdf_with_escaped_js_names, "pdf_script", id="escaped-js"),
        pytest.param(lambda: _pdf(2, configure=_encrypt), "pdf_encrypted", id="encrypted"),
        pytest.param(
            lambda: _pdf(2, configure=_encrypt_without_user_password),
            "pdf_encrypted",
            id="encrypted-open",
        ),
        pytest.param(lambda: _pdf(2)[:200], "pdf_unreadable", id="truncated"),
    ],
)
def test_unsafe_pdfs_are_rejected(
    media: Path, circular: Circular, make: Callable[[], bytes], code: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        attachment_add(circular=circular, upload=_upload(make(), "notice.pdf", "application/pdf"))
    assert raised.value.code == code
    assert _files(media) == []
    assert not circular.attachments.exists()


# --- Names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd.jpg", "passwd.jpg"),
        ("<script>.png", "<script>.png"),
        ("photo\u202egpj.exe\t.png", "photogpj.exe.png"),
        ("  町内会だより.png  ", "町内会だより.png"),
    ],
)
def test_hostile_names_are_kept_only_as_text(
    media: Path, circular: Circular, name: str, expected: str
) -> None:
    attachment = attachment_add(circular=circular, upload=_upload(_png((64, 64)), name))
    assert attachment.original_name == expected
    stored = Path(str(attachment.file.name))
    assert stored.parts[0] == "attachments"
    assert ".." not in stored.parts
    assert stored.suffix == ".jpg"
    assert "passwd" not in stored.name and "script" not in stored.name
    assert all(path.resolve().is_relative_to(media.resolve()) for path in _files(media))


def test_long_name_is_trimmed_keeping_the_extension(media: Path, circular: Circular) -> None:
    name = "回" * 496 + ".png"
    attachment = attachment_add(circular=circular, upload=_upload(_png((64, 64)), name))
    assert len(attachment.original_name) == 200
    assert attachment.original_name.endswith("回.png")


def test_windows_path_and_decomposed_japanese() -> None:
    assert _clean_original_name("C:\\Users\\山田\\回覧.pdf", extension="pdf") == "回覧.pdf"
    # macOS sends NFD: ハ + combining handakuten.
    assert _clean_original_name("ハ\u309aン.jpg", extension="jpg") == "パン.jpg"
    assert _clean_original_name("\x00\n", extension="pdf") == "attachment.pdf"
    assert _clean_original_name(None, extension="jpg") == "attachment.jpg"


@given(st.text(max_size=600))
def test_any_name_is_cleaned_to_safe_text(name: str) -> None:
    cleaned = _clean_original_name(name, extension="jpg")
    assert 0 < len(cleaned) <= 200
    assert "/" not in cleaned and "\\" not in cleaned
    assert not any(ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F for ch in cleaned)
    assert cleaned.encode("utf-8")  # no lone surrogates


# --- Removing --------------------------------------------------------------------------


def test_remove_deletes_row_and_files_after_commit(
    media: Path, circular: Circular, django_capture_on_commit_callbacks: Any
) -> None:
    photo = attachment_add(circular=circular, upload=_upload(_jpeg((800, 600))))
    pdf = attachment_add(circular=circular, upload=_upload(_pdf(1), "a.pdf"))
    photo_files = [media / str(photo.file.name), media / str(photo.thumbnail.name)]
    assert all(path.exists() for path in photo_files)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        attachment_remove(attachment=photo)
    # Not committed yet: a rollback must still find the files.
    assert all(path.exists() for path in photo_files)
    assert len(callbacks) == 1
    callbacks[0]()

    assert not any(path.exists() for path in photo_files)
    assert list(circular.attachments.all()) == [pdf]
    with django_capture_on_commit_callbacks(execute=True):
        attachment_remove(attachment=pdf)
    assert _files(media) == []
    assert not Attachment.objects.exists()


# --- Fuzzing ---------------------------------------------------------------------------

_SIGNATURES = [b"", b"\xff\xd8\xff", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"%PDF-1.7\n"]
_SIGNATURES.append(b"RIFF\x10\x00\x00\x00WEBPVP8 ")


def _check_outcome(circular: Circular, data: bytes) -> None:
    try:
        attachment = attachment_add(circular=circular, upload=_upload(data, "fuzz.bin"))
    except ValidationError:
        return
    stored = _read(attachment.file)
    if attachment.kind == AttachmentKind.PDF:
        assert stored == data and attachment.pages is not None and attachment.pages >= 1
    else:
        assert _opened(attachment.file).format == "JPEG"
        assert _opened(attachment.thumbnail).format == "JPEG"


_FUZZ_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_FUZZ_SETTINGS
@given(prefix=st.sampled_from(_SIGNATURES), body=st.binary(max_size=4096))
def test_random_bytes_are_rejected_or_accepted_cleanly(
    media: Path, circular: Circular, prefix: bytes, body: bytes
) -> None:
    _check_outcome(circular, prefix + body)


def _valid_samples() -> Iterator[bytes]:
    yield _jpeg((64, 48))
    yield _encode(_picture((64, 48)), "JPEG", progressive=True)
    yield _png((64, 48))
    yield _encode(_picture((64, 48), "RGBA"), "WEBP")
    yield _pdf(1)


_SAMPLES = list(_valid_samples())


@_FUZZ_SETTINGS
@given(
    sample=st.sampled_from(_SAMPLES),
    cut=st.floats(min_value=0.0, max_value=1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 0.999), st.integers(0, 255)), max_size=8),
)
def test_damaged_real_files_are_rejected_or_accepted_cleanly(
    media: Path, circular: Circular, sample: bytes, cut: float, flips: list[tuple[float, int]]
) -> None:
    data = bytearray(sample[: max(1, round(len(sample) * cut))])
    for where, value in flips:
        data[int(where * len(data))] = value
    _check_outcome(circular, bytes(data))


def test_samples_are_valid_before_damage(media: Path, circular: Circular) -> None:
    for sample in _SAMPLES:
        attachment_add(circular=circular, upload=_upload(sample, "sample"))
    assert circular.attachments.count() == len(_SAMPLES)


def test_a_truncated_jpeg_is_refused_even_after_weasyprint_was_imported(
    media: Path, circular: Circular
) -> None:
    """WeasyPrint flips Pillow's process-wide LOAD_TRUNCATED_IMAGES on import."""
    import weasyprint  # noqa: F401  (the import is the point)
    from PIL import ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = True
    with pytest.raises(ValidationError):
        attachment_add(circular=circular, upload=_upload(_truncated_jpeg(), "cut.jpg"))
    assert _files(media) == []

"""Attachments on circulars: photos of city notices and PDFs, checked before they are kept.

Everything is judged by its content, never by the file name or the browser's content type.
Photos are decoded and re-encoded as fresh JPEGs (a 1600 px display copy and a 400 px
thumbnail) so that nothing from the upload survives except the pixels and the colour
profile: no EXIF (GPS), no XMP, no comments, no trailing payloads. PDFs are kept byte for
byte after checks, because re-writing them could change what the city printed.

HEIC (iPhone's default) is not accepted: it would need pillow-heif, which is not a
dependency. iPhones convert to JPEG when a photo is picked in a browser's file input.
"""

from __future__ import annotations

import io
import logging
import re
import secrets
import struct
import unicodedata
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Literal

from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import Storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Max
from django.utils.translation import gettext_lazy as _
from PIL import Image, ImageCms, ImageFile
from pypdf import PdfReader
from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject, PdfObject

from circulars.models import Attachment, AttachmentKind, Circular

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# Well below Pillow's own warning threshold (~89 MP): a 50 MP RGBA decode is already ~200 MB.
MAX_IMAGE_PIXELS = 50_000_000
DISPLAY_LONG_SIDE = 1600
THUMBNAIL_LONG_SIDE = 400
JPEG_QUALITY = 82
ORIGINAL_NAME_MAX = 200

# Translators: 日本語訳: 「ファイルが空です。」
MESSAGE_EMPTY = _("The file is empty.")
# Translators: 日本語訳:
# 「ファイルが大きすぎます。%(limit)s MB までのファイルを添付してください。」
MESSAGE_TOO_LARGE = _("The file is too large. Attach files of up to %(limit)s MB.")
# Translators: 日本語訳:
# 「この種類のファイルは添付できません。写真（JPEG、PNG、WebP）または PDF を
# 使ってください。」
MESSAGE_FILE_TYPE = _("This file type cannot be attached. Use a photo (JPEG, PNG, WebP) or a PDF.")
MESSAGE_IMAGE_UNREADABLE = _(
    # Translators: 日本語訳:
    # 「写真を読み込めませんでした。ファイルが壊れているか、途中までしか保存されていない
    # 可能性があります。もう一度撮影するか、保存し直してください。」
    "The photo could not be read. The file may be damaged or only partly saved. "
    "Take the photo again or save it again."
)
MESSAGE_TOO_MANY_PIXELS = _(
    # Translators: 日本語訳:
    # 「写真の画素数が多すぎます（上限 %(limit)s メガピクセル）。小さくしてから
    # 添付してください。」
    "The photo has too many pixels (the limit is %(limit)s megapixels). "
    "Make it smaller and attach it again."
)
# Translators: 日本語訳: 「PDF を読み込めませんでした。ファイルが壊れている可能性があります。」
MESSAGE_PDF_UNREADABLE = _("The PDF could not be read. The file may be damaged.")
MESSAGE_PDF_ENCRYPTED = _(
    # Translators: 日本語訳:
    # 「この PDF はパスワードまたは暗号化で保護されているため添付できません。
    # 保護のない PDF を添付してください。」
    "This PDF is protected with a password or encryption and cannot be attached. "
    "Attach a PDF without protection."
)
# Translators: 日本語訳: 「この PDF にはページがありません。」
MESSAGE_PDF_NO_PAGES = _("This PDF has no pages.")
MESSAGE_PDF_SCRIPT = _(
    # Translators: 日本語訳:
    # 「この PDF にはスクリプト（JavaScript）が含まれているため添付できません。
    # 「PDF として印刷」などで保存し直してください。」
    "This PDF contains scripts (JavaScript) and cannot be attached. "
    "Save it again, for example with “Print to PDF”."
)

SniffedType = Literal["JPEG", "PNG", "WEBP", "PDF"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# EXIF orientation → the transpose that makes the picture upright (as ImageOps.exif_transpose).
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ReencodedPhoto:
    display: bytes
    thumbnail: bytes
    width: int
    height: int


@dataclass(frozen=True)
class _CheckedFile:
    kind: AttachmentKind
    content: bytes
    thumbnail: bytes | None
    width: int | None
    height: int | None
    pages: int | None


# --- Public API ------------------------------------------------------------------------


def attachment_add(*, circular: Circular, upload: UploadedFile) -> Attachment:
    """Check an upload, store it under a random name and add it as the circular's last attachment.

    Raises ValidationError (with a message for the person uploading) for anything that is
    not a readable JPEG, PNG, WebP or PDF within the limits. A rejected upload leaves no
    file and no row behind.
    """
    checked = _check_upload(upload)
    extension = "pdf" if checked.kind == AttachmentKind.PDF else "jpg"
    attachment = Attachment(
        circular=circular,
        kind=checked.kind,
        original_name=_clean_original_name(upload.name, extension=extension),
        size=len(checked.content),
        width=checked.width,
        height=checked.height,
        pages=checked.pages,
    )
    storage = attachment.file.storage
    stored: list[str] = []
    try:
        # Files first and outside the transaction: the row lock below is then held only for
        # two quick queries, not for the disk writes.
        attachment.file.save(_random_name(extension), ContentFile(checked.content), save=False)
        stored.append(str(attachment.file.name))
        if checked.thumbnail is not None:
            attachment.thumbnail.save(
                _random_name("jpg"), ContentFile(checked.thumbnail), save=False
            )
            stored.append(str(attachment.thumbnail.name))
        with transaction.atomic():
            # Serialise concurrent uploads to one circular so positions stay distinct.
            list(Circular.objects.select_for_update().filter(pk=circular.pk).values_list("pk"))
            last = Attachment.objects.filter(circular=circular).aggregate(last=Max("position"))
            attachment.position = 0 if last["last"] is None else last["last"] + 1
            attachment.save()
    except BaseException:
        _delete_files(storage, stored)
        raise
    return attachment


def attachment_remove(*, attachment: Attachment) -> None:
    """Delete an attachment's row, and its files once the deletion has committed."""
    storage = attachment.file.storage
    names = [name for name in (attachment.file.name, attachment.thumbnail.name) if name]
    with transaction.atomic():
        attachment.delete()
        # After commit: a rolled-back deletion must still find its files.
        transaction.on_commit(lambda: _delete_files(storage, names), robust=True)


# --- Checking an upload ----------------------------------------------------------------


def _check_upload(upload: UploadedFile) -> _CheckedFile:
    data = _read_capped(upload)
    sniffed = _sniff(data)
    if sniffed is None:
        raise ValidationError(MESSAGE_FILE_TYPE, code="file_type")
    if sniffed == "PDF":
        pages = _check_pdf(data)
        return _CheckedFile(AttachmentKind.PDF, data, None, None, None, pages)
    photo = _photo_reencode(data=data, sniffed=sniffed)
    return _CheckedFile(
        AttachmentKind.IMAGE, photo.display, photo.thumbnail, photo.width, photo.height, None
    )


def _read_capped(upload: UploadedFile) -> bytes:
    limit_params = {"limit": MAX_UPLOAD_BYTES // (1024 * 1024)}
    # The declared size is checked before a byte is read; the count while reading catches
    # an upload object whose size does not match its content.
    if upload.size is not None and upload.size > MAX_UPLOAD_BYTES:
        raise ValidationError(MESSAGE_TOO_LARGE, code="too_large", params=limit_params)
    buffer = bytearray()
    for chunk in upload.chunks():
        buffer += chunk
        if len(buffer) > MAX_UPLOAD_BYTES:
            raise ValidationError(MESSAGE_TOO_LARGE, code="too_large", params=limit_params)
    if not buffer:
        raise ValidationError(MESSAGE_EMPTY, code="empty")
    return bytes(buffer)


def _sniff(data: bytes) -> SniffedType | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(PNG_SIGNATURE):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(b"%PDF-"):
        return "PDF"
    return None


def _check_container(data: bytes, sniffed: SniffedType) -> None:
    """Reject PNG and WebP files that carry anything beyond their own structure.

    This is what stops polyglots such as a valid PNG followed by an HTML page. JPEGs are not
    checked this way: phones legitimately append data after the image (MPF depth maps,
    HDR gain maps, vendor trailers), and re-encoding drops all of it anyway.
    """
    if sniffed == "PNG":
        for chunk_type, _body in _png_chunks(data):
            if chunk_type == b"IEND":
                return
        raise ValueError("PNG without IEND")
    if sniffed == "WEBP":
        (riff_size,) = struct.unpack_from("<I", data, 4)
        if riff_size + 8 != len(data):
            raise ValueError("WebP RIFF size does not match the file")


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    offset = len(PNG_SIGNATURE)
    while offset < len(data):
        if offset + 12 > len(data):
            raise ValueError("truncated PNG chunk")
        length, chunk_type = struct.unpack_from(">I4s", data, offset)
        end = offset + 8 + length
        if end + 4 > len(data):
            raise ValueError("truncated PNG chunk")
        body = data[offset + 8 : end]
        (crc,) = struct.unpack_from(">I", data, end)
        if zlib.crc32(chunk_type + body) != crc:
            raise ValueError("PNG chunk CRC mismatch")
        offset = end + 4
        if chunk_type == b"IEND" and offset != len(data):
            raise ValueError("data after PNG IEND")
        yield chunk_type, body


# --- Photos ----------------------------------------------------------------------------


def _photo_reencode(*, data: bytes, sniffed: SniffedType) -> ReencodedPhoto:
    """Decode a JPEG/PNG/WebP and re-encode it as upright, metadata-free JPEGs.

    Every failure becomes a ValidationError: Pillow raises a variety of exception types
    (OSError, SyntaxError, ValueError, struct.error, EOFError...) on hostile input.
    """
    try:
        _check_container(data, sniffed)
        # Bombs must be errors, not warnings. catch_warnings is process-global and not
        # thread-safe, so it is only a backstop; the explicit pixel check below is the rule.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[sniffed]) as image:
                return _reencode_opened(image, sniffed)
    except ValidationError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _too_many_pixels() from error
    except Exception as error:
        raise ValidationError(MESSAGE_IMAGE_UNREADABLE, code="image_unreadable") from error


def _reencode_opened(image: Image.Image, sniffed: SniffedType) -> ReencodedPhoto:
    # Pillow reports MPO for JPEGs with a multi-picture index (many phone photos).
    allowed = {"JPEG", "MPO"} if sniffed == "JPEG" else {sniffed}
    if image.format not in allowed:
        raise ValidationError(MESSAGE_FILE_TYPE, code="file_type")
    width, height = image.size
    if width < 1 or height < 1 or width * height > MAX_IMAGE_PIXELS:
        # Decided from the header alone: nothing has been decoded yet.
        raise _too_many_pixels()

    # Read from the original before anything resizes it: orientation decides the final
    # shape, and the profile is the one thing we carry over.
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    icc_profile = image.info.get("icc_profile")

    if sniffed == "JPEG":
        scale = DISPLAY_LONG_SIDE / max(width, height)
        if scale < 1:
            # libjpeg decodes at 1/2, 1/4 or 1/8 directly: far less memory and time.
            image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
    # WeasyPrint sets the process-wide LOAD_TRUNCATED_IMAGES = True when it is imported
    # (for print packs); an upload must still be refused when its data is cut short.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    image.load()  # raises on truncated data

    image = _resizable(image)
    image.thumbnail((DISPLAY_LONG_SIDE, DISPLAY_LONG_SIDE))
    image, icc_profile = _to_output_mode(image, icc_profile)
    transpose = _ORIENTATION_TRANSPOSE.get(orientation)
    if transpose is not None:
        image = image.transpose(transpose)
    # Nothing from the upload's metadata may reach the output (EXIF, XMP, comments).
    image.info = {}

    thumbnail = image.copy()
    thumbnail.thumbnail((THUMBNAIL_LONG_SIDE, THUMBNAIL_LONG_SIDE))
    return ReencodedPhoto(
        display=_jpeg_bytes(image, icc_profile),
        thumbnail=_jpeg_bytes(thumbnail, icc_profile),
        width=image.width,
        height=image.height,
    )


def _resizable(image: Image.Image) -> Image.Image:
    """Bring palette, bilevel and 16-bit images to modes that resize with proper filtering."""
    mode = image.mode
    if mode in {"P", "PA"}:
        return image.convert("RGBA")
    if mode == "1":
        return image.convert("L")
    if mode.startswith("I"):
        # 16-bit greyscale PNG: scale 0–65535 down to 0–255 instead of clipping to white.
        return image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    if "transparency" in image.info and mode in {"L", "RGB"}:
        return image.convert("LA" if mode == "L" else "RGBA")
    return image


def _to_output_mode(
    image: Image.Image, icc_profile: bytes | None
) -> tuple[Image.Image, bytes | None]:
    """Return an L or RGB image (transparency flattened on white) and the profile to embed."""
    mode = image.mode
    if mode in {"LA", "La"}:
        la = image.convert("LA")
        flat = Image.new("L", image.size, 255)
        flat.paste(la.getchannel("L"), mask=la.getchannel("A"))
        image = flat
    elif mode in {"RGBA", "RGBa"}:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    elif mode == "CMYK":
        return _cmyk_to_rgb(image, icc_profile)
    elif mode not in {"L", "RGB"}:
        image = image.convert("RGB")
    # A profile for another colour space (a CMYK profile on what is now RGB) would
    # mis-colour the picture in browsers; better none.
    expected = b"GRAY" if image.mode == "L" else b"RGB "
    if icc_profile is not None and _icc_colour_space(icc_profile) != expected:
        icc_profile = None
    return image, icc_profile


def _cmyk_to_rgb(image: Image.Image, icc_profile: bytes | None) -> tuple[Image.Image, bytes]:
    if icc_profile is not None and _icc_colour_space(icc_profile) == b"CMYK":
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            converted = ImageCms.profileToProfile(image, source, _srgb(), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            converted = None
        if isinstance(converted, Image.Image):
            return converted, _srgb_bytes()
    return image.convert("RGB"), _srgb_bytes()


def _icc_colour_space(icc_profile: bytes) -> bytes | None:
    # ICC header: the colour space signature at bytes 16–19, "acsp" at bytes 36–39.
    if len(icc_profile) < 128 or icc_profile[36:40] != b"acsp":
        return None
    return icc_profile[16:20]


@cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@cache
def _srgb_bytes() -> bytes:
    return _srgb().tobytes()


def _jpeg_bytes(image: Image.Image, icc_profile: bytes | None) -> bytes:
    output = io.BytesIO()
    image.save(
        output,
        "JPEG",
        quality=JPEG_QUALITY,
        optimize=True,
        progressive=True,
        icc_profile=icc_profile,
    )
    return output.getvalue()


def _too_many_pixels() -> ValidationError:
    return ValidationError(
        MESSAGE_TOO_MANY_PIXELS,
        code="too_many_pixels",
        params={"limit": MAX_IMAGE_PIXELS // 1_000_000},
    )


# --- PDFs ------------------------------------------------------------------------------

# A name token /JS or /JavaScript, ending at a PDF delimiter or whitespace.
_RAW_JAVASCRIPT = re.compile(rb"/J(?:S|avaScript)(?=[\s()<>\[\]{}/%]|$)")


def _check_pdf(data: bytes) -> int:
    """Return the page count of a readable, unencrypted PDF without JavaScript."""
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise ValidationError(MESSAGE_PDF_ENCRYPTED, code="pdf_encrypted")
        pages = len(reader.pages)
        has_script = _RAW_JAVASCRIPT.search(data) is not None or _pdf_has_javascript(reader)
    except ValidationError:
        raise
    except Exception as error:
        # pypdf raises many types on damaged input (PdfReadError, KeyError, RecursionError...).
        raise ValidationError(MESSAGE_PDF_UNREADABLE, code="pdf_unreadable") from error
    if pages < 1:
        raise ValidationError(MESSAGE_PDF_NO_PAGES, code="pdf_no_pages")
    if has_script:
        raise ValidationError(MESSAGE_PDF_SCRIPT, code="pdf_script")
    return pages


def _pdf_has_javascript(reader: PdfReader) -> bool:
    """Look where scripts run from: the names tree, OpenAction and additional actions.

    The raw byte scan misses names inside compressed object streams; pypdf sees those.
    """
    catalog = _resolve(reader.trailer["/Root"])
    if not isinstance(catalog, DictionaryObject):
        raise ValueError("PDF without a catalogue")
    names = _resolve(catalog.get("/Names"))
    if isinstance(names, DictionaryObject) and "/JavaScript" in names:
        return True
    actions: list[PdfObject | None] = [catalog.get("/OpenAction")]
    triggers: list[PdfObject | None] = [catalog.get("/AA")]
    for page in reader.pages:
        triggers.append(page.get("/AA"))
        annotations = _resolve(page.get("/Annots"))
        if isinstance(annotations, ArrayObject):
            for item in annotations:
                annotation = _resolve(item)
                if isinstance(annotation, DictionaryObject):
                    actions.append(annotation.get("/A"))
                    triggers.append(annotation.get("/AA"))
    seen: set[int] = set()
    for trigger in triggers:
        # An additional-actions dictionary maps events (open, close, keystroke...) to actions.
        trigger = _resolve(trigger)
        if isinstance(trigger, DictionaryObject):
            actions.extend(trigger.values())
    return any(_action_has_javascript(action, seen=seen) for action in actions)


def _action_has_javascript(value: PdfObject | None, *, seen: set[int]) -> bool:
    value = _resolve(value)
    if value is None or id(value) in seen:
        return False
    seen.add(id(value))
    if isinstance(value, ArrayObject):
        return any(_action_has_javascript(item, seen=seen) for item in value)
    if not isinstance(value, DictionaryObject):
        return False
    if value.get("/S") == "/JavaScript" or "/JS" in value:
        return True
    return _action_has_javascript(value.get("/Next"), seen=seen)


def _resolve(value: PdfObject | None) -> PdfObject | None:
    while isinstance(value, IndirectObject):
        value = value.get_object()
    return value


# --- Names and files -------------------------------------------------------------------


def _random_name(extension: str) -> str:
    return f"{secrets.token_urlsafe(16)}.{extension}"


_UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def _clean_original_name(name: str | None, *, extension: str) -> str:
    """The upload's name as display text only: last path part, no control characters.

    Control and format characters go too (a right-to-left override can make
    "gpj.exe" read as "exe.jpg"). Browsers on macOS send decomposed (NFD) Japanese names.
    """
    text = unicodedata.normalize("NFC", name or "")
    text = re.split(r"[/\\]", text)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch) not in _UNSAFE_CATEGORIES)
    text = text.strip()
    if not text:
        return f"attachment.{extension}"
    if len(text) > ORIGINAL_NAME_MAX:
        stem, dot, suffix = text.rpartition(".")
        if dot and stem and 0 < len(suffix) <= 10:
            text = stem[: ORIGINAL_NAME_MAX - len(suffix) - 1].rstrip() + "." + suffix
        else:
            text = text[:ORIGINAL_NAME_MAX]
    return text


def _delete_files(storage: Storage, names: list[str]) -> None:
    for name in names:
        try:
            storage.delete(name)
        except OSError:
            # The database is the truth; an orphaned file is only wasted space.
            logger.exception("Could not delete attachment file %s", name)

"""Benchmark: the photo pipeline of attachment_add on a 12 MP phone photo.

Run on demand, never in the test suite:

    .venv/bin/python bench/photo_ingest.py [--runs 10] [--width 4000] [--height 3000]

It makes a 4000×3000 JPEG in memory (noisy gradient, EXIF orientation 6, sRGB profile, so
that draft decoding, rotation and the profile are all exercised) and times the Pillow work
only: decode, reduce, rotate, and encode the 1600 px copy and the 400 px thumbnail. No
database and no disk.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def make_photo(width: int, height: int) -> bytes:
    from PIL import Image, ImageCms, ImageDraw

    # A gradient with sensor-like noise compresses roughly like a real photo of a notice.
    base = Image.linear_gradient("L").resize((width, height))
    noise = Image.effect_noise((width, height), 24)
    image = Image.merge("RGB", (base, Image.blend(base, noise, 0.35), noise))
    draw = ImageDraw.Draw(image)
    for row in range(40, height - 40, 90):
        draw.rectangle((width // 8, row, width * 7 // 8, row + 30), fill=(30, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    output = io.BytesIO()
    image.save(
        output,
        "JPEG",
        quality=90,
        exif=exif.tobytes(),
        icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
    )
    return output.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ["KAIRAN_DATA_DIR"] = tempfile.mkdtemp(prefix="kairan-bench-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from circulars.attachments import _photo_reencode

    photo = make_photo(args.width, args.height)
    _photo_reencode(data=photo, sniffed="JPEG")  # warm-up: plugin and profile loading
    timings = []
    result = None
    for _ in range(args.runs):
        start = time.perf_counter()
        result = _photo_reencode(data=photo, sniffed="JPEG")
        timings.append((time.perf_counter() - start) * 1000)
    assert result is not None
    timings.sort()
    load = os.getloadavg()[0]
    print(
        f"photo ingest, {args.width}×{args.height} JPEG {len(photo) / 1024 / 1024:.1f} MiB, "
        f"{args.runs} runs, load {load:.2f}"
    )
    print(
        f"  median {statistics.median(timings):.0f} ms   min {timings[0]:.0f} ms   "
        f"max {timings[-1]:.0f} ms   display {result.width}×{result.height} "
        f"{len(result.display) / 1024:.0f} KiB   thumbnail {len(result.thumbnail) / 1024:.0f} KiB"
    )


if __name__ == "__main__":
    main()

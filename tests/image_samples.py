"""Small images made with Pillow for the tests: every accepted type, EXIF with GPS, bombs."""

from __future__ import annotations

import io

from PIL import Image

GPS_IFD = 0x8825
ORIENTATION = 0x0112


def exif_with_gps(orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    if orientation is not None:
        exif[ORIENTATION] = orientation
    exif[GPS_IFD] = {1: "N", 2: (52.0, 30.0, 0.0), 3: "E", 4: (13.0, 24.0, 0.0)}
    return exif.tobytes()


def image_bytes(
    fmt: str = "PNG",
    size: tuple[int, int] = (64, 48),
    *,
    gps: bool = False,
    orientation: int | None = None,
    color: tuple[int, int, int] = (200, 30, 30),
) -> bytes:
    image = Image.new("RGB", size, color)
    # A gradient, so resizing and re-encoding have something to work on.
    for x in range(min(size[0], 64)):
        image.putpixel((x, 0), (x * 4 % 256, 0, 255))
    options = {}
    if gps or orientation is not None:
        options["exif"] = exif_with_gps(orientation)
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def animated_gif(frames: int = 3, size: tuple[int, int] = (32, 32)) -> bytes:
    images = [Image.new("RGB", size, (60 * i % 256, 100, 200)) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(
        out,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=80,
        loop=0,
        comment=b"made at 52.5N 13.4E",
    )
    return out.getvalue()


def bomb_png(side: int = 20_000) -> bytes:
    """A small PNG (tens of KB) that declares side×side pixels."""
    out = io.BytesIO()
    Image.new("1", (side, side)).save(out, format="PNG")
    return out.getvalue()


def too_many_pixels_png() -> bytes:
    """7000×7000 (49 MP): over the limit, under Pillow's own bomb threshold."""
    out = io.BytesIO()
    Image.new("1", (7000, 7000)).save(out, format="PNG")
    return out.getvalue()


def oversized_bytes() -> bytes:
    """A valid PNG over 5 MB (noise does not compress)."""
    import os

    return image_bytes("PNG", (16, 16)) + os.urandom(5 * 1024 * 1024)


SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def gps_of(data: bytes) -> dict:
    """The GPS IFD Pillow finds in the bytes (empty when there is none)."""
    image = Image.open(io.BytesIO(data))
    exif = image.getexif()
    return dict(exif.get_ifd(GPS_IFD)) if exif else {}


def size_of(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def bmp_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="BMP")
    return out.getvalue()


def bad_images() -> list[tuple[str, list[tuple[str, bytes]], str]]:
    """(case, [(file name, bytes)], words of the refusal): every image refused, as files."""
    png = image_bytes("PNG")
    return [
        ("empty", [("empty.png", b"")], "empty.png is empty"),
        ("svg", [("logo.svg", SVG)], "logo.svg is an SVG"),
        ("svg-named-png", [("logo.png", SVG)], "logo.png is an SVG"),
        ("jpeg-named-png", [("photo.png", image_bytes("JPEG"))], "its bytes are a JPEG image"),
        ("text", [("notes.txt", b"hello")], "notes.txt is text/plain"),
        ("bmp", [("pic.bmp", bmp_bytes())], "send a PNG, JPEG, WebP or GIF image"),
        ("damaged", [("cut.png", png[: len(png) // 2])], "cut.png is damaged or incomplete"),
        ("too-large", [("big.png", oversized_bytes())], "the limit is 5 MB per image"),
        ("too-many-pixels", [("huge.png", too_many_pixels_png())], "the limit is 40 megapixels"),
        ("bomb", [("bomb.png", bomb_png())], "decompression bomb"),
        ("too-many", [(f"{i}.png", png) for i in range(5)], "the limit is 4 per message"),
    ]

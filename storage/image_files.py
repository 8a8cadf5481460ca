"""Checking, cleaning and resizing the images a user attaches to a message (pure, no I/O).

An image is accepted only when Pillow decodes its bytes as the type it claims, within the
limits below, whatever its file name says. What is kept is Pillow's re-encoding of the
decoded pixels: EXIF (GPS included), XMP, comments and text chunks are gone, the EXIF
orientation is applied first so the picture still looks as it did, and anything hidden after
the image data (a polyglot file) is dropped with them. The stored bytes are addressed by
their sha256.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import re
import unicodedata
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_IMAGES = 4
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_MEGAPIXELS = 40
MAX_PIXELS = MAX_MEGAPIXELS * 1_000_000
MODEL_MAX_SIDE = 1568
"""Longest side of an image as the model gets it (larger images are downscaled)."""

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
"""Pillow format -> content type, for every accepted type."""
CONTENT_TYPES = {content_type: fmt for fmt, content_type in FORMATS.items()}
EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif"}
KIND = {"PNG": "a PNG", "JPEG": "a JPEG", "WEBP": "a WebP", "GIF": "a GIF"}
ACCEPTED = "PNG, JPEG, WebP or GIF"
_GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream"}
_KEPT_INFO = ("icc_profile", "transparency", "duration", "loop", "background", "disposal")
"""Image info Pillow may write back: colour, transparency and animation, never metadata."""


class ImageRejected(ValueError):
    """An image that is not accepted; the message names the file and says why."""


@dataclass(frozen=True)
class CheckedImage:
    """An accepted image, cleaned of metadata: what is stored and referenced."""

    name: str
    """The file name the user gave (for display and the workspace name)."""
    data: bytes
    content_type: str
    width: int
    height: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _claimed_format(name: str, content_type: str | None) -> str | None:
    """The format the upload claims: its content type, else its file name; None if neither."""
    claimed = (content_type or "").split(";")[0].strip().lower()
    if claimed in _GENERIC_TYPES:
        claimed = (mimetypes.guess_type(name)[0] or "").lower() if name else ""
        if not claimed:
            return None
    if claimed == "image/jpg":
        claimed = "image/jpeg"
    if claimed == "image/svg+xml":
        raise ImageRejected(
            f"{name or 'an image'} is an SVG, which is not accepted (an SVG can carry scripts); "
            f"send a {ACCEPTED} image"
        )
    if claimed not in CONTENT_TYPES:
        raise ImageRejected(f"{name or 'an image'} is {claimed}; send a {ACCEPTED} image")
    return CONTENT_TYPES[claimed]


def _looks_like_svg(data: bytes) -> bool:
    head = data[:1024].lstrip().lower()
    return head.startswith((b"<svg", b"<?xml")) and b"<svg" in data[:4096].lower()


_CONTROL = re.compile(r"[\x00-\x1f\x7f<>]+")


def display_name(name: str) -> str:
    """The file name as shown and told to the model: its last part, one line, no `<` or `>`
    (it goes into the model's prompt), at most 120 characters."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return " ".join(_CONTROL.sub(" ", base).split())[:120]


def check_image(name: str, data: bytes, content_type: str | None = None) -> CheckedImage:
    """Accept one image or raise ImageRejected; returns it cleaned of metadata."""
    name = display_name(name)
    label = name or "an image"
    if not data:
        raise ImageRejected(f"{label} is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageRejected(
            f"{label} is {len(data) / 1024 / 1024:.1f} MB; the limit is "
            f"{MAX_IMAGE_BYTES // 1024 // 1024} MB per image"
        )
    claimed = _claimed_format(name, content_type)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(FORMATS))
            detected = image.format or ""
            _check_pixels(label, image)
            image.load()
            cleaned = _clean(image)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(
            f"{label} declares far more pixels than its size suggests (a decompression bomb); "
            f"the limit is {MAX_MEGAPIXELS} megapixels"
        ) from None
    except UnidentifiedImageError:
        if _looks_like_svg(data):
            raise ImageRejected(
                f"{label} is an SVG, which is not accepted (an SVG can carry scripts); "
                f"send a {ACCEPTED} image"
            ) from None
        raise ImageRejected(f"{label} is not a {ACCEPTED} image") from None
    except (OSError, ValueError, SyntaxError, EOFError):  # what Pillow raises on bad data
        raise ImageRejected(f"{label} is damaged or incomplete; it could not be decoded") from None
    if claimed is not None and detected != claimed:
        raise ImageRejected(
            f"{label} says it is {KIND[claimed]} image but its bytes are {KIND[detected]} image; "
            "save it again in the type it claims, or rename it"
        )
    return CheckedImage(
        name=name or f"image{EXTENSIONS[detected]}",
        data=cleaned[0],
        content_type=FORMATS[detected],
        width=cleaned[1],
        height=cleaned[2],
    )


def _check_pixels(label: str, image: Image.Image) -> None:
    """Refuse before decoding: a small file may declare huge dimensions (a decompression bomb)."""
    width, height = image.size
    frames = getattr(image, "n_frames", 1)
    pixels = width * height * frames
    if width <= 0 or height <= 0:
        raise ImageRejected(f"{label} has no pixels")
    if pixels > MAX_PIXELS:
        what = f"{width}×{height} pixels" + (f" in {frames} frames" if frames > 1 else "")
        raise ImageRejected(
            f"{label} has {what} ({pixels / 1_000_000:,.1f} megapixels); the limit is "
            f"{MAX_MEGAPIXELS} megapixels"
        )


def _clean(image: Image.Image) -> tuple[bytes, int, int]:
    """Re-encode the decoded pixels, without metadata, in the image's own format."""
    fmt = image.format or "PNG"
    frames = getattr(image, "n_frames", 1)
    kept = {key: image.info[key] for key in _KEPT_INFO if key in image.info}
    out = io.BytesIO()
    if frames > 1:  # animated GIF or WebP: every frame is kept, metadata is not
        image.info = dict(kept)
        image.save(out, format=fmt, save_all=True, exif=b"", **_animation(kept))
        return out.getvalue(), image.width, image.height
    upright = ImageOps.exif_transpose(image)
    upright.info = dict(kept)
    options: dict[str, object] = {"exif": b""}
    if fmt == "JPEG":
        options["quality"] = "keep" if upright is image else 95
    elif fmt == "WEBP":
        options["quality"] = 90
    if "icc_profile" in kept:
        options["icc_profile"] = kept["icc_profile"]
    if "transparency" in kept and fmt in ("PNG", "GIF"):
        options["transparency"] = kept["transparency"]
    upright.save(out, format=fmt, **options)
    return out.getvalue(), upright.width, upright.height


def _animation(kept: dict[str, object]) -> dict[str, object]:
    return {key: kept[key] for key in ("duration", "loop") if key in kept}


def check_images(uploads: list[tuple[str, bytes, str | None]]) -> list[CheckedImage]:
    """Check a message's images (name, bytes, claimed content type), all or none."""
    if len(uploads) > MAX_IMAGES:
        raise ImageRejected(
            f"{len(uploads)} images were attached; the limit is {MAX_IMAGES} per message"
        )
    return [check_image(name, data, content_type) for name, data, content_type in uploads]


_UNSAFE = re.compile(r"[^a-z0-9._-]+")


def workspace_name(name: str, content_type: str, taken: set[str]) -> str:
    """A safe file name for public/uploads/, unique among `taken` (names already used).

    Lower-case ASCII letters, digits, `-`, `_` and `.`, with the extension of the real type;
    `logo.png`, then `logo-2.png`, `logo-3.png` for other images of the same name.
    """
    fmt = CONTENT_TYPES[content_type]
    base = name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    stem = _UNSAFE.sub("-", ascii_stem.lower()).strip("-._")[:60].strip("-._") or "image"
    extension = EXTENSIONS[fmt]
    candidate, n = f"{stem}{extension}", 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}-{n}{extension}"
    return candidate


def for_model(data: bytes, content_type: str) -> tuple[bytes, str, int, int]:
    """The image as the model gets it: the first frame, longest side at most MODEL_MAX_SIDE.

    Deterministic (same stored bytes, same output), so a retried model call sends exactly
    what the first attempt sent. Returns (bytes, content type, width, height).
    """
    image = Image.open(io.BytesIO(data), formats=list(FORMATS))
    frames = getattr(image, "n_frames", 1)
    width, height = image.size
    if frames == 1 and max(width, height) <= MODEL_MAX_SIDE:
        return data, content_type, width, height
    image.seek(0)
    scale = min(1.0, MODEL_MAX_SIDE / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if image.format == "JPEG" and scale < 1:
        image.draft("RGB", size)  # decode at a reduced DCT scale: far less work, same result
    frame = image.convert("RGBA" if _has_alpha(image) else "RGB")
    if frame.size != size:
        frame = frame.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    out = io.BytesIO()
    if content_type == "image/jpeg" and frame.mode == "RGB":
        frame.save(out, format="JPEG", quality=90)
        return out.getvalue(), "image/jpeg", frame.width, frame.height
    frame.save(out, format="PNG")
    return out.getvalue(), "image/png", frame.width, frame.height


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info

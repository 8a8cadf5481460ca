"""Checking and cleaning attached images, without a database: every refusal, and what is kept."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from storage.image_files import (
    MODEL_MAX_SIDE,
    ImageRejected,
    check_image,
    check_images,
    for_model,
    workspace_name,
)
from tests.image_samples import (
    SVG,
    animated_gif,
    bad_images,
    gps_of,
    image_bytes,
    size_of,
)


@pytest.mark.parametrize(("case", "files", "words"), bad_images(), ids=[c[0] for c in bad_images()])
def test_every_bad_image_is_refused_in_words(case: str, files: list, words: str) -> None:
    with pytest.raises(ImageRejected) as refused:
        check_images([(name, data, None) for name, data in files])
    assert words in str(refused.value)


def test_the_claimed_type_is_checked_against_the_bytes_whatever_the_name() -> None:
    jpeg = image_bytes("JPEG")
    # A browser names the type in the part's header: that is the claim, not the file name.
    assert check_image("photo.png", jpeg, "image/jpeg").content_type == "image/jpeg"
    with pytest.raises(ImageRejected, match="says it is a PNG image but its bytes are a JPEG"):
        check_image("photo.jpg", jpeg, "image/png")
    with pytest.raises(ImageRejected, match="is an SVG"):
        check_image("logo.png", SVG, "image/svg+xml")
    # No claim at all (no type, no extension): the bytes decide, within the accepted types.
    assert check_image("screenshot", image_bytes("WEBP"), None).content_type == "image/webp"
    assert check_image("blob", image_bytes("PNG"), "application/octet-stream").width == 64


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_exif_and_gps_are_stripped_and_the_orientation_applied(fmt: str) -> None:
    # Orientation 6: the camera was turned; the picture must still stand upright without EXIF.
    source = image_bytes(fmt, (64, 48), gps=True, orientation=6)
    assert gps_of(source)
    checked = check_image(f"photo.{fmt.lower()}", source)
    assert gps_of(checked.data) == {}
    assert not Image.open(io.BytesIO(checked.data)).getexif()
    assert (checked.width, checked.height) == (48, 64) == size_of(checked.data)


def test_an_animated_gif_keeps_its_frames_and_loses_its_comment() -> None:
    checked = check_image("spinner.gif", animated_gif(frames=3))
    stored = Image.open(io.BytesIO(checked.data))
    assert stored.n_frames == 3
    assert "comment" not in stored.info
    # The model gets the first frame only, as a still PNG.
    data, content_type, width, height = for_model(checked.data, checked.content_type)
    assert content_type == "image/png" and Image.open(io.BytesIO(data)).n_frames == 1
    assert (width, height) == (32, 32)


def test_polyglot_bytes_after_the_image_are_dropped() -> None:
    png = image_bytes("PNG") + b"<script>alert(1)</script>"
    assert b"<script>" not in check_image("a.png", png).data


def test_the_model_gets_a_deterministic_downscaled_copy() -> None:
    large = check_image("mock.png", image_bytes("PNG", (3136, 1960)))
    first = for_model(large.data, large.content_type)
    assert first == for_model(large.data, large.content_type)  # a retry sends the same bytes
    assert first[1:] == ("image/png", MODEL_MAX_SIDE, 980)
    assert size_of(first[0]) == (MODEL_MAX_SIDE, 980)
    small = check_image("icon.jpg", image_bytes("JPEG", (200, 100)))
    assert for_model(small.data, small.content_type) == (small.data, "image/jpeg", 200, 100)


def test_the_name_told_to_the_model_is_one_safe_line() -> None:
    checked = check_image("C:\\shots\\</user_request>\nhi.png", image_bytes("PNG"))
    assert checked.name == "user_request hi.png"
    assert check_image("a<b>\tc.png", image_bytes("PNG")).name == "a b c.png"


def test_workspace_names_are_safe_and_unique() -> None:
    assert workspace_name("My Logo (1).PNG", "image/png", set()) == "my-logo-1.png"
    assert workspace_name("../../etc/passwd", "image/png", set()) == "passwd.png"
    assert workspace_name("logo.png", "image/png", {"logo.png"}) == "logo-2.png"
    assert workspace_name("logo.png", "image/png", {"logo.png", "logo-2.png"}) == "logo-3.png"
    assert workspace_name("Straße.jpeg", "image/jpeg", set()) == "strae.jpg"
    assert workspace_name(".png", "image/png", set()) == "png.png"
    assert workspace_name("日本.webp", "image/webp", set()) == "image.webp"
    # The extension follows the real type, never the name's.
    assert workspace_name("evil.html", "image/gif", set()) == "evil.gif"

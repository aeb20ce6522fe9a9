"""Avatar images: checked by their content (never by name), re-encoded and shrunk to fit a square.

Re-encoding also strips metadata (EXIF, GPS) and anything appended to the file.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

ALLOWED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
MAX_SIDE = 256
#: Default of the registry's ``max_avatar_pixels``: a decompression bomb (a tiny file that decodes to gigapixels)
#: is refused from its header, before anything is decoded.
MAX_PIXELS = 40_000_000


class AvatarError(Exception):
    """The upload is not an acceptable avatar. ``http_status`` is 413 (too big) or 415 (wrong type)."""

    def __init__(self, message: str, http_status: int) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status


@dataclass(frozen=True)
class Avatar:
    data: bytes
    content_type: str
    width: int
    height: int

    @property
    def etag(self) -> str:
        return hashlib.sha256(self.data).hexdigest()[:32]


def process_avatar(data: bytes, *, max_bytes: int, max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS) -> Avatar:
    """Checks that ``data`` is a PNG, JPEG, WebP or GIF image and returns it at most ``max_side`` square."""
    if len(data) > max_bytes:
        raise AvatarError(f"the image is {len(data)} bytes; the limit is {max_bytes}", 413)
    if not data:
        raise AvatarError("the image is empty", 415)
    head = data[:512].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml")) or b"<svg" in head:
        raise AvatarError("SVG images are not accepted (they can carry scripts); use PNG, JPEG, WebP or GIF", 415)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image_format = image.format or ""
            if image_format not in ALLOWED_FORMATS:
                raise AvatarError(f"{image_format or 'this'} images are not accepted; use PNG, JPEG, WebP or GIF", 415)
            if image.width * image.height > max_pixels:
                raise AvatarError(
                    f"the image is {image.width}x{image.height} pixels; the limit is {max_pixels} pixels", 413
                )
            image.load()
    except AvatarError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own limit, hit while reading the header
        raise AvatarError(f"the image has too many pixels to decode (the limit is {max_pixels})", 413) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise AvatarError("the file is not a readable PNG, JPEG, WebP or GIF image", 415) from exc

    resized: Image.Image
    if image.width <= max_side and image.height <= max_side and image_format != "GIF":
        resized = image
    else:
        resized = image.copy()
        resized.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    # Animated GIFs keep their first frame only: an avatar is a still picture and re-encoding is safer.
    out_format = "PNG" if image_format == "GIF" else image_format
    if out_format == "JPEG" and resized.mode not in ("RGB", "L"):
        resized = resized.convert("RGB")
    buffer = io.BytesIO()
    options = {"quality": 90} if out_format in ("JPEG", "WEBP") else {"optimize": True}
    resized.save(buffer, format=out_format, **options)
    return Avatar(
        data=buffer.getvalue(),
        content_type=ALLOWED_FORMATS[out_format],
        width=resized.width,
        height=resized.height,
    )

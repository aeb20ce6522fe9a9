"""Avatars are checked by content, shrunk, stored in S3 and served with an ETag."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import pytest
from PIL import Image

if TYPE_CHECKING:
    from conftest import Registry


def _image(fmt: str, size: tuple[int, int] = (600, 400)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "blue").save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/png")]
)
def test_upload_resizes_and_serves_with_etag(registry: Registry, fmt: str, mime: str) -> None:
    alice = registry.as_user("alice")
    registry.create(alice, id="m")
    # The file name and declared type lie on purpose: only the content counts.
    upload = registry.client.put(
        "/api/v1/models/m/avatar", files={"file": ("avatar.txt", _image(fmt), "text/plain")}, headers=alice
    )
    assert upload.status_code == 200, upload.text
    assert upload.json()["meta"]["profile_image_url"] == "/api/v1/models/m/avatar"
    assert upload.json()["version"] == 2
    served = registry.client.get("/api/v1/models/m/avatar", headers=alice)
    assert served.status_code == 200 and served.headers["content-type"] == mime
    assert max(Image.open(io.BytesIO(served.content)).size) == 256
    again = registry.client.get("/api/v1/models/m/avatar", headers={**alice, "If-None-Match": served.headers["ETag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(
    "data",
    [b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', b"just text", _image("BMP", (8, 8))],
)
def test_non_images_svg_and_other_formats_are_415(registry: Registry, data: bytes) -> None:
    alice = registry.as_user("alice")
    registry.create(alice, id="m")
    response = registry.client.put(
        "/api/v1/models/m/avatar", files={"file": ("a.png", data, "image/png")}, headers=alice
    )
    assert response.status_code == 415, response.text
    assert registry.client.get("/api/v1/models/m/avatar", headers=alice).status_code == 404


def test_too_large_is_413_and_readers_cannot_upload(make_registry: object) -> None:
    registry = make_registry(max_avatar_bytes=1000)  # type: ignore[operator]
    registry.add_base()
    alice = registry.as_user("alice")
    registry.create(alice, id="m", access={"public_read": True})
    big = registry.client.put(
        "/api/v1/models/m/avatar", files={"file": ("a.png", _image("PNG", (800, 800)), "image/png")}, headers=alice
    )
    assert big.status_code == 413
    reader = registry.client.put(
        "/api/v1/models/m/avatar",
        files={"file": ("a.png", _image("PNG", (8, 8)), "image/png")},
        headers=registry.as_user("bob"),
    )
    assert reader.status_code == 403

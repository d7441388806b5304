"""read_image on an image held in memory (bytes or a file object) gives what it gives for the same file on disk."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fcnseg.errors import DataError
from fcnseg.images import ImageTooLargeError, read_image


def picture(mode: str) -> Image.Image:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    if mode == "I;16":
        return Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    return rgb.convert(mode)


@pytest.mark.parametrize("mode,suffix", [("RGB", ".jpg"), ("L", ".png"), ("RGBA", ".png"), ("I;16", ".png"), ("CMYK", ".tif")])
def test_bytes_and_file_objects_read_as_the_file_does(tmp_path, mode, suffix):
    path = tmp_path / f"x{suffix}"
    picture(mode).save(path)
    from_path = read_image(path)
    np.testing.assert_array_equal(read_image(path.read_bytes()), from_path)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(read_image(f), from_path)
    np.testing.assert_array_equal(read_image(memoryview(path.read_bytes())), from_path)


def test_exif_orientation_is_applied_in_memory_too(tmp_path):
    image = Image.fromarray(np.zeros((20, 40, 3), dtype=np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert read_image(buffer.getvalue()).shape == (40, 20, 3)


def test_in_memory_errors_name_the_object_and_say_what_is_wrong():
    with pytest.raises(DataError, match=r"^empty file \(0 bytes\)$"):
        read_image(b"")
    named = io.BytesIO(b"certainly not an image")
    named.name = "upload.jpg"
    with pytest.raises(DataError, match=r"^upload.jpg: not an image file") as raised:
        read_image(named)
    assert "BytesIO" not in str(raised.value)  # no object repr in a message a person reads


def test_the_pixel_limit_raises_its_own_data_error_for_paths_and_bytes(tmp_path):
    path = tmp_path / "scan.png"
    Image.new("RGB", (300, 200)).save(path)
    for source in (path, path.read_bytes()):
        with pytest.raises(ImageTooLargeError, match=r"300x200 .*--max-pixels") as raised:
            read_image(source, max_pixels=10_000)
        assert isinstance(raised.value, DataError)
    with pytest.raises(DataError, match=r"scan.png: image is 300x200"):
        read_image(path, max_pixels=10_000)  # the message for a path is as it was

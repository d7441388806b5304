"""Image reading for prediction: EXIF orientation, every common mode to RGB uint8, the large-scan guard, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fcnseg.errors import DataError
from fcnseg.files import atomic_write
from fcnseg.data.palette import overlay
from fcnseg.images import list_images, read_image


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = 255  # left half white
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    upright = read_image(tmp_path / "rot.jpg")
    assert upright.shape == (40, 20, 3)
    assert upright[:20].mean() > 200 and upright[20:].mean() < 50  # the white half is now on top


@pytest.mark.parametrize(
    "mode,pixel,expected",
    [("L", 100, (100, 100, 100)), ("RGBA", (10, 20, 30, 0), (10, 20, 30)), ("I;16", 65535, (255, 255, 255)), ("CMYK", (0, 0, 0, 0), (255, 255, 255))],
)
def test_every_mode_becomes_rgb_uint8(tmp_path, mode, pixel, expected):
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    Image.new(mode, (7, 5), pixel).save(path)
    rgb = read_image(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (5, 7, 3)
    assert tuple(rgb[2, 3]) == expected


def test_palette_image_becomes_its_colours(tmp_path):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 200, 10, 20] + [0] * 762)
    image.save(tmp_path / "p.png")
    assert tuple(read_image(tmp_path / "p.png")[0, 0]) == (200, 10, 20)


def test_large_scans_pass_pillows_bomb_guard_but_not_our_limit(tmp_path, monkeypatch):
    Image.new("RGB", (300, 200)).save(tmp_path / "scan.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow would refuse this as a bomb
    assert read_image(tmp_path / "scan.png", max_pixels=None).shape == (200, 300, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000  # left as it was
    with pytest.raises(DataError, match=r"scan.png: image is 300x200 .*--max-pixels"):
        read_image(tmp_path / "scan.png", max_pixels=10_000)


def test_unreadable_and_missing_files_are_data_errors_naming_the_file(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match="bad.jpg"):
        read_image(tmp_path / "bad.jpg")
    with pytest.raises(DataError, match="missing.png: image file not found"):
        read_image(tmp_path / "missing.png")


def test_atomic_write_leaves_nothing_behind_when_interrupted(tmp_path):
    def fail(tmp):
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "out.png", fail)
    assert list(tmp_path.iterdir()) == []


def test_list_images_recurses_and_skips_hidden_and_non_images(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / ".cache").mkdir()
    for name in ("x.JPG", "a/y.png", ".cache/z.png", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a/y.png", "x.JPG"]


def test_overlay_keeps_background_pixels_and_tints_classes():
    image = np.full((3, 3, 3), 100, dtype=np.uint8)
    mask = np.zeros((3, 3), dtype=np.uint8)
    mask[1, 1] = 1  # VOC colour (128, 0, 0)
    out = overlay(image, mask)
    assert (out[0, 0] == 100).all()
    assert tuple(out[1, 1]) == (114, 50, 50)

"""Imports meet bad input without a traceback and without half-written output: decompression bombs among the
masks, a failure midway, malformed COCO annotations, RLE runs of the wrong total, polygons out to 1e9."""

import json
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fcnseg.data import read_mask_png
from fcnseg.annotations import import_dataset
from fcnseg.errors import DataError
from fcnseg.images import DEFAULT_MAX_PIXELS, ImageTooLargeError

H, W = 12, 16


def photo(seed=0, height=H, width=W):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def bomb_png(path, width=40000, height=40000):
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (the data is a 1x1 image's)."""
    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])))
    path.write_bytes(bytes(data))
    return path


def cvat_export(root, names):
    for folder in ("SegmentationClass", "JPEGImages"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "labelmap.txt").write_text("background:0,0,0::\nroad:128,64,128::\n")
    for i, name in enumerate(names):
        Image.fromarray(photo(i)).save(root / "JPEGImages" / f"{name}.png")
        mask = np.zeros((H, W, 3), dtype=np.uint8)
        mask[2:6, 3:9] = (128, 64, 128)
        Image.fromarray(mask).save(root / "SegmentationClass" / f"{name}.png")
    return root


def test_a_mask_png_claiming_40000x40000_pixels_is_a_data_error_naming_the_file(tmp_path):
    assert 40000 * 40000 > DEFAULT_MAX_PIXELS
    path = bomb_png(tmp_path / "bomb.png")
    with pytest.raises(ImageTooLargeError) as caught:
        read_mask_png(path)
    assert isinstance(caught.value, DataError) and caught.value.path == str(path)
    assert "40000x40000" in str(caught.value)


def test_a_cvat_mask_bomb_is_reported_and_skipped_and_the_other_masks_imported(tmp_path):
    src = cvat_export(tmp_path / "export", ["a", "bomb", "c"])
    bomb_png(src / "SegmentationClass" / "bomb.png")
    out = tmp_path / "out"
    report = import_dataset("cvat-mask", src, out, val_fraction=0)
    assert report.written == ["a", "c"]
    assert [(p.kind, p.name, p.path) for p in report.problems] == [
        ("unreadable_mask", "bomb", str(src / "SegmentationClass" / "bomb.png"))]
    assert "40000x40000" in report.problems[0].message
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a.png", "c.png"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a.png", "c.png"]


def test_a_labelme_mask_shape_claiming_40000x40000_pixels_is_a_bad_shape_of_its_file(tmp_path):
    import base64

    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(photo()).save(src / "a.png")
    bomb = base64.b64encode(bomb_png(tmp_path / "bomb.png").read_bytes()).decode("ascii")
    shapes = [{"label": "cat", "points": [[1, 1], [5, 5]], "shape_type": "mask", "mask": bomb},
              {"label": "cat", "points": [[8, 2], [12, 6]], "shape_type": "rectangle"}]
    (src / "a.json").write_text(json.dumps({"shapes": shapes, "imagePath": "a.png", "imageHeight": H, "imageWidth": W}))
    report = import_dataset("labelme", src, tmp_path / "out", val_fraction=0)
    assert [(p.kind, p.path) for p in report.problems] == [("bad_shape", str(src / "a.json"))]
    assert "40000x40000" in report.problems[0].message
    assert (read_mask_png(tmp_path / "out" / "masks" / "a.png") == 1).sum() == 4 * 4


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_an_import_failing_midway_leaves_no_output_folder_and_no_temporary_files(tmp_path, monkeypatch):
    import fcnseg.annotations.pipeline as pipeline

    src = cvat_export(tmp_path / "export", ["a", "b", "c"])
    real_write_mask, calls = pipeline.write_mask, []

    def failing_write_mask(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("the machine ran out of memory")
        return real_write_mask(*args, **kwargs)

    monkeypatch.setattr(pipeline, "write_mask", failing_write_mask)
    out = tmp_path / "out"
    with pytest.raises(MemoryError):
        import_dataset("cvat-mask", src, out)
    assert not out.exists() and leftovers(tmp_path) == []
    out.mkdir()  # an empty folder the user made stays as it was
    calls.clear()
    with pytest.raises(MemoryError):
        import_dataset("cvat-mask", src, out)
    assert list(out.iterdir()) == [] and leftovers(tmp_path) == []


def test_an_output_folder_holding_files_is_refused_with_the_remedy_and_left_untouched(tmp_path):
    src = cvat_export(tmp_path / "export", ["a"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="is not empty.*choose another.*never overwrites") as caught:
        import_dataset("cvat-mask", src, out)
    assert caught.value.path == str(out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    assert leftovers(tmp_path) == []
    report = import_dataset("cvat-mask", src, tmp_path / "new" / "data", val_fraction=0)  # parents are made
    assert report.ok and sorted(p.name for p in (tmp_path / "new" / "data").iterdir()) == [
        "classes.txt", "images", "import.json", "masks", "train.txt"]
    assert oct((tmp_path / "new" / "data").stat().st_mode & 0o777) != oct(0o700)


def coco_export(tmp_path, annotations, height=H, width=W):
    """A COCO instances JSON over one image ``a.png`` with categories 1 cat and 2 dog."""
    export = tmp_path / "export"
    (export / "images").mkdir(parents=True)
    Image.fromarray(photo(0, height, width)).save(export / "images" / "a.png")
    path = export / "annotations.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "height": height, "width": width}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }))
    return path


def box(ann_id, x0, y0, x1, y1, category=1, **fields):
    return {"id": ann_id, "image_id": 1, "category_id": category,
            "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]], "iscrowd": 0, **fields}


def test_each_malformed_coco_annotation_is_reported_with_its_id_and_the_rest_imported(tmp_path):
    good = box(1, 2, 2, 6, 8)
    bad = [
        box(2, 0, 0, 4, 4) | {"segmentation": {"size": 12, "counts": [192]}},  # RLE size not a list
        box(3, 0, 0, 4, 4) | {"image_id": [1]},  # list-valued ids
        box(4, 0, 0, 4, 4) | {"category_id": [1]},
        box(6, 0, 0, 4, 4) | {"segmentation": [["a", 1, 2, 3, 4, 5]]},  # a polygon with non-numbers
        box(7, 0, 0, 4, 4) | {"segmentation": [[{"x": 1}, 2, 3, 4, 5, 6]]},
        box(8, 0, 0, 4, 4) | {"segmentation": 5},  # a segmentation of the wrong type
        "not an annotation",
    ]
    path = coco_export(tmp_path, [good] + bad)
    report = import_dataset("coco", path, tmp_path / "out", val_fraction=0)
    assert report.written == ["a"]
    assert all(p.path == str(path) for p in report.problems)
    found = [(p.kind, re.match(r"annotations\[\d+\]|annotation \d+", p.message).group()) for p in report.problems]
    assert found == [  # first those found listing the annotations by image, then those found drawing them
        ("bad_annotation", "annotation 3"),
        ("bad_annotation", "annotations[7]"),  # the string: named by its place in the list
        ("bad_shape", "annotation 2"),
        ("bad_annotation", "annotation 4"),
        ("bad_shape", "annotation 6"),
        ("bad_shape", "annotation 7"),
        ("bad_shape", "annotation 8"),
    ]
    assert "image_id [1] is not an integer" in report.problems[0].message
    assert "RLE size is 12" in report.problems[2].message
    assert "category_id [1] is not an integer" in report.problems[3].message
    assert "segmentation is int; expected polygons or an RLE" in report.problems[6].message
    expected = np.zeros((H, W), dtype=np.int64)
    expected[2:8, 2:6] = 1
    assert np.array_equal(read_mask_png(tmp_path / "out" / "masks" / "a.png"), expected)


def test_compressed_rle_decodes_as_pycocotools_on_masks_with_long_runs(tmp_path):
    mask_utils = pytest.importorskip("pycocotools.mask")
    from fcnseg.annotations.coco import decode_rle

    rng = np.random.default_rng(0)
    for height, width in ((1, 1), (7, 5), (90, 130)):
        for density in (0.0, 0.02, 0.5, 0.98, 1.0):
            mask = rng.random((height, width)) < density
            mask[: height // 2, : width // 3] = True  # a run longer than one 5-bit group
            encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle = {"size": [height, width], "counts": encoded["counts"].decode("ascii")}
            assert np.array_equal(decode_rle(rle, height, width), mask)


@pytest.mark.parametrize("kind", ["compressed", "uncompressed"])
@pytest.mark.parametrize("pixels", [H * W - 40, H * W + 3])
def test_rle_runs_covering_other_than_height_times_width_pixels_are_refused(tmp_path, kind, pixels):
    mask_utils = pytest.importorskip("pycocotools.mask")
    counts = [5, 20, pixels - 25]
    if kind == "compressed":  # pycocotools encodes the runs of a mask of `pixels` pixels in one column
        column = np.zeros((pixels, 1), dtype=np.uint8)
        column[5:25] = 1
        counts = mask_utils.encode(np.asfortranarray(column))["counts"].decode("ascii")
    rle = {"size": [H, W], "counts": counts}
    path = coco_export(tmp_path, [box(1, 2, 2, 6, 8, category=2), box(2, 0, 0, 1, 1) | {"segmentation": rle}])
    first = import_dataset("coco", path, tmp_path / "out", val_fraction=0)
    assert [(p.kind, p.name) for p in first.problems] == [("bad_shape", "a")]
    assert f"{kind} RLE runs cover {pixels} pixels; expected {H} x {W} = {H * W}" in first.problems[0].message
    expected = np.zeros((H, W), dtype=np.int64)
    expected[2:8, 2:6] = 2
    assert np.array_equal(read_mask_png(tmp_path / "out" / "masks" / "a.png"), expected)


def test_compressed_rle_strings_that_are_not_run_lengths_are_refused():
    from fcnseg.annotations.coco import decode_rle

    for counts, message in (("0 1", "expected characters"), ("0\u00e9", "expected characters"), ("o", "middle of a run"),
                            ("1" + "0" * 2, "cover 1 pixels")):
        with pytest.raises(ValueError, match=message):
            decode_rle({"size": [2, 2], "counts": counts}, 2, 2)
    with pytest.raises(ValueError, match="negative length"):
        decode_rle({"size": [2, 2], "counts": "11@"}, 2, 2)  # the third run: 1 + (-16) < 0


@pytest.mark.parametrize("far", [1e9, 1e15, 1.5e308])
def test_a_polygon_reaching_out_to_huge_coordinates_covers_what_it_covers(tmp_path, far):
    # a triangle whose long edge is the diagonal y = x: it covers the pixel centres with y > x
    triangle = [-far, -far, far, far, -far, far]
    path = coco_export(tmp_path, [box(1, 0, 0, 1, 1) | {"segmentation": [triangle]}])
    report = import_dataset("coco", path, tmp_path / "out", val_fraction=0)
    assert report.ok and [n.kind for n in report.notes] == ["clipped"]
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    clear = np.abs(ys - xs) > 0.2  # a centre within 1/8 pixel of a slanted edge may fall either way
    mask = read_mask_png(tmp_path / "out" / "masks" / "a.png")
    assert np.array_equal((mask == 1)[clear], (ys > xs)[clear])


def test_clipping_a_ring_keeps_the_part_inside_the_box_and_drops_one_outside():
    from fcnseg.annotations.raster import clip_ring

    square = np.array([[-1e9, -1e9], [1e9, -1e9], [1e9, 1e9], [-1e9, 1e9]])
    clipped = clip_ring(square, 16, 12)
    assert sorted(map(tuple, clipped.tolist())) == [(-1.0, -1.0), (-1.0, 13.0), (17.0, -1.0), (17.0, 13.0)]
    assert len(clip_ring(np.array([[30.0, 0], [40, 0], [35, 5]]), 16, 12)) == 0
    inside = np.array([[2.0, 3], [9, 3], [4, 8]])
    assert np.array_equal(clip_ring(inside, 16, 12), inside)

"""Label maps written as every annotation format and read back by fcnseg's own importers: exact at tolerance 0 and
for masks, mean IU >= 99% at the default simplification; contours against the rasteriser; the GeoTIFF case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.annotations import ExportOptions, LabelledImage, export_annotations, import_dataset
from fcnseg.annotations.contours import outlines, ring_area, trace_rings
from fcnseg.cli import main
from fcnseg.data.palette import read_mask_png, write_mask_png

CLASSES = ["background", "cat", "dog", "bird"]

# (format, shapes): every writer, with masks where the format has them
CASES = [("coco", "polygon"), ("coco", "mask"), ("labelme", "polygon"), ("labelme", "mask"),
         ("cvat-xml", "polygon"), ("cvat-xml", "mask"), ("cvat-mask", None),
         ("label-studio", "polygon"), ("label-studio", "mask"), ("geojson", "polygon")]


def hard_label_map() -> np.ndarray:
    """Holes (one holding a one-pixel island of another class), touching regions of different classes,
    one-pixel regions on the image's corners, regions along every border, two pixels touching at a corner."""
    labels = np.zeros((20, 24), dtype=np.uint8)
    labels[2:12, 3:15] = 1
    labels[5:8, 6:9] = 0  # a hole of background ...
    labels[6, 7] = 2  # ... holding a one-pixel dog
    labels[9:11, 10:12] = 3  # a hole filled by another class
    labels[12:20, 3:15] = 2  # touches the cat along a whole edge
    labels[0, 23] = 3
    labels[19, 0] = 3  # one-pixel regions in corners
    labels[10:20, 20:24] = 1  # on the right and bottom borders
    labels[0:2, 0:3] = 2  # top-left corner
    labels[3, 18] = 2
    labels[4, 19] = 2  # touching at a corner only: two regions
    return labels


def blob_label_map(seed: int = 0, height: int = 240, width: int = 320) -> np.ndarray:
    """A realistic case: overlapping ellipses of 4 classes, as a segmentation of objects would give."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width]
    labels = np.zeros((height, width), dtype=np.uint8)
    for _ in range(10):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(10, 60)
        labels[(y - cy) ** 2 + ((x - cx) * rng.uniform(0.5, 1.5)) ** 2 < r * r] = rng.integers(1, 4)
    return labels


def write_image(folder: Path, name: str, height: int, width: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.fromarray(np.full((height, width, 3), 90, dtype=np.uint8)).save(path)
    return path


def round_trip(tmp_path: Path, labels: np.ndarray, fmt: str, options: ExportOptions) -> np.ndarray:
    image = write_image(tmp_path / "images", "photo.png", *labels.shape)
    out = tmp_path / f"{fmt}-out"
    export_annotations(fmt, [LabelledImage("photo.png", image, lambda: labels)], CLASSES, out, options)
    src = {"coco": out / "annotations.json", "cvat-xml": out / "annotations.xml", "label-studio": out / "tasks.json"}.get(fmt, out)
    images = {} if fmt in ("labelme", "geojson") else {"images": tmp_path / "images"}
    report = import_dataset(fmt, src, tmp_path / f"{fmt}-in", val_fraction=0, classes=out / "classes.txt", **images)
    assert report.ok, report.summary()
    assert list(report.classes.names) == CLASSES  # the class file written beside keeps the labels
    return read_mask_png(tmp_path / f"{fmt}-in" / "masks" / "photo.png")


def mean_iu(a: np.ndarray, b: np.ndarray) -> float:
    ious = [((a == c) & (b == c)).sum() / ((a == c) | (b == c)).sum() for c in np.union1d(np.unique(a), np.unique(b))]
    return float(np.mean(ious))


@pytest.mark.parametrize("fmt,shapes", CASES)
def test_exact_outlines_and_masks_come_back_through_the_importer_pixel_for_pixel(tmp_path, fmt, shapes):
    labels = hard_label_map()
    prefix = "" if fmt == "label-studio" else None  # tasks name the image as the importer finds it under --images
    back = round_trip(tmp_path, labels, fmt, ExportOptions(shapes=shapes, tolerance=0, min_area=0, image_prefix=prefix))
    assert np.array_equal(back, labels)


@pytest.mark.parametrize("fmt", ["coco", "labelme", "cvat-xml", "label-studio", "geojson"])
def test_default_simplification_keeps_mean_iu_above_99_percent(tmp_path, fmt):
    labels = blob_label_map()
    prefix = "" if fmt == "label-studio" else None
    back = round_trip(tmp_path, labels, fmt, ExportOptions(shapes="polygon", image_prefix=prefix))
    assert mean_iu(back, labels) >= 0.99
    assert not np.array_equal(back, labels)  # the tolerance did simplify


def test_traced_rings_fill_to_the_pixels_of_random_maps():
    from fcnseg.annotations.raster import Polygon, Shape, draw_shapes
    from fcnseg.annotations.contours import paint_pieces

    rng = np.random.default_rng(3)
    for trial in range(20):
        labels = rng.integers(0, 4, rng.integers(1, 30, 2)).astype(np.uint8)  # noise: every pixel its own corner case
        for overlap in ("area", "order"):
            pieces = paint_pieces(outlines(labels, tolerance=0, min_area=0))
            shapes = [Shape(Polygon.from_points([p.ring]), p.label, "piece") for p in pieces]
            drawn = draw_shapes(shapes, *labels.shape, overlap=overlap, name="n", path="p").mask
            assert np.array_equal(drawn, labels), (trial, overlap)


def test_rings_follow_pixel_edges_and_holes_turn_the_other_way():
    mask = np.zeros((5, 5), dtype=bool)
    mask[0:4, 0:4] = True
    mask[1:3, 1:3] = False
    rings, _, traced_areas = trace_rings(mask)
    areas = sorted(ring_area(r) for r in rings)
    assert areas == sorted(traced_areas) == [-4.0, 16.0]  # pixel-edge rings: their areas are pixel counts, the hole negative
    (found,) = outlines(mask.astype(np.uint8), tolerance=0, min_area=0)
    assert len(found.holes) == 1 and found.pixels == 12


def test_regions_and_holes_below_the_minimum_area_are_left_out():
    labels = np.zeros((12, 12), dtype=np.uint8)
    labels[1:11, 1:11] = 1
    labels[4, 4] = 0  # a one-pixel hole
    labels[0, 11] = 2  # a one-pixel region
    found = outlines(labels, tolerance=0, min_area=4)
    assert [(o.label, len(o.holes)) for o in found] == [(1, 0)]
    found = outlines(labels, tolerance=0, min_area=1)
    assert sorted((o.label, len(o.holes)) for o in found) == [(1, 1), (2, 0)]


def test_simplification_never_removes_a_one_pixel_region():
    labels = np.zeros((3, 3), dtype=np.uint8)
    labels[1, 1] = 1
    (found,) = outlines(labels, tolerance=5.0, min_area=1)
    assert len(found.outer) == 4 and abs(ring_area(found.outer) - 0.5) < 1e-9  # the diamond through its edge midpoints


def test_coco_rle_matches_pycocotools_both_ways():
    mask_util = pytest.importorskip("pycocotools.mask", reason="pycocotools (the import extra) checks the COCO RLE")
    from fcnseg.annotations.coco import decode_rle, encode_rle

    rng = np.random.default_rng(5)
    for height, width in ((1, 1), (7, 3), (40, 33)):
        for threshold in (0.0, 0.3, 0.9, 1.0):
            mask = rng.random((height, width)) < threshold
            ours = encode_rle(mask)
            theirs = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            assert ours["counts"] == theirs["counts"].decode("ascii")
            assert np.array_equal(mask_util.decode({"size": ours["size"], "counts": ours["counts"].encode()}).astype(bool), mask)
            assert np.array_equal(decode_rle(ours, height, width), mask)


def test_geotiff_regions_are_written_in_map_coordinates_and_read_back(tmp_path):
    rasterio = pytest.importorskip("rasterio", reason="rasterio (the geo extra) reads GeoTIFF georeferences")
    from rasterio.transform import from_origin

    labels = hard_label_map()
    transform = from_origin(500000.0, 4600000.0, 0.5, 0.25)  # 0.5 m columns, 0.25 m rows, north up
    image = tmp_path / "images" / "tile.tif"
    image.parent.mkdir()
    with rasterio.open(image, "w", driver="GTiff", height=20, width=24, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=transform) as dataset:
        dataset.write(np.zeros((3, 20, 24), dtype=np.uint8))
    out = tmp_path / "geo"
    export_annotations("geojson", [LabelledImage("tile.tif", image, lambda: labels)], CLASSES, out,
                       ExportOptions(tolerance=0, min_area=0))
    document = json.loads((out / "tile.geojson").read_text())
    assert document["fcnseg"]["coordinates"] == "map" and document["crs"]["properties"]["name"] == "EPSG:32633"
    pixel = [o for o in outlines(labels, tolerance=0, min_area=0)]
    first = document["features"][0]["geometry"]["coordinates"][0]
    expected = {tuple(transform @ (x, y)) for x, y in pixel[0].outer.tolist()}
    assert {tuple(p) for p in first} == expected
    assert ring_area(np.array(first)) > 0  # RFC 7946: exterior counter-clockwise in map coordinates
    report = import_dataset("geojson", out, tmp_path / "in", val_fraction=0, classes=out / "classes.txt")
    assert report.ok, report.summary()
    assert np.array_equal(read_mask_png(tmp_path / "in" / "masks" / "tile.png"), labels)


def test_a_plain_image_gets_pixel_coordinates(tmp_path):
    labels = hard_label_map()
    image = write_image(tmp_path / "images", "photo.png", *labels.shape)
    export_annotations("geojson", [LabelledImage("photo.png", image, lambda: labels)], CLASSES, tmp_path / "g")
    document = json.loads((tmp_path / "g" / "photo.geojson").read_text())
    assert document["fcnseg"] == {"image": "../images/photo.png", "width": 24, "height": 20, "coordinates": "pixel"}
    assert "crs" not in document


def test_export_annotations_command_reads_a_folder_of_label_pngs(tmp_path, capsys):
    labels = hard_label_map()
    write_image(tmp_path / "images" / "sub", "a.jpg", *labels.shape)
    write_mask_png(labels, tmp_path / "pred" / "sub" / "a_labels.png")
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    code = main(["export-annotations", str(tmp_path / "pred"), "--images", str(tmp_path / "images"), "--format", "coco",
                 "--classes", str(tmp_path / "classes.txt"), "-o", str(tmp_path / "out"), "--tolerance", "0", "--min-area", "0"])
    assert code == 0, capsys.readouterr()
    document = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert [image["file_name"] for image in document["images"]] == ["sub/a.jpg"]
    assert {c["name"] for c in document["categories"]} <= set(CLASSES)


def test_a_label_map_of_another_size_is_reported_and_skipped(tmp_path, capsys):
    write_image(tmp_path / "images", "a.png", 10, 10)
    write_image(tmp_path / "images", "b.png", 10, 10)
    write_mask_png(np.ones((10, 10), dtype=np.uint8), tmp_path / "pred" / "a.png")
    write_mask_png(np.ones((10, 12), dtype=np.uint8), tmp_path / "pred" / "b.png")
    (tmp_path / "classes.txt").write_text("background\nthing\n")
    code = main(["export-annotations", str(tmp_path / "pred"), "--images", str(tmp_path / "images"), "--format", "labelme",
                 "--classes", str(tmp_path / "classes.txt"), "-o", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 1 and "1 skipped" in printed and "12x10" in printed
    assert (tmp_path / "out" / "a.json").is_file() and not (tmp_path / "out" / "b.json").exists()


def test_predict_saves_its_label_maps_as_annotations(tmp_path):
    from serve_support import CLASS_NAMES, sample_image, save_small_checkpoint

    checkpoint = save_small_checkpoint(tmp_path / "model.pt")
    Image.fromarray(sample_image(48, 64)).save(tmp_path / "photo.png")
    out = tmp_path / "pred"
    code = main(["predict", str(checkpoint), str(tmp_path / "photo.png"), "-o", str(out), "--no-progress", "--workers", "0",
                 "--save-annotations", "coco", "--annotation-tolerance", "0", "--annotation-min-area", "0"])
    assert code == 0
    predicted = read_mask_png(out / "photo_labels.png")
    assert len(np.unique(predicted)) > 1  # something to write
    report = import_dataset("coco", out / "coco" / "annotations.json", tmp_path / "back", val_fraction=0,
                            classes=out / "coco" / "classes.txt", images=tmp_path)
    assert report.ok, report.summary()
    assert list(report.classes.names) == CLASS_NAMES
    assert np.array_equal(read_mask_png(tmp_path / "back" / "masks" / "photo.png"), predicted)


def test_export_annotations_refuses_a_folder_holding_files_unless_told(tmp_path, capsys):
    labels = hard_label_map()
    write_image(tmp_path / "images", "a.png", *labels.shape)
    write_mask_png(labels, tmp_path / "pred" / "a.png")
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "annotations.json").write_text("the user's own")
    argv = ["export-annotations", str(tmp_path / "pred"), "--images", str(tmp_path / "images"), "--format", "coco",
            "--classes", str(tmp_path / "classes.txt"), "-o", str(tmp_path / "out")]
    assert main(argv) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "out" / "annotations.json").read_text() == "the user's own"
    assert main(argv + ["--overwrite"]) == 0
    assert json.loads((tmp_path / "out" / "annotations.json").read_text())["images"][0]["file_name"] == "a.png"


def test_label_studio_tasks_name_local_files_and_come_with_a_config_for_the_classes(tmp_path):
    from fcnseg.annotations.label_studio_backend import parse_label_config

    labels = hard_label_map()
    image = write_image(tmp_path / "images", "photo.png", *labels.shape)
    export_annotations("label-studio", [LabelledImage("photo.png", image, lambda: labels)], CLASSES, tmp_path / "ls")
    (task,) = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert task["data"] == {"image": "/data/local-files/?d=photo.png"}
    results = task["predictions"][0]["result"]
    assert {r["type"] for r in results} == {"brushlabels"} and {r["from_name"] for r in results} == {"tag"}
    (control,) = parse_label_config((tmp_path / "ls" / "label_config.xml").read_text())
    assert (control.tag, control.name, control.to_name) == ("BrushLabels", "tag", "image")
    assert control.labels == tuple(CLASSES[1:])

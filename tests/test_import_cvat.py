"""`fcnseg import cvat-mask`: CVAT "Segmentation mask 1.1" colours -> class indices, unknown colours and bad items reported."""

import json

import numpy as np
from PIL import Image

from fcnseg.cli import main
from fcnseg.data import (
    VOC_CLASSES,
    build_dataset,
    read_class_file,
    read_mask_png,
    read_split_file,
    voc_palette,
)
from fcnseg.annotations import import_dataset

H, W = 20, 28
ROAD, CAR, ODD = (128, 64, 128), (0, 0, 142), (1, 2, 3)


def photo(seed, height=H, width=W):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def labels(seed):
    """A label map in labelmap line order (0 background, 1 road, 2 car)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[rng.integers(0, 8) : 14, 3:20] = 1
    labels[10:18, rng.integers(5, 15) : 26] = 2
    return labels


def cvat_export(root, labelmap="# label:color_rgb:parts:actions\nbackground:0,0,0::\nroad:128,64,128::\ncar:0,0,142::\n"):
    for folder in ("SegmentationClass", "JPEGImages", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    if labelmap is not None:
        (root / "labelmap.txt").write_text(labelmap)
    return root


def rgb_mask(label_map, colours):
    return np.array(colours, dtype=np.uint8)[label_map]


def test_colours_map_to_classes_and_unknown_colours_are_reported_and_ignored(tmp_path, capsys):
    src = cvat_export(tmp_path / "export")
    colours = [(0, 0, 0), ROAD, CAR]
    a, b = labels(0), labels(1)
    painted = rgb_mask(a, colours)
    painted[0:2, 0:4] = ODD
    Image.fromarray(painted).save(src / "SegmentationClass" / "a.png")
    palette_mask = Image.fromarray(b, mode="P")  # a palette PNG whose palette holds the labelmap colours
    palette_mask.putpalette([v for c in colours for v in c] + [0] * (768 - 9))
    palette_mask.save(src / "SegmentationClass" / "b.png")
    Image.fromarray(rgb_mask(labels(2)[:-1], colours)).save(src / "SegmentationClass" / "short.png")
    Image.fromarray(rgb_mask(labels(3), colours)).save(src / "SegmentationClass" / "lost.png")
    Image.fromarray(photo(0)).save(src / "JPEGImages" / "a.jpg", quality=95)
    Image.fromarray(photo(1)).save(src / "JPEGImages" / "b.png")
    Image.fromarray(photo(2)).save(src / "JPEGImages" / "short.png")
    (src / "ImageSets" / "Segmentation" / "default.txt").write_text("a\nb\nshort\nlost\n")
    out = tmp_path / "out"
    assert main(["import", "cvat-mask", str(src), str(out), "--val-fraction", "0"]) == 1
    info = read_class_file(out / "classes.txt")  # sorted by name, each with its labelmap colour
    assert info.names == ("background", "car", "road") and info.colours == ((0, 0, 0), CAR, ROAD)
    by_name = np.array([0, 2, 1])  # labelmap line -> class: road is class 2, car class 1
    expected_a = by_name[a]
    expected_a[0:2, 0:4] = 255
    assert np.array_equal(read_mask_png(out / "masks" / "a.png"), expected_a)
    assert np.array_equal(read_mask_png(out / "masks" / "b.png"), by_name[b])
    report = json.loads((out / "import.json").read_text())
    found = {(p["kind"], p["name"]): p for p in report["problems"]}
    assert set(found) == {("unknown_colour", "a"), ("size_mismatch", "short"), ("missing_image", "lost")}
    assert found["unknown_colour", "a"]["path"] == str(src / "SegmentationClass" / "a.png")
    assert "(1,2,3) x8" in found["unknown_colour", "a"]["message"]
    assert found["missing_image", "lost"]["path"] == str(src / "JPEGImages" / "lost.jpg")
    assert "unknown_colour" in capsys.readouterr().out
    assert read_split_file(out / "train.txt") == ["a", "b"]
    assert (out / "images" / "a.jpg").read_bytes() == (src / "JPEGImages" / "a.jpg").read_bytes()
    dataset = build_dataset("folder", out, "train")
    image, mask = dataset[1]
    assert tuple(image.shape) == (3, H, W) and tuple(mask.shape) == (H, W) and dataset.class_names == ["background", "car", "road"]


def test_without_a_background_line_black_is_background_and_one_channel_masks_index_the_labelmap(tmp_path):
    src = cvat_export(tmp_path / "export", labelmap="car:0,0,142::\nroad:128,64,128::\n")
    line_numbers = np.zeros((H, W), dtype=np.uint8)
    line_numbers[:] = 1  # road everywhere ...
    line_numbers[2:9, 2:9] = 0  # ... but a car
    Image.fromarray(line_numbers, mode="L").save(src / "SegmentationClass" / "grey.png")
    coloured = np.zeros((H, W, 3), dtype=np.uint8)
    coloured[5:15, 10:20] = ROAD
    Image.fromarray(coloured).save(src / "SegmentationClass" / "black.png")
    Image.fromarray(photo(0)).save(src / "JPEGImages" / "grey.png")
    Image.fromarray(photo(1)).save(src / "JPEGImages" / "black.png")
    report = import_dataset("cvat-mask", src, tmp_path / "out", val_fraction=0)  # no ImageSets list: every mask
    assert report.ok, report.problems
    info = read_class_file(tmp_path / "out" / "classes.txt")
    assert info.names == ("background", "car", "road") and info.colours[0] == (0, 0, 0)
    expected = np.full((H, W), 2)
    expected[2:9, 2:9] = 1
    assert np.array_equal(read_mask_png(tmp_path / "out" / "masks" / "grey.png"), expected)
    expected = np.zeros((H, W))
    expected[5:15, 10:20] = 2
    assert np.array_equal(read_mask_png(tmp_path / "out" / "masks" / "black.png"), expected)


def test_without_a_labelmap_the_pascal_voc_labels_and_colours_are_used(tmp_path):
    src = cvat_export(tmp_path / "export", labelmap=None)
    palette = voc_palette(256)
    label_map = np.zeros((H, W), dtype=np.uint8)
    label_map[3:12, 4:16] = VOC_CLASSES.index("cat")
    Image.fromarray(palette[label_map]).save(src / "SegmentationClass" / "x.png")
    Image.fromarray(photo(0)).save(src / "JPEGImages" / "x.png")
    report = import_dataset("cvat-mask", src, tmp_path / "out", images=src / "JPEGImages", val_fraction=0)
    assert report.ok, report.problems
    assert read_class_file(tmp_path / "out" / "classes.txt").names == VOC_CLASSES
    assert np.array_equal(read_mask_png(tmp_path / "out" / "masks" / "x.png"), label_map)

"""`fcnseg import labelme`: polygons, rectangles, circles and masks at pixel centres, image paths and embedded images,
the class list (union or a class file), ignored shapes, and bad files reported by file."""

import base64
import io
import json

import matplotlib.path as mpath
import numpy as np
import pytest
from PIL import Image

from fcnseg.cli import main
from fcnseg.data import build_dataset, read_class_file, read_mask_png, read_split_file
from fcnseg.annotations import import_dataset
from fcnseg.errors import DataError

H, W = 30, 40


def centres():
    ys, xs = np.mgrid[0:H, 0:W]
    return xs + 0.5, ys + 0.5  # pixel (r, c) spans [c, c+1) x [r, r+1)


def png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def photo(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def shape(label, shape_type, points, **extra):
    return {"label": label, "points": [list(map(float, p)) for p in points], "group_id": None,
            "description": "", "shape_type": shape_type, "flags": {}, **extra}


def labelme_json(path, shapes, image_path=None, image_data=None, height=H, width=W):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": image_path,
        "imageData": None if image_data is None else base64.b64encode(image_data).decode("ascii"),
        "imageHeight": height, "imageWidth": width,
    }))


TRIANGLE = [(2, 3), (18.5, 3), (2, 19.5)]  # no pixel centre within 0.35 px of an edge: an exact comparison
RECT = [(36.0, 20.0), (24.0, 12.0)]  # corners in either order
CIRCLE = [(30.5, 6.25), (30.5, 10.75)]  # centre and a point on the circle: radius 4.5


def expected_first():
    x, y = centres()
    triangle = mpath.Path(np.array(TRIANGLE)).contains_points(np.c_[x.ravel(), y.ravel()]).reshape(H, W)
    rectangle = (x >= 24) & (x <= 36) & (y >= 12) & (y <= 20)
    circle = (x - 30.5) ** 2 + (y - 6.25) ** 2 <= 4.5**2
    return triangle, rectangle, circle


def write_export(src):
    pics = src.parent / "pics"
    pics.mkdir(parents=True)
    Image.fromarray(photo(0)).save(pics / "first.png")
    labelme_json(src / "first.json", [
        shape("dog", "polygon", TRIANGLE),
        shape("cat", "rectangle", RECT),
        shape("cat", "circle", CIRCLE),
        shape("dog", "line", [(1, 1), (9, 9)]),
        shape("bird", "point", [(5, 5)]),  # only a point: no class of its own
    ], image_path="..\\pics\\first.png")  # as labelme writes it on Windows
    bitmap = np.zeros((6, 9), dtype=bool)
    bitmap[1:5, 2:8] = True
    bitmap[3, 3] = False
    labelme_json(src / "sub" / "second.json", [
        shape("__ignore__", "polygon", [(0, 0), (40, 0), (40, 12), (0, 12)]),
        shape("cat", "mask", [(10.7, 4.2), (18.7, 9.2)], mask=base64.b64encode(png_bytes(bitmap.astype(np.uint8) * 255)).decode()),
    ], image_data=png_bytes(photo(1)))
    return bitmap


def test_shapes_become_class_indices_at_pixel_centres_with_labels_sorted(tmp_path):
    src = tmp_path / "src"
    bitmap = write_export(src)
    out = tmp_path / "out"
    report = import_dataset("labelme", src, out, val_fraction=0)
    assert report.ok, report.problems
    assert read_class_file(out / "classes.txt").names == ("background", "cat", "dog")
    triangle, rectangle, circle = expected_first()
    expected = np.zeros((H, W), dtype=np.int64)
    expected[triangle] = 2
    expected[rectangle | circle] = 1
    assert np.array_equal(read_mask_png(out / "masks" / "first.png"), expected)
    assert [(n.kind, n.name) for n in report.notes] == [("ignored_shape", "first")]
    assert "2 shapes without area" in report.notes[0].message

    second = np.zeros((H, W), dtype=np.int64)
    second[:12] = 255  # __ignore__ goes underneath
    second[4:10, 10:19][bitmap] = 1  # the mask's box starts at the truncated first corner (10, 4)
    assert np.array_equal(read_mask_png(out / "masks" / "second.png"), second)
    assert (out / "images" / "second.png").read_bytes() == png_bytes(photo(1))  # embedded image, as stored
    assert np.array_equal(np.asarray(Image.open(out / "images" / "first.png")), photo(0))


def test_a_class_file_fixes_the_order_and_labels_missing_from_it_are_an_error_naming_them(tmp_path):
    src = tmp_path / "src"
    write_export(src)
    horse = shape("horse", "rectangle", [(1, 1), (5, 5)])
    third_shapes = [
        shape("dog", "polygon", [(45, 2), (60, 2), (50, 20)]),  # beyond the right edge of the 40 px image
        shape("cat", "rectangle", [(30, -8), (50, 6)]),  # partly outside: clipped
    ]
    labelme_json(src / "third.json", [horse, shape("Zebu", "rectangle", [(1, 1), (2, 2)])] + third_shapes,
                 image_path="../pics/first.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\n_background_\ndog\ncat\n")  # labelme's labels.txt
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"labels.txt: 2 categories of .* not in the class file: 'horse', 'Zebu'; add them"):
        import_dataset("labelme", src, out, classes=labels, val_fraction=0)
    assert not out.exists()
    labelme_json(src / "third.json", third_shapes, image_path="../pics/first.png")
    report = import_dataset("labelme", src, out, classes=labels, val_fraction=0)
    assert read_class_file(out / "classes.txt").names == ("background", "dog", "cat")
    third = str(src / "third.json")
    assert [(p.kind, p.name, p.path) for p in report.problems] == [("outside_image", "third", third)]
    assert ("clipped", "third", third) in [(n.kind, n.name, n.path) for n in report.notes]
    triangle, rectangle, circle = expected_first()
    mask = read_mask_png(out / "masks" / "first.png")
    assert np.array_equal(mask == 1, triangle) and np.array_equal(mask == 2, rectangle | circle)
    x, y = centres()
    kept = np.where((x >= 30) & (y <= 6), 2, 0)  # only the clipped cat: the dog is outside
    assert np.array_equal(read_mask_png(out / "masks" / "third.png"), kept)


def test_missing_images_duplicate_names_and_broken_json_are_skipped_and_reported(tmp_path, capsys):
    src = tmp_path / "src"
    write_export(src)
    labelme_json(src / "other" / "first.json", [], image_path="../../pics/first.png")  # a second "first"
    labelme_json(src / "lost.json", [], image_path="lost.jpg")
    (src / "broken.json").write_text("{not json")
    out = tmp_path / "out"
    assert main(["import", "labelme", str(src), str(out), "--val-fraction", "0.5"]) == 1
    printed = capsys.readouterr().out
    report = json.loads((out / "import.json").read_text())
    found = {(p["kind"], p["path"]) for p in report["problems"]}
    assert found == {
        ("duplicate_name", str(src / "other" / "../../pics/first.png")),
        ("missing_image", str(src / "lost.jpg")),
        ("unreadable_annotation", str(src / "broken.json")),
    }
    assert "2 of 5 images written, 3 skipped" in printed and "lost.jpg" in printed
    train, val = read_split_file(out / "train.txt"), read_split_file(out / "val.txt")
    assert sorted(train + val) == ["first", "second"] and len(val) == 1
    dataset = build_dataset("folder", out, "train")
    image, mask = dataset[0]
    assert tuple(image.shape) == (3, H, W) and tuple(mask.shape) == (H, W) and dataset.num_classes == 3

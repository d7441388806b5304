"""One class order for every importer (COCO, labelme, CVAT masks, CVAT XML): background 0, then the category names sorted alphabetically (case-insensitive,
ties by the exact string), whatever the tool, the ids or the order of first appearance; a class file imposes its own."""

import json

import numpy as np
import pytest
from PIL import Image

from fcnseg.data import read_class_file, read_mask_png
from fcnseg.annotations import import_dataset
from fcnseg.annotations.class_list import class_order
from fcnseg.errors import DataError

H, W = 16, 20
# Four photos annotated once: (category, box x0, y0, x1, y1) per photo, in the annotation tool's order.
PHOTOS = {
    "p1": [("person", 1, 1, 6, 9), ("cat", 10, 2, 15, 6)],
    "p2": [("rocket", 2, 3, 9, 14)],
    "p3": [("cup", 12, 8, 19, 15), ("person", 0, 0, 4, 4)],
    "p4": [("cat", 5, 5, 11, 11), ("cup", 14, 0, 20, 3)],
}
FIRST_SEEN = ["person", "cat", "rocket", "cup"]  # the COCO ids 1..4 follow it, as a tool numbering categories would
COLOURS = {"background": (0, 0, 0), "person": (192, 128, 128), "cat": (64, 0, 0), "rocket": (0, 64, 128), "cup": (128, 64, 0)}


def photo(seed):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def label_map(boxes, order):
    """The expected label map: box pixels (columns x0..x1-1, rows y0..y1-1) -> 1 + position of the category in ``order``."""
    labels = np.zeros((H, W), dtype=np.int64)
    for name, x0, y0, x1, y1 in boxes:
        labels[y0:y1, x0:x1] = order.index(name)
    return labels


def write_coco(root):
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for number, (name, boxes) in enumerate(PHOTOS.items(), start=1):
        Image.fromarray(photo(number)).save(root / "images" / f"{name}.png")
        images.append({"id": number, "file_name": f"{name}.png", "height": H, "width": W})
        for category, x0, y0, x1, y1 in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": number, "category_id": FIRST_SEEN.index(category) + 1,
                                "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]], "iscrowd": 0})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(FIRST_SEEN)]
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def write_labelme(root):
    root.mkdir(parents=True)
    for number, (name, boxes) in enumerate(PHOTOS.items(), start=1):
        Image.fromarray(photo(number)).save(root / f"{name}.png")
        shapes = [{"label": c, "points": [[x0, y0], [x1, y1]], "shape_type": "rectangle"} for c, x0, y0, x1, y1 in boxes]
        (root / f"{name}.json").write_text(json.dumps({"shapes": shapes, "imagePath": f"{name}.png", "imageHeight": H, "imageWidth": W}))
    return root


def write_cvat(root):
    for folder in ("SegmentationClass", "JPEGImages"):
        (root / folder).mkdir(parents=True)
    labelmap = ["background"] + FIRST_SEEN  # CVAT lists labels in the order they were created
    (root / "labelmap.txt").write_text("".join(f"{n}:{','.join(map(str, COLOURS[n]))}::\n" for n in labelmap))
    for number, (name, boxes) in enumerate(PHOTOS.items(), start=1):
        Image.fromarray(photo(number)).save(root / "JPEGImages" / f"{name}.png")
        colours = np.array([COLOURS[n] for n in labelmap], dtype=np.uint8)
        Image.fromarray(colours[label_map(boxes, labelmap)]).save(root / "SegmentationClass" / f"{name}.png")
    return root


def write_cvat_xml(root):
    (root / "images").mkdir(parents=True)
    images = []
    for number, (name, boxes) in enumerate(PHOTOS.items(), start=1):
        Image.fromarray(photo(number)).save(root / "images" / f"{name}.png")
        shapes = "".join(f'<box label="{c}" occluded="0" source="manual" xtl="{x0}.00" ytl="{y0}.00" xbr="{x1}.00" '
                         f'ybr="{y1}.00" z_order="0"></box>' for c, x0, y0, x1, y1 in boxes)
        images.append(f'<image id="{number - 1}" name="{name}.png" width="{W}" height="{H}">{shapes}</image>')
    labels = "".join(f"<label><name>{n}</name><color>#ff0000</color><type>any</type></label>" for n in FIRST_SEEN)
    (root / "annotations.xml").write_text(
        f'<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta><task><labels>{labels}'
        f"</labels></task></meta>{''.join(images)}</annotations>")
    return root


EXPORTS = {"coco": write_coco, "labelme": write_labelme, "cvat-mask": write_cvat, "cvat-xml": write_cvat_xml}


def import_all(tmp_path, classes=None):
    found = {}
    for format, write in EXPORTS.items():
        src = write(tmp_path / f"{format}-export")
        out = tmp_path / f"{format}-out"
        report = import_dataset(format, src, out, val_fraction=0, classes=classes)
        assert report.ok, (format, report.problems)
        names = read_class_file(out / "classes.txt").names
        found[format] = (names, {name: read_mask_png(out / "masks" / f"{name}.png") for name in PHOTOS})
    return found


@pytest.mark.parametrize(
    "class_file, expected_names",
    [
        (None, ("background", "cat", "cup", "person", "rocket")),
        ("rocket\nperson\nspoon\ncup\ncat\n", ("background", "rocket", "person", "spoon", "cup", "cat")),  # spoon: unused, kept
        ("background 9 9 9\nperson 1 2 3\ncat 4 5 6\ncup 7 8 9\nrocket 10 11 12\n",  # colours of its own
         ("background", "person", "cat", "cup", "rocket")),
    ],
)
def test_coco_labelme_cvat_mask_and_cvat_xml_exports_of_the_same_annotations_import_to_the_same_classes_and_maps(
    tmp_path, class_file, expected_names
):
    classes = None
    if class_file is not None:
        classes = tmp_path / "classes.txt"
        classes.write_text(class_file)
    found = import_all(tmp_path, classes)
    for format, (names, maps) in found.items():
        assert names == expected_names, format
        for name, boxes in PHOTOS.items():
            assert np.array_equal(maps[name], label_map(boxes, list(expected_names))), (format, name)


def test_a_category_missing_from_the_class_file_is_an_error_in_every_format(tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("background\ncat\nperson\n")
    for format, write in EXPORTS.items():
        src = write(tmp_path / f"{format}-export")
        with pytest.raises(DataError, match="2 categories of .* not in the class file: 'cup', 'rocket'") as caught:
            import_dataset(format, src, tmp_path / f"{format}-out", classes=classes)
        assert caught.value.path == str(classes)
        assert not (tmp_path / f"{format}-out").exists()


def test_the_class_order_ignores_case_and_breaks_ties_by_the_exact_string():
    assert sorted(["cup", "b", "Cat", "B", "cat", "a2", "A1"], key=class_order) == ["A1", "a2", "B", "b", "Cat", "cat", "cup"]


def test_import_help_states_the_class_order(capsys):
    from fcnseg.cli import main

    with pytest.raises(SystemExit):
        main(["import", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "background is 0, then the category names sorted alphabetically, case-insensitively" in text
    assert "--classes FILE imposes its order instead" in text

"""`fcnseg import cvat-xml`: CVAT for images 1.1 boxes (turned too), polygons, ellipses and masks at pixel centres,
z_order, shapes without area, and bad shapes reported by file."""

import matplotlib.path as mpath
import numpy as np
import pytest
from matplotlib.patches import Ellipse as MplEllipse
from PIL import Image

from fcnseg.cli import main
from fcnseg.data import read_class_file, read_mask_png
from fcnseg.annotations import import_dataset
from fcnseg.errors import DataError

H, W = 30, 40


def centres():
    ys, xs = np.mgrid[0:H, 0:W]
    return xs + 0.5, ys + 0.5


def export(root, shapes_by_image, labels=("car", "tree")):
    (root / "images").mkdir(parents=True)
    images = []
    for number, (name, shapes) in enumerate(shapes_by_image.items()):
        Image.fromarray(np.random.default_rng(number).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / "images" / f"{name}.png")
        images.append(f'<image id="{number}" name="{name}.png" width="{W}" height="{H}">{"".join(shapes)}</image>')
    listed = "".join(f"<label><name>{n}</name></label>" for n in labels)
    (root / "annotations.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>'
        f"<meta><task><labels>{listed}</labels></task></meta>{''.join(images)}</annotations>")
    return root


def ellipse_inside(cx, cy, rx, ry, rotation, scale):
    patch = MplEllipse((cx, cy), 2 * rx * scale, 2 * ry * scale, angle=rotation)
    path = patch.get_path().transformed(patch.get_patch_transform())
    x, y = centres()
    return path.contains_points(np.c_[x.ravel(), y.ravel()]).reshape(H, W)


def row_major_runs(bitmap):
    """CVAT's mask rle: run lengths row by row over the box, starting with 0s."""
    runs, current, run = [], False, 0
    for value in bitmap.ravel():
        if value != current:
            runs.append(run)
            current, run = value, 0
        run += 1
    runs.append(run)
    return ", ".join(map(str, runs))


def test_boxes_polygons_ellipses_and_masks_are_labelled_at_pixel_centres(tmp_path):
    triangle = [(2.2, 3.1), (19.4, 4.6), (6.3, 21.7)]
    bitmap = np.random.default_rng(5).random((5, 7)) < 0.5
    src = export(tmp_path / "export", {
        "a": [
            '<polygon label="tree" points="{}" z_order="0"></polygon>'.format(";".join(f"{x},{y}" for x, y in triangle)),
            '<ellipse label="car" cx="28.3" cy="19.6" rx="7.2" ry="3.4" rotation="30" z_order="0"></ellipse>',
            '<polyline label="car" points="1,1;5,5" z_order="0"></polyline>',
        ],
        "b": [
            '<box label="car" xtl="4" ytl="6" xbr="12" ybr="8" rotation="90" z_order="0"></box>',  # turned: x 7..9, y 3..11
            f'<mask label="tree" rle="{row_major_runs(bitmap)}" left="20" top="12" width="7" height="5" z_order="0"></mask>',
        ],
    })
    report = import_dataset("cvat-xml", src, tmp_path / "out", val_fraction=0)
    assert report.ok, report.problems
    assert read_class_file(tmp_path / "out" / "classes.txt").names == ("background", "car", "tree")
    assert [(n.kind, n.name) for n in report.notes] == [("ignored_shape", "a")]
    mask = read_mask_png(tmp_path / "out" / "masks" / "a.png")
    x, y = centres()
    inside = mpath.Path(np.array(triangle)).contains_points(np.c_[x.ravel(), y.ravel()]).reshape(H, W)
    clear = np.ones((H, W), dtype=bool)
    for (ax, ay), (bx, by) in zip(triangle, triangle[1:] + triangle[:1]):
        t = np.clip(((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / ((bx - ax) ** 2 + (by - ay) ** 2), 0, 1)
        clear &= np.hypot(x - ax - t * (bx - ax), y - ay - t * (by - ay)) > 0.2
    assert np.array_equal((mask == 2)[clear], inside[clear])
    inner, outer = ellipse_inside(28.3, 19.6, 7.2, 3.4, 30, 0.97), ellipse_inside(28.3, 19.6, 7.2, 3.4, 30, 1.03)
    assert (mask == 1)[inner].all() and not (mask == 1)[~outer].any() and (mask == 1).sum() > 0
    expected_b = np.zeros((H, W), dtype=np.int64)
    expected_b[3:11, 7:9] = 1
    expected_b[12:17, 20:27][bitmap] = 2
    assert np.array_equal(read_mask_png(tmp_path / "out" / "masks" / "b.png"), expected_b)


def test_z_order_decides_overlaps_under_order_and_bad_shapes_are_reported_by_file(tmp_path, capsys):
    src = export(tmp_path / "export", {"a": [
        '<box label="car" xtl="0" ytl="0" xbr="10" ybr="10" z_order="2"></box>',
        '<box label="tree" xtl="5" ytl="5" xbr="20" ybr="20" z_order="1"></box>',
        '<polygon label="tree" points="1,2;3" z_order="0"></polygon>',
        '<mask label="car" rle="3, 4" left="0" top="0" width="3" height="3" z_order="0"></mask>',
    ]})
    out = tmp_path / "out"
    assert main(["import", "cvat-xml", str(src / "annotations.xml"), str(out), "--overlap", "order", "--val-fraction", "0"]) == 1
    expected = np.zeros((H, W), dtype=np.int64)
    expected[5:20, 5:20] = 2
    expected[0:10, 0:10] = 1  # z_order 2: on top although it comes first
    assert np.array_equal(read_mask_png(out / "masks" / "a.png"), expected)
    printed = capsys.readouterr().out
    assert sum(line.strip().startswith("bad_shape") for line in printed.splitlines()) == 2
    assert "mask runs cover 7 pixels; expected its box 3 x 3 = 9" in printed
    assert str(src / "annotations.xml") in printed


def test_a_file_that_is_not_cvat_xml_is_one_data_error(tmp_path):
    (tmp_path / "annotations.xml").write_text("<annotations><image")
    with pytest.raises(DataError, match="cannot be read as XML"):
        import_dataset("cvat-xml", tmp_path, tmp_path / "out")
    (tmp_path / "annotations.xml").write_text("<dataset/>")
    with pytest.raises(DataError, match="found <dataset>"):
        import_dataset("cvat-xml", tmp_path, tmp_path / "out")

"""`fcnseg import coco`: polygons, RLE, crowds, overlaps, panoptic PNGs, bad items by file, split files, and the result trains."""

import json

import matplotlib.path as mpath
import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.cli import main
from fcnseg.data import build_dataset, read_class_file, read_mask_png, read_split_file
from fcnseg.annotations import import_dataset
from fcnseg.errors import DataError

pycocotools_mask = pytest.importorskip("pycocotools.mask")

H, W = 24, 32


def centres(height=H, width=W):
    """x, y of every pixel centre, [height, width] each (pixel (r, c) spans [c, c+1) x [r, r+1))."""
    ys, xs = np.mgrid[0:height, 0:width]
    return xs + 0.5, ys + 0.5


def box_pixels(x0, y0, x1, y1, height=H, width=W):
    x, y = centres(height, width)
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def polygon_pixels(points, height=H, width=W):
    """Pixel centres inside the polygon (matplotlib's point-in-polygon test) and their distance to its edges."""
    x, y = centres(height, width)
    points = np.asarray(points, dtype=float)
    inside = mpath.Path(points).contains_points(np.c_[x.ravel(), y.ravel()]).reshape(height, width)
    distance = np.full((height, width), np.inf)
    for (ax, ay), (bx, by) in zip(points, np.roll(points, -1, axis=0)):
        t = np.clip(((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / ((bx - ax) ** 2 + (by - ay) ** 2), 0, 1)
        distance = np.minimum(distance, np.hypot(x - ax - t * (bx - ax), y - ay - t * (by - ay)))
    return inside, distance


def flat(points):
    return [float(v) for p in points for v in p]


def write_image(path, height=H, width=W, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def coco_json(tmp_path, images, annotations, categories=None):
    categories = categories or [{"id": 5, "name": "elk"}, {"id": 2, "name": "dog"}]  # by name: dog 1, elk 2
    path = tmp_path / "export" / "annotations.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def image_record(image_id, file_name, height=H, width=W):
    return {"id": image_id, "file_name": file_name, "height": height, "width": width}


def polygon_annotation(ann_id, image_id, category, points, iscrowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": category, "segmentation": [flat(points)], "iscrowd": iscrowd}


def uncompressed_rle(mask):
    """COCO's uncompressed RLE written out directly: run lengths over the column-major pixels, starting with 0s."""
    pixels = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    counts, current, run = [], 0, 0
    for value in pixels:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def mask_of(out, name):
    return read_mask_png(out / "masks" / f"{name}.png")


TRIANGLE = [(3.3, 2.1), (28.6, 6.7), (9.2, 21.4)]


def test_polygons_are_labelled_at_pixel_centres_with_categories_sorted_by_name(tmp_path):
    write_image(tmp_path / "export" / "images" / "a.png")
    json_path = coco_json(
        tmp_path,
        [image_record(1, "a.png")],
        [
            polygon_annotation(10, 1, 2, TRIANGLE),
            polygon_annotation(11, 1, 5, [(20, 14), (30, 14), (30, 22), (20, 22)]),  # on top: smaller
        ],
    )
    report = import_dataset("coco", json_path, tmp_path / "out", val_fraction=0)
    assert report.ok, report.problems
    # background 0, then categories by name: 2 (dog) -> 1, 5 (elk) -> 2
    assert read_class_file(tmp_path / "out" / "classes.txt").names == ("background", "dog", "elk")
    mask = mask_of(tmp_path / "out", "a")
    square = box_pixels(20, 14, 30, 22)
    assert np.array_equal(mask == 2, square)
    inside, distance = polygon_pixels(TRIANGLE)
    clear = distance > 0.2  # a centre within 1/8 pixel of a slanted edge may fall either way
    assert np.array_equal((mask == 1)[clear & ~square], inside[clear & ~square])
    (ax, ay), (bx, by), (cx, cy) = TRIANGLE
    area = abs((bx - ax) * (cy - ay) - (cx - ax) * (by - ay)) / 2  # shoelace
    assert abs((mask == 1).sum() - area) < 0.05 * area


def test_compressed_and_uncompressed_rle_decode_to_the_encoded_mask(tmp_path):
    rng = np.random.default_rng(3)
    blob_a = rng.random((H, W)) < 0.3
    blob_b = np.zeros((H, W), dtype=bool)
    blob_b[5:17, 4:9] = True
    encoded = pycocotools_mask.encode(np.asfortranarray(blob_a.astype(np.uint8)))
    compressed = {"size": [H, W], "counts": encoded["counts"].decode("ascii")}
    write_image(tmp_path / "export" / "images" / "a.png")
    json_path = coco_json(
        tmp_path,
        [image_record(1, "a.png")],
        [
            {"id": 1, "image_id": 1, "category_id": 5, "segmentation": compressed, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": uncompressed_rle(blob_b), "iscrowd": 0},
        ],
    )
    report = import_dataset("coco", json_path, tmp_path / "out", overlap="order", val_fraction=0)
    assert report.ok, report.problems
    expected = np.zeros((H, W), dtype=np.int64)
    expected[blob_a] = 2
    expected[blob_b] = 1  # later in the JSON: on top
    assert np.array_equal(mask_of(tmp_path / "out", "a"), expected)


def test_crowd_regions_become_ignore_under_individually_annotated_objects(tmp_path):
    crowd = np.zeros((H, W), dtype=bool)
    crowd[2:20, 2:30] = True
    write_image(tmp_path / "export" / "images" / "a.png")
    json_path = coco_json(
        tmp_path,
        [image_record(1, "a.png")],
        [
            polygon_annotation(1, 1, 5, [(4, 4), (10, 4), (10, 9), (4, 9)]),
            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": uncompressed_rle(crowd), "iscrowd": 1},
        ],
    )
    report = import_dataset("coco", json_path, tmp_path / "out", overlap="order", val_fraction=0)
    assert report.ok, report.problems
    cat = box_pixels(4, 4, 10, 9)
    expected = np.zeros((H, W), dtype=np.int64)
    expected[crowd] = 255
    expected[cat] = 2  # the crowd, though later in the JSON, stays underneath
    assert np.array_equal(mask_of(tmp_path / "out", "a"), expected)


@pytest.mark.parametrize("overlap", ["area", "order"])
def test_overlap_area_puts_smaller_objects_on_top_and_order_follows_the_json(tmp_path, overlap):
    small, large = (8, 8, 14, 14), (2, 2, 26, 20)
    write_image(tmp_path / "export" / "images" / "a.png")
    json_path = coco_json(
        tmp_path,
        [image_record(1, "a.png")],
        [
            polygon_annotation(1, 1, 5, [(8, 8), (14, 8), (14, 14), (8, 14)]),  # small cat first
            polygon_annotation(2, 1, 2, [(2, 2), (26, 2), (26, 20), (2, 20)]),  # large dog over it
        ],
    )
    import_dataset("coco", json_path, tmp_path / "out", overlap=overlap, val_fraction=0)
    expected = np.zeros((H, W), dtype=np.int64)
    if overlap == "area":
        expected[box_pixels(*large)] = 1
        expected[box_pixels(*small)] = 2
    else:
        expected[box_pixels(*small)] = 2
        expected[box_pixels(*large)] = 1
    assert np.array_equal(mask_of(tmp_path / "out", "a"), expected)


def test_bad_items_and_annotations_are_reported_by_file_and_the_good_ones_written(tmp_path, capsys):
    images = tmp_path / "export" / "images"
    write_image(images / "good.png")
    write_image(images / "clipped.png", seed=1)
    (images / "broken.jpg").write_bytes(b"not a jpeg at all")
    write_image(images / "other" / "good.png", seed=2)  # same name as images/good.png
    write_image(images / "wrong_size.png", height=H + 1)
    json_path = coco_json(
        tmp_path,
        [
            image_record(1, "good.png"),
            image_record(2, "clipped.png"),
            image_record(3, "missing.png"),
            image_record(4, "broken.jpg"),
            image_record(5, "other/good.png"),
            image_record(6, "wrong_size.png"),
        ],
        [
            polygon_annotation(1, 1, 99, [(1, 1), (5, 1), (5, 5)]),  # no category 99
            polygon_annotation(2, 1, 5, [(40, 30), (50, 30), (50, 40)]),  # entirely outside 32x24
            polygon_annotation(3, 2, 5, [(-6, -4), (12, -4), (12, 10), (-6, 10)]),  # partly outside: clipped
            polygon_annotation(4, 77, 5, [(1, 1), (5, 1), (5, 5)]),  # no image 77
        ],
    )
    out = tmp_path / "out"
    assert main(["import", "coco", str(json_path), str(out), "--val-fraction", "0"]) == 1
    printed = capsys.readouterr().out
    report = json.loads((out / "import.json").read_text())
    kinds = {(p["kind"], p["name"]) for p in report["problems"]}
    assert kinds == {
        ("unknown_category", "good"),
        ("outside_image", "good"),
        ("unknown_image", "77"),
        ("missing_image", "missing"),
        ("unreadable_image", "broken"),
        ("duplicate_name", "good"),
        ("size_mismatch", "wrong_size"),
    }
    paths = {p["kind"]: p["path"] for p in report["problems"]}
    assert paths["missing_image"].endswith("missing.png") and paths["unreadable_image"].endswith("broken.jpg")
    assert paths["duplicate_name"].endswith("other/good.png") and paths["unknown_category"] == str(json_path)
    assert [(n["kind"], n["name"]) for n in report["notes"]] == [("clipped", "clipped")]
    for kind in ("unknown_category", "missing_image", "duplicate_name", "outside_image"):
        assert kind in printed
    assert "2 of 6 images written, 4 skipped" in printed
    assert sorted(read_split_file(out / "train.txt")) == ["clipped", "good"]
    assert np.array_equal(mask_of(out, "clipped"), np.where(box_pixels(-6, -4, 12, 10), 2, 0))
    assert np.array_equal(mask_of(out, "good"), np.zeros((H, W)))
    assert (out / "images" / "good.png").read_bytes() == (images / "good.png").read_bytes()  # copied, not re-encoded
    assert sorted(p.stem for p in (out / "images").iterdir()) == ["clipped", "good"]
    assert all(scan["skipped"] == 0 for scan in report["scans"])


def test_an_exif_rotated_photo_is_copied_as_is_and_its_mask_drawn_upright(tmp_path):
    path = tmp_path / "export" / "images" / "phone.jpg"
    path.parent.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view; stored W x H, seen H x W
    Image.fromarray(np.full((H, W, 3), 128, dtype=np.uint8)).save(path, exif=exif.tobytes(), quality=95)
    json_path = coco_json(
        tmp_path,
        [image_record(1, "phone.jpg", height=W, width=H)],  # the size the annotator saw: upright
        [polygon_annotation(1, 1, 5, [(2, 20), (20, 20), (20, 30), (2, 30)])],
    )
    out = tmp_path / "out"
    report = import_dataset("coco", json_path, out, val_fraction=0)
    assert report.ok, report.problems
    assert (out / "images" / "phone.jpg").read_bytes() == path.read_bytes()
    assert np.array_equal(mask_of(out, "phone"), np.where(box_pixels(2, 20, 20, 30, height=W, width=H), 2, 0))
    raw = build_dataset("folder", out, "train").load_raw(0)
    assert raw.image.shape == (W, H, 3) and raw.mask.shape == (W, H)


def test_split_files_are_seeded_disjoint_and_cover_every_image(tmp_path):
    names = [f"img{i:02d}.png" for i in range(10)]
    for i, name in enumerate(names):
        write_image(tmp_path / "export" / "images" / name, seed=i)
    json_path = coco_json(tmp_path, [image_record(i + 1, n) for i, n in enumerate(names)], [])
    splits = {}
    for run, seed in (("a", 0), ("b", 0), ("c", 1)):
        out = tmp_path / run
        import_dataset("coco", json_path, out, val_fraction=0.2, seed=seed)
        splits[run] = (read_split_file(out / "train.txt"), read_split_file(out / "val.txt"))
    train, val = splits["a"]
    assert len(val) == 2 and len(train) == 8 and not set(train) & set(val)
    assert sorted(train + val) == [n[:-4] for n in names]
    assert splits["b"] == splits["a"]
    assert splits["c"] != splits["a"]


def test_panoptic_segments_map_to_classes_with_void_and_crowd_ignored(tmp_path):
    ids = np.zeros((H, W), dtype=np.int64)
    ids[2:10, 2:12] = 1000  # dog
    ids[12:20, 4:30] = 256 * 3 + 7  # cat, an id using the G channel
    ids[0:2, 20:30] = 70000  # crowd
    ids[22:24, 0:5] = 123  # no segments_info entry
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    export = tmp_path / "export"
    (export / "annotations" / "panoptic_val").mkdir(parents=True)
    Image.fromarray(rgb).save(export / "annotations" / "panoptic_val" / "a.png")
    write_image(export / "images" / "a.jpg".replace(".jpg", ".png"))
    data = {
        "images": [image_record(1, "a.png")],
        "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": [
            {"id": 1000, "category_id": 2, "iscrowd": 0},
            {"id": 256 * 3 + 7, "category_id": 5, "iscrowd": 0},
            {"id": 70000, "category_id": 5, "iscrowd": 1},
        ]}],
        "categories": [{"id": 2, "name": "dog", "isthing": 1}, {"id": 5, "name": "elk", "isthing": 1}],
    }
    json_path = export / "annotations" / "panoptic_val.json"
    json_path.write_text(json.dumps(data))
    report = import_dataset("coco", json_path, tmp_path / "out", images=export / "images", val_fraction=0)
    assert [p.kind for p in report.problems] == ["unknown_segment"]
    expected = np.full((H, W), 255, dtype=np.int64)  # void (id 0) and unknown segments: ignore
    expected[ids == 1000] = 1
    expected[ids == 256 * 3 + 7] = 2
    assert np.array_equal(mask_of(tmp_path / "out", "a"), expected)


def test_duplicate_category_names_and_a_non_empty_output_folder_are_errors(tmp_path):
    write_image(tmp_path / "export" / "images" / "a.png")
    twice = coco_json(tmp_path, [image_record(1, "a.png")], [], [{"id": 1, "name": "cat"}, {"id": 2, "name": "cat"}])
    with pytest.raises(DataError, match="listed twice"):
        import_dataset("coco", twice, tmp_path / "out")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    good = coco_json(tmp_path, [image_record(1, "a.png")], [])
    with pytest.raises(DataError, match="not empty"):
        import_dataset("coco", good, tmp_path / "full")


def test_the_command_offers_every_registered_format_and_refuses_options_a_format_ignores(tmp_path):
    from fcnseg.commands.import_data import FORMAT_NAMES
    from fcnseg.annotations import FORMATS
    from fcnseg.errors import ConfigError

    assert set(FORMAT_NAMES) == set(FORMATS)
    write_image(tmp_path / "export" / "images" / "a.png")
    with pytest.raises(ConfigError, match="does not use images"):
        import_dataset("labelme", tmp_path / "export", tmp_path / "out", images=tmp_path / "export")
    with pytest.raises(ConfigError, match="val_fraction"):
        import_dataset("coco", tmp_path / "export" / "annotations.json", tmp_path / "out", val_fraction=1.0)


def test_the_imported_folder_loads_as_training_tensors_and_trains(tmp_path):
    from fcnseg.config import resolve_run_config
    from fcnseg.training.trainer import train

    for i in range(4):
        write_image(tmp_path / "export" / "images" / f"{i}.png", seed=i)
    json_path = coco_json(
        tmp_path,
        [image_record(i + 1, f"{i}.png") for i in range(4)],
        [polygon_annotation(i + 1, i + 1, 5 if i % 2 else 2, TRIANGLE) for i in range(4)],
    )
    out = tmp_path / "out"
    report = import_dataset("coco", json_path, out, val_fraction=0.25)
    assert report.ok and set(report.splits) == {"train", "val"}
    dataset = build_dataset("folder", out, "train")
    image, mask = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (3, H, W)
    assert mask.dtype == torch.int64 and mask.shape == (H, W)
    assert set(mask.unique().tolist()) <= {0, 1, 2} and dataset.num_classes == 3
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = resolve_run_config(overrides={
            "model": {"arch": "fcn32s", "backbone": "small", "num_classes": 3, "dropout": 0.1},
            "data": {"dataset": "folder", "root": str(out), "num_workers": 0, "normalization": "imagenet_rgb"},
            "train": {"out_dir": str(tmp_path / "run"), "optimizer": "adamw", "lr": 1e-3, "batch_size": 1,
                      "max_iter": 1, "val_every": 1, "checkpoint_every": 1, "precision": "fp32", "num_panels": 0},
        })
        result = train(config, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert result.iteration == 1

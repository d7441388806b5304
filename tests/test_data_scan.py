"""The dataset scan: each kind of bad file is reported with its name and skipped; check-data's exit status."""

import logging

import numpy as np
import pytest
from PIL import Image

from fcnseg.cli import main
from fcnseg.data import VOCDataset, voc_palette
from fcnseg.errors import DataError


def save_mask(mask, path):
    m = Image.fromarray(mask.astype(np.uint8), mode="P")
    m.putpalette(voc_palette().flatten().tolist())
    m.save(path)


def write_item(root, name, h=20, w=24, seed=0, image=True, mask=True, labels=None):
    rng = np.random.default_rng(seed)
    if image:
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{name}.jpg", quality=90)
    if mask:
        save_mask(labels if labels is not None else rng.integers(0, 21, (h, w)), root / "SegmentationClass" / f"{name}.png")


def voc_tree(root, good=("good1", "good2")):
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(good):
        write_item(root, name, seed=i)
    return list(good)


@pytest.fixture
def bad_tree(tmp_path):
    """Two good items and one of every kind of bad one, all listed in train.txt."""
    names = voc_tree(tmp_path)
    # truncated JPEG: the header is fine, the data stops half way
    write_item(tmp_path, "truncated", h=64, w=64)
    data = (tmp_path / "JPEGImages" / "truncated.jpg").read_bytes()
    (tmp_path / "JPEGImages" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    write_item(tmp_path, "garbage")
    (tmp_path / "JPEGImages" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    write_item(tmp_path, "wrongsize", image=False)
    write_item(tmp_path, "wrongsize", h=21, w=24, mask=False)
    write_item(tmp_path, "badlabels", labels=np.full((20, 24), 30))
    write_item(tmp_path, "nomask", mask=False)
    write_item(tmp_path, "noimage", image=False)
    names += ["truncated", "garbage", "wrongsize", "badlabels", "nomask", "noimage", "ghost"]
    (tmp_path / "ImageSets/Segmentation/train.txt").write_text("\n".join(names) + "\n")
    return tmp_path


EXPECTED = {
    "truncated": ("unreadable_image", "JPEGImages/truncated.jpg", "truncated"),
    "garbage": ("unreadable_image", "JPEGImages/garbage.jpg", "cannot read the image"),
    "wrongsize": ("size_mismatch", "SegmentationClass/wrongsize.png", "mask is 24x20 but its image JPEGImages/wrongsize.jpg is 24x21"),
    "badlabels": ("bad_labels", "SegmentationClass/badlabels.png", "label values 30 outside the 21 classes"),
    "nomask": ("missing_mask", "JPEGImages/nomask.jpg", "expected SegmentationClass/nomask.png"),
    "noimage": ("missing_image", "SegmentationClass/noimage.png", "expected JPEGImages/noimage.jpg"),
    "ghost": ("missing_files", "ghost", "neither JPEGImages/ghost.jpg nor SegmentationClass/ghost.png exists"),
}


def test_every_kind_of_bad_item_is_reported_with_its_file_and_skipped(bad_tree, caplog):
    with caplog.at_level(logging.WARNING):
        ds = VOCDataset(bad_tree, "train")
    assert [ds.name(i) for i in range(len(ds))] == ["good1", "good2"]
    found = {p.name: p for p in ds.report.problems}
    assert set(found) == set(EXPECTED)
    for name, (kind, path, message) in EXPECTED.items():
        assert found[name].kind == kind, name
        assert found[name].path == path, name
        assert message in found[name].message, name
        assert path in caplog.text
    assert "2 of 9 items usable, 7 skipped" in ds.report.summary()
    assert "7 skipped" in caplog.text


def test_check_data_prints_every_problem_and_exits_non_zero(bad_tree, capsys):
    assert main(["check-data", str(bad_tree), "--split", "train"]) == 1
    out = capsys.readouterr().out
    for _, path, _ in EXPECTED.values():
        assert path in out
    assert "7 problems found" in out


def test_check_data_exits_zero_on_a_clean_tree(tmp_path, capsys):
    names = voc_tree(tmp_path)
    (tmp_path / "ImageSets/Segmentation/train.txt").write_text("\n".join(names))
    (tmp_path / "ImageSets/Segmentation/val.txt").write_text("good1\n")
    assert main(["check-data", str(tmp_path)]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_check_data_writes_a_json_report(bad_tree, tmp_path):
    import json

    out = tmp_path / "report.json"
    main(["check-data", str(bad_tree), "--split", "train", "--json", str(out)])
    (report,) = json.loads(out.read_text())
    assert report["skipped"] == 7 and report["counts"]["unreadable_image"] == 2


def test_a_bad_item_at_the_end_of_a_long_split_does_not_stop_the_scan(tmp_path):
    voc_tree(tmp_path, good=())
    names = [f"im{i:04d}" for i in range(300)]
    for i, name in enumerate(names):
        write_item(tmp_path, name, h=8, w=8, seed=i)
    (tmp_path / "JPEGImages" / "im0299.jpg").write_bytes(b"\xff\xd8\xff broken")
    (tmp_path / "ImageSets/Segmentation/train.txt").write_text("\n".join(names))
    ds = VOCDataset(tmp_path, "train")
    assert len(ds) == 299 and ds.report.problems[0].name == "im0299"


def test_an_item_that_turns_bad_after_the_scan_is_logged_and_replaced(tmp_path, caplog):
    names = voc_tree(tmp_path, good=("a", "b", "c"))
    (tmp_path / "ImageSets/Segmentation/train.txt").write_text("\n".join(names))
    ds = VOCDataset(tmp_path, "train")
    (tmp_path / "JPEGImages" / "b.jpg").write_bytes(b"gone bad")
    with caplog.at_level(logging.WARNING):
        image, mask = ds[1]
    expected_image, expected_mask = ds[2]
    assert np.array_equal(mask.numpy(), expected_mask.numpy())
    assert "b" in caplog.text and "substituting" in caplog.text


def test_a_split_with_no_usable_item_is_a_data_error(tmp_path):
    voc_tree(tmp_path, good=())
    (tmp_path / "ImageSets/Segmentation/train.txt").write_text("ghost\n")
    with pytest.raises(DataError, match="no usable items"):
        VOCDataset(tmp_path, "train")


def test_zero_byte_image_and_mask_are_reported_as_empty_files(tmp_path):
    names = voc_tree(tmp_path)
    write_item(tmp_path, "emptyimage", mask=True)
    (tmp_path / "JPEGImages" / "emptyimage.jpg").write_bytes(b"")
    write_item(tmp_path, "emptymask", image=True)
    (tmp_path / "SegmentationClass" / "emptymask.png").write_bytes(b"")
    (tmp_path / "ImageSets/Segmentation/train.txt").write_text("\n".join(names + ["emptyimage", "emptymask"]))
    ds = VOCDataset(tmp_path, "train")
    found = {p.name: p for p in ds.report.problems}
    assert (found["emptyimage"].kind, found["emptyimage"].path) == ("unreadable_image", "JPEGImages/emptyimage.jpg")
    assert (found["emptymask"].kind, found["emptymask"].path) == ("unreadable_mask", "SegmentationClass/emptymask.png")
    for problem in found.values():
        assert problem.message == "empty file (0 bytes)"


def test_reading_a_zero_byte_mask_says_it_is_empty(tmp_path):
    from fcnseg.data import read_mask_png

    (tmp_path / "m.png").write_bytes(b"")
    with pytest.raises(DataError) as info:
        read_mask_png(tmp_path / "m.png")
    assert info.value.reason == "empty file (0 bytes)" and info.value.path == str(tmp_path / "m.png")


@pytest.mark.parametrize("content, reason", [(None, "mask file not found"), (b"not a png", "cannot read the mask")])
def test_reading_a_missing_or_garbage_mask_is_a_data_error_naming_it(tmp_path, content, reason):
    from fcnseg.data import read_mask_png

    if content is not None:
        (tmp_path / "m.png").write_bytes(content)
    with pytest.raises(DataError, match=reason) as info:
        read_mask_png(tmp_path / "m.png")
    assert info.value.path == str(tmp_path / "m.png")

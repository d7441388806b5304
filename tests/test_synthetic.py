"""The built-in synthetic data set: deterministic, two styles, VOC layout on disk identical to the in-memory set."""

import numpy as np
import pytest

from fcnseg.cli import main
from fcnseg.data import STYLES, SyntheticDataset, VOCDataset, build_dataset, generate_sample, make_synthetic
from fcnseg.errors import DataError


def test_a_sample_is_a_pure_function_of_seed_split_and_index():
    a, b = generate_sample(3, "train", 5), generate_sample(3, "train", 5)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(generate_sample(4, "train", 5).mask, a.mask) or a.mask.shape != generate_sample(4, "train", 5).mask.shape
    assert generate_sample(3, "val", 5).image.shape != a.image.shape or not np.array_equal(generate_sample(3, "val", 5).image, a.image)


@pytest.mark.parametrize("style", STYLES)
def test_every_style_draws_several_classes_with_an_ignore_rim_on_odd_sizes(style):
    items = [generate_sample(0, "train", i, style) for i in range(12)]
    sizes = {item.image.shape[:2] for item in items}
    assert len(sizes) == 12 and all(97 <= h < 251 and 97 <= w < 251 for h, w in sizes)
    assert any(h % 2 or w % 2 for h, w in sizes)
    labels = set(np.unique(np.concatenate([item.mask.ravel() for item in items])).tolist())
    assert labels == {0, 1, 2, 3, 4, 5, 255}
    for item in items:
        assert item.image.dtype == np.uint8 and item.mask.dtype == np.int64
        rim = item.mask == 255
        # the rim separates labels: no two different classes touch without 255 in between
        m = item.mask
        horizontal = (m[:, 1:] != m[:, :-1]) & (m[:, 1:] != 255) & (m[:, :-1] != 255)
        assert rim.any() and not horizontal.any()


def test_the_two_styles_look_different_and_name_their_classes():
    shapes, blobs = SyntheticDataset("val", 2, style="shapes"), SyntheticDataset("val", 2, style="blobs")
    assert shapes.class_names == ["background", "disc", "square", "triangle", "cross", "ring"]
    assert blobs.class_names == ["background", "stripes", "checks", "dots", "rings", "waves"]
    assert not np.array_equal(shapes.load_raw(0).mask, blobs.load_raw(0).mask)


@pytest.mark.parametrize("style", STYLES)
def test_colour_alone_does_not_give_the_class_away(style):
    """A nearest-mean-colour classifier of object pixels, fitted on some scenes, does little better than chance on others."""
    fit = [generate_sample(1, "train", i, style, size=(80, 80)) for i in range(40)]
    test = [generate_sample(2, "train", i, style, size=(80, 80)) for i in range(30)]
    means = np.array([np.concatenate([it.image[it.mask == c] for it in fit]).mean(0) for c in range(1, 6)])
    pixels = np.concatenate([it.image[(it.mask >= 1) & (it.mask <= 5)] for it in test]).astype(np.float64)
    labels = np.concatenate([it.mask[(it.mask >= 1) & (it.mask <= 5)] for it in test])
    guess = 1 + np.argmin(((pixels[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    majority = np.bincount(labels).max() / labels.size
    assert (guess == labels).mean() < majority + 0.1


def test_written_png_tree_reads_back_identical_to_the_in_memory_set(tmp_path):
    info = make_synthetic(tmp_path, num_train=4, num_val=3, seed=7, style="blobs", image_format="png")
    assert info["class_names"][1] == "stripes"
    disk = VOCDataset(tmp_path, "val")
    memory = SyntheticDataset("val", 3, seed=7, style="blobs")
    assert disk.class_names == memory.class_names and len(disk) == len(memory) == 3
    for i in range(3):
        assert disk.name(i) == memory.name(i)
        (di, dm), (mi, mm) = disk[i], memory[i]
        assert np.array_equal(dm.numpy(), mm.numpy()) and np.array_equal(di.numpy(), mi.numpy())


def test_make_synthetic_writes_the_voc_layout_with_jpeg_images(tmp_path):
    make_synthetic(tmp_path, num_train=3, num_val=2, seed=0, size=(41, 67))
    assert sorted(p.name for p in (tmp_path / "JPEGImages").iterdir()) == [
        "train_00000.jpg", "train_00001.jpg", "train_00002.jpg", "val_00000.jpg", "val_00001.jpg"
    ]
    assert (tmp_path / "ImageSets/Segmentation/trainval.txt").read_text().split() == [
        "train_00000", "train_00001", "train_00002", "val_00000", "val_00001"
    ]
    ds = build_dataset("synthetic", tmp_path, "train")
    assert ds.num_classes == 6 and ds.report.ok
    assert ds[0][0].shape == (3, 41, 67)


def test_make_synthetic_command(tmp_path, capsys):
    assert main(["make-synthetic", str(tmp_path / "s"), "--num-train", "2", "--num-val", "1", "--style", "blobs", "--seed", "2"]) == 0
    assert "wrote 2 train + 1 val blobs images" in capsys.readouterr().out
    assert main(["check-data", str(tmp_path / "s")]) == 0


def test_unknown_style_lists_the_styles():
    with pytest.raises(DataError, match="expected one of \\['shapes', 'blobs', 'thin', 'rare'\\]"):
        SyntheticDataset(style="stars")


def test_style_is_recognised_from_a_models_class_names():
    from fcnseg.data.synthetic import style_of_classes

    shapes = ["background", "disc", "square", "triangle", "cross", "ring"]  # as a checkpoint stores them
    blobs = ["background", "stripes", "checks", "dots", "rings", "waves"]
    assert style_of_classes(shapes) == "shapes" and style_of_classes(blobs) == "blobs"
    assert style_of_classes(shapes[::-1]) is None  # label order matters
    assert style_of_classes(shapes[:5]) is None
    assert style_of_classes(["background", "aeroplane"]) is None


def test_the_thin_style_is_mostly_background_with_a_rare_class_and_keeps_thin_objects_labelled():
    items = [generate_sample(0, "train", i, "thin") for i in range(60)]
    counts = sum(np.bincount(it.mask[it.mask != 255].ravel(), minlength=6) for it in items)
    share = counts / counts.sum()
    assert 0.90 <= share[0] <= 0.97  # objects cover a few per cent, as in real scenes of small things
    assert 0 < share[5] < 0.01  # wires: the rare class
    assert all(share[c] > share[5] for c in range(1, 5))
    # the rim lies beside an object, not on it: most object pixels keep their class (a 2-px bar would be all rim)
    drawn = [it.mask for it in items]
    kept = sum(((m >= 1) & (m <= 5)).sum() for m in drawn)
    assert kept / sum((m != 0).sum() for m in drawn) > 0.4


def test_the_rare_style_is_blobs_with_one_class_under_one_percent_of_the_pixels():
    items = [generate_sample(0, "train", i, "rare") for i in range(150)]
    counts = sum(np.bincount(it.mask[it.mask != 255].ravel(), minlength=6) for it in items)
    share = counts / counts.sum()
    assert 0 < share[5] < 0.01
    assert all(share[c] > 4 * share[5] for c in range(1, 5))
    assert SyntheticDataset("val", 1, style="rare").class_names[1:5] == ["stripes", "checks", "dots", "rings"]


def test_every_style_option_has_its_class_table():
    from fcnseg.data.kinds import SYNTHETIC_STYLES
    from fcnseg.data.synthetic import STYLE_CLASSES

    assert tuple(STYLE_CLASSES) == SYNTHETIC_STYLES == STYLES

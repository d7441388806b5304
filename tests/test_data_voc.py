"""PASCAL VOC layout: items, classes and palette, splits including seg11valid."""

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.data import IMAGENET_RGB, PAPER_BGR, VOCDataset, build_dataset, voc_palette
from fcnseg.errors import DataError


def write_voc(root, names_by_split, seed=0, num_classes=21):
    """A tiny VOC2012 tree: lossless PNG 'JPEGImages', palette masks with a 255 border; returns the arrays."""
    rng = np.random.default_rng(seed)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, names in names_by_split.items():
        for name in names:
            if name in arrays:
                continue
            h, w = int(rng.integers(9, 30)), int(rng.integers(9, 30))
            image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            mask = rng.integers(0, num_classes, size=(h, w)).astype(np.uint8)
            mask[0, :] = 255
            Image.fromarray(image).save(root / "JPEGImages" / f"{name}.png")
            m = Image.fromarray(mask, mode="P")
            m.putpalette(voc_palette().flatten().tolist())
            m.save(root / "SegmentationClass" / f"{name}.png")
            arrays[name] = (image, mask)
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("".join(n + "\n" for n in names))
    return arrays


def test_voc_items_are_paper_normalised_bgr_images_and_int64_masks(tmp_path):
    arrays = write_voc(tmp_path, {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"]})
    ds = VOCDataset(tmp_path, "train")
    assert len(ds) == 2 and ds.name(0) == "2007_000032"
    image, mask = ds[0]
    rgb, labels = arrays["2007_000032"]
    expected = rgb[..., ::-1].astype(np.float64) - np.array([104.00698793, 116.66876762, 122.67891434])
    assert image.dtype == torch.float32 and image.shape == (3, *labels.shape)
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), expected, atol=1e-4)
    assert mask.dtype == torch.int64
    np.testing.assert_array_equal(mask.numpy(), labels)
    assert ds.normalization is PAPER_BGR


def test_voc_records_the_normalization_it_was_given(tmp_path):
    arrays = write_voc(tmp_path, {"train": ["a"]})
    ds = VOCDataset(tmp_path, "train", normalization=IMAGENET_RGB)
    assert ds.normalization.to_dict()["name"] == "imagenet_rgb"
    image, _ = ds[0]
    expected = (arrays["a"][0] / 255.0 - np.array(IMAGENET_RGB.mean)) / np.array(IMAGENET_RGB.std)
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_load_raw_gives_the_stored_rgb_uint8_image_mask_and_name(tmp_path):
    arrays = write_voc(tmp_path, {"val": ["x1"]})
    raw = VOCDataset(tmp_path, "val").load_raw(0)
    assert raw.name == "x1" and raw.image.dtype == np.uint8
    np.testing.assert_array_equal(raw.image, arrays["x1"][0])
    np.testing.assert_array_equal(raw.mask, arrays["x1"][1])


def test_voc_has_the_21_classes_and_the_voc_palette(tmp_path):
    write_voc(tmp_path, {"val": ["a"]})
    ds = VOCDataset(tmp_path, "val")
    # VOCdevkit's VOCopts.classes, in label order after background
    assert ds.class_names == [
        "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
        "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
    ]
    assert ds.num_classes == 21
    assert tuple(ds.palette[1]) == (128, 0, 0)
    assert tuple(ds.palette[15]) == (192, 128, 128)
    assert tuple(ds.palette[255]) == (224, 224, 192)


def test_voc_root_may_be_the_parent_of_vocdevkit(tmp_path):
    write_voc(tmp_path / "VOCdevkit" / "VOC2012", {"train": ["a"]})
    assert len(build_dataset("auto", tmp_path, "train")) == 1


def test_seg11valid_is_voc_val_minus_sbd_train(tmp_path):
    write_voc(tmp_path / "voc", {"val": ["v1", "v2", "v3", "v4"]})
    sbd = tmp_path / "sbd"
    (sbd / "img").mkdir(parents=True)
    (sbd / "cls").mkdir()
    (sbd / "train.txt").write_text("v2\nv4\nother\n")
    ds = VOCDataset(tmp_path / "voc", "seg11valid", sbd_root=sbd)
    assert [ds.name(i) for i in range(len(ds))] == ["v1", "v3"]


def test_seg11valid_without_sbd_root_names_what_is_missing(tmp_path):
    write_voc(tmp_path, {"val": ["a"]})
    with pytest.raises(DataError, match="sbd_root"):
        VOCDataset(tmp_path, "seg11valid")


def test_unknown_split_names_the_expected_file_and_the_splits_found(tmp_path):
    write_voc(tmp_path, {"train": ["a"], "val": ["b"]})
    with pytest.raises(DataError, match=r"test\.txt does not exist; found splits \['train', 'val'\]"):
        VOCDataset(tmp_path, "test")


def test_not_a_voc_tree_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not a VOC tree"):
        VOCDataset(tmp_path, "train")


def test_voc_tree_without_a_class_file_records_that_the_voc_classes_were_assumed(tmp_path):
    write_voc(tmp_path, {"val": ["a"]})
    source = VOCDataset(tmp_path, "val").class_source
    assert source.file is None and source.missing_file == tmp_path / "classes.txt"
    assert source.description == f"the 21 PASCAL VOC classes assumed: no classes.txt in {tmp_path}"


def test_voc_tree_with_a_class_file_records_it(tmp_path):
    write_voc(tmp_path, {"val": ["a"]}, num_classes=3)
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    source = VOCDataset(tmp_path, "val").class_source
    assert source.file == tmp_path / "classes.txt" and source.missing_file is None
    other = tmp_path / "elsewhere.txt"
    other.write_text("background\ncat\ndog\n")
    assert VOCDataset(tmp_path, "val", class_file=other).class_source.file == other


def test_class_count_mismatch_with_assumed_voc_classes_names_the_class_file_to_write(tmp_path):
    from fcnseg.data import check_class_count
    from fcnseg.errors import ConfigError

    write_voc(tmp_path, {"train": ["a"]}, num_classes=11)
    ds = VOCDataset(tmp_path, "train")
    with pytest.raises(ConfigError) as info:
        check_class_count(ds, 11)
    message = str(info.value)
    assert "model.num_classes is 11 but the data set" in message and "has 21 classes" in message
    assert f"the 21 PASCAL VOC classes assumed: no classes.txt in {tmp_path}" in message
    assert f"list its 11 classes in {tmp_path / 'classes.txt'}" in message
    assert "set model.num_classes: 21" in message


def test_class_count_mismatch_with_a_class_file_names_that_file(tmp_path):
    from fcnseg.data import check_class_count
    from fcnseg.errors import ConfigError

    write_voc(tmp_path, {"train": ["a"]}, num_classes=3)
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    ds = VOCDataset(tmp_path, "train")
    with pytest.raises(ConfigError) as info:
        check_class_count(ds, 5, what="train.num_classes")
    message = str(info.value)
    assert "train.num_classes is 5" in message and "3 classes (background, cat, dog)" in message
    assert f"from the class file {tmp_path / 'classes.txt'}" in message and "assumed" not in message
    assert "set train.num_classes: 3" in message


def test_class_count_check_passes_when_the_counts_agree(tmp_path):
    from fcnseg.data import SyntheticDataset, check_class_count

    write_voc(tmp_path, {"train": ["a"]})
    assert check_class_count(VOCDataset(tmp_path, "train"), 21) is None
    assert check_class_count(SyntheticDataset("val", 1), 6) is None

"""NYUDv2 layout: labels shifted with void 255, each modality preprocessed as the reference layer does, the scan, the synthetic style."""

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from fcnseg.data import NYUDDataset, build_dataset, detect_kind, split_streams
from fcnseg.data.synthetic_layouts import make_synthetic_layout
from fcnseg.errors import DataError

COLOR_MEAN_BGR = np.array([116.190, 97.203, 92.318])
HHA_MEAN = np.array([132.431, 94.076, 118.477])
LOG_DEPTH_MEAN = 7.844


def write_item(root, name, h=12, w=16, seed=0, labels=None, parts=("color", "hha", "depth", "label"), key="segmentation"):
    """One NYUD item in the released layout; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "color": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "hha": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "depth": rng.integers(500, 9000, (h, w)).astype(np.uint16),
        "label": labels if labels is not None else rng.integers(0, 41, (h, w)).astype(np.uint8),
    }
    folders = {"color": "data/images", "hha": "data/hha", "depth": "data/depth"}
    for part in parts:
        if part == "label":
            scipy.io.savemat(str(root / "segmentation" / f"img_{name}.mat"), {key: arrays["label"]})
        else:
            Image.fromarray(arrays[part]).save(root / folders[part] / f"img_{name}.png")
    return arrays


def nyud_tree(root, splits):
    for sub in ("data/images", "data/hha", "data/depth", "segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, names in splits.items():
        for i, name in enumerate(names):
            arrays[name] = write_item(root, name, seed=int(name))
        (root / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return arrays


def test_labels_are_shifted_down_by_one_with_void_as_255(tmp_path):
    nyud_tree(tmp_path, {"train": ["5001"]})
    stored = np.array([[0, 1, 2, 40], [13, 0, 39, 1]], dtype=np.uint8)
    write_item(tmp_path, "5001", h=2, w=4, labels=stored)
    expected = np.array([[255, 0, 1, 39], [12, 255, 38, 0]])  # written by hand: k -> k - 1, 0 -> void
    ds = NYUDDataset(tmp_path, "train")
    _, mask = ds[0]
    assert mask.dtype == torch.int64 and np.array_equal(mask.numpy(), expected)
    assert ds.num_classes == 40 and ds.class_names[0] == "wall" and ds.class_names[39] == "otherprop"
    assert [(h.name, h.num_classes) for h in ds.heads] == [("semantic", 40)]


@pytest.mark.parametrize(
    "modalities, channels, streams",
    [
        ("color", 3, [("color", 3)]),
        ("hha", 3, [("hha", 3)]),
        ("depth", 1, [("depth", 1)]),
        ("color+depth", 4, [("color+depth", 4)]),
        ("color+hha", 6, [("color", 3), ("hha", 3)]),
    ],
)
def test_each_modality_is_preprocessed_as_the_reference_layer(tmp_path, modalities, channels, streams):
    arrays = nyud_tree(tmp_path, {"val": ["5003"]})["5003"]
    ds = NYUDDataset(tmp_path, "val", modalities=modalities)
    image, mask = ds[0]
    # nyud_layers.py, by hand: colour RGB -> BGR minus the mean; HHA minus its mean in file order; log depth minus 7.844
    reference = {
        "color": (arrays["color"][:, :, ::-1] - COLOR_MEAN_BGR).transpose(2, 0, 1),
        "hha": (arrays["hha"] - HHA_MEAN).transpose(2, 0, 1),
        "depth": (np.log(arrays["depth"].astype(np.float64)) - LOG_DEPTH_MEAN)[None],
    }
    expected = np.concatenate([reference[m] for m in modalities.split("+")])
    assert image.dtype == torch.float32 and tuple(image.shape) == (channels, 12, 16)
    assert np.allclose(image.numpy(), expected, atol=1e-4)
    assert [(s.name, s.channels) for s in ds.streams] == streams and ds.in_channels == channels
    parts = split_streams(image[None], ds.streams)  # what a late-fusion net hands each trunk
    assert [p.shape[1] for p in parts] == [c for _, c in streams]
    assert torch.equal(torch.cat(parts, 1)[0], image)
    assert mask.shape == (12, 16)


def test_normalization_records_the_first_modality_and_a_colour_override_applies_to_colour_only(tmp_path):
    arrays = nyud_tree(tmp_path, {"train": ["5002"]})["5002"]
    assert NYUDDataset(tmp_path, "train", modalities="hha").normalization.name == "nyud_hha"
    assert NYUDDataset(tmp_path, "train", modalities="depth").normalization.name == "nyud_log_depth"
    from fcnseg.data import PAPER_BGR

    ds = build_dataset("nyud", tmp_path, "train", modalities="color+hha", normalization=PAPER_BGR)
    image, _ = ds[0]
    assert ds.normalization is PAPER_BGR
    assert np.allclose(image[:3].numpy(), (arrays["color"][:, :, ::-1] - np.array(PAPER_BGR.mean)).transpose(2, 0, 1), atol=1e-4)
    assert np.allclose(image[3:].numpy(), (arrays["hha"] - HHA_MEAN).transpose(2, 0, 1), atol=1e-4)


def test_a_zero_depth_is_clamped_to_one_before_the_log(tmp_path):
    nyud_tree(tmp_path, {"train": ["5001"]})
    Image.fromarray(np.zeros((12, 16), dtype=np.uint16)).save(tmp_path / "data/depth/img_5001.png")
    image, _ = NYUDDataset(tmp_path, "train", modalities="depth")[0]
    assert torch.isfinite(image).all() and torch.allclose(image, torch.full_like(image, -LOG_DEPTH_MEAN))


def test_trainval_is_train_then_val_when_no_trainval_list_exists(tmp_path):
    nyud_tree(tmp_path, {"train": ["5001", "5002"], "val": ["5003"]})
    ds = NYUDDataset(tmp_path, "trainval")
    assert [ds.name(i) for i in range(len(ds))] == ["5001", "5002", "5003"]
    with pytest.raises(DataError, match="test.txt does not exist"):
        NYUDDataset(tmp_path, "test")
    with pytest.raises(DataError, match="unknown NYUD modalities 'rgbd'"):
        NYUDDataset(tmp_path, "train", modalities="rgbd")


def test_scan_reports_each_bad_file_and_keeps_the_good_ones(tmp_path):
    nyud_tree(tmp_path, {"train": ["5001", "5002"]})
    write_item(tmp_path, "6001", parts=("color", "hha", "depth"))  # no .mat
    write_item(tmp_path, "6002", key="labels")  # wrong key
    write_item(tmp_path, "6003")
    write_item(tmp_path, "6003", h=13, parts=("label",))  # label 16x13, images 16x12
    write_item(tmp_path, "6004", parts=("color", "depth", "label"))  # no HHA
    write_item(tmp_path, "6005")
    write_item(tmp_path, "6005", w=15, parts=("hha",))  # HHA narrower than the colour image
    write_item(tmp_path, "6006", labels=np.full((12, 16), 41, dtype=np.uint8))  # 41 -> 40: beyond the 40 classes
    names = ["5001", "5002", "6001", "6002", "6003", "6004", "6005", "6006"]
    (tmp_path / "train.txt").write_text("\n".join(names) + "\n")
    ds = NYUDDataset(tmp_path, "train", modalities="color+hha")
    found = {p.name: (p.kind, p.path) for p in ds.report.problems}
    assert found == {
        "6001": ("missing_mask", "data/images/img_6001.png"),
        "6002": ("unreadable_mask", "segmentation/img_6002.mat"),
        "6003": ("size_mismatch", "segmentation/img_6003.mat"),
        "6004": ("missing_image", "data/images/img_6004.png"),
        "6005": ("size_mismatch", "data/hha/img_6005.png"),
        "6006": ("bad_labels", "segmentation/img_6006.mat"),
    }
    messages = {p.name: p.message for p in ds.report.problems}
    assert "expected the key 'segmentation'" in messages["6002"] and "'labels'" in messages["6002"]
    assert "data/hha/img_6004.png" in messages["6004"]
    assert "15x12 but data/images/img_6005.png is 16x12" in messages["6005"]
    assert "label values 40 outside the 40 classes" in messages["6006"]
    assert [ds.name(i) for i in range(len(ds))] == ["5001", "5002"]


def test_scan_checks_depth_maps_when_depth_is_read(tmp_path):
    nyud_tree(tmp_path, {"train": ["5001", "5002"]})
    Image.fromarray(np.zeros((12, 16, 3), dtype=np.uint8)).save(tmp_path / "data/depth/img_5002.png")  # RGB, not depth
    ds = NYUDDataset(tmp_path, "train", modalities="color+depth")
    (problem,) = ds.report.problems
    assert (problem.kind, problem.path) == ("unreadable_image", "data/depth/img_5002.png")
    assert "expected one channel" in problem.message
    assert NYUDDataset(tmp_path, "train", modalities="color+hha").report.ok  # depth is not read there


def test_synthetic_nyud_scenes_load_and_their_depth_agrees_with_objects_and_hha(tmp_path):
    info = make_synthetic_layout(tmp_path, "nyud", num_train=3, num_val=2, seed=1, size=(48, 64))
    assert info["splits"] == ["train", "val"] and len(info["class_names"]) == 40
    assert detect_kind(tmp_path) == "nyud"
    for modalities, channels in (("color", 3), ("hha", 3), ("depth", 1), ("color+depth", 4), ("color+hha", 6)):
        ds = build_dataset("auto", tmp_path, "val", modalities=modalities)
        assert ds.report.ok and len(ds) == 2 and ds[0][0].shape == (channels, 48, 64)
    ds = build_dataset("synthetic", tmp_path, "train", modalities="color+hha")
    assert len(ds) == 3
    wall, floor = 0, 1
    for i in range(3):
        depth = np.asarray(Image.open(tmp_path / "data/depth" / f"img_{ds.name(i)}.png")).astype(np.float64) / 1000
        raw = ds.load_raw(i)
        labels = raw.mask
        objects = (labels != wall) & (labels != floor) & (labels != 255)
        assert objects.any() and (labels == wall).any()
        assert depth[objects].max() < depth[labels == wall].min()  # objects stand in front of the back wall
        # HHA as rcnn-depth's saveHHA.m writes it: 31000 / depth (cm, at least 100), ..., angle with gravity + 38
        disparity = raw.inputs["hha"][..., 0].astype(np.float64)
        assert np.abs(disparity - np.minimum(255, 310 / np.maximum(depth, 1))).mean() < 2
        angle = raw.inputs["hha"][..., 2].astype(np.float64)  # 0 degrees for the floor, 90 for walls and objects
        assert abs(angle[labels == floor].mean() - 38) < 3 and abs(angle[labels == wall].mean() - 128) < 3


def png_claiming(path, width, height):
    """A 16-bit grey PNG whose header claims ``width`` x ``height`` pixels over the data of a 1x1 image."""
    import struct
    import zlib

    Image.fromarray(np.array([[1234]], dtype=np.uint16)).save(path)
    data = bytearray(path.read_bytes())
    start = data.index(b"IHDR")  # the chunk type; its data (width, height, ...) follows, then its CRC
    data[start + 4:start + 12] = struct.pack(">II", width, height)
    data[start + 17:start + 21] = struct.pack(">I", zlib.crc32(bytes(data[start:start + 17])))
    path.write_bytes(bytes(data))


def test_a_depth_map_past_the_pixel_limit_is_refused_before_it_is_decoded(tmp_path):
    from fcnseg.data.nyud import read_depth
    from fcnseg.images import DEFAULT_MAX_PIXELS, ImageTooLargeError

    huge = tmp_path / "img_5001.png"
    png_claiming(huge, 50000, 40000)  # 2000 megapixels in the header, a few bytes of data
    assert 50000 * 40000 > DEFAULT_MAX_PIXELS
    with pytest.raises(ImageTooLargeError, match="50000x40000") as caught:
        read_depth(huge)  # the default limit, as read_image applies it
    assert "img_5001.png" in str(caught.value)
    small = tmp_path / "img_5002.png"
    depth = np.arange(200, dtype=np.uint16).reshape(10, 20) * 40
    Image.fromarray(depth).save(small)
    with pytest.raises(ImageTooLargeError):
        read_depth(small, max_pixels=199)
    assert np.array_equal(read_depth(small, max_pixels=200), depth.astype(np.float32))  # the values, not a picture


def test_the_scan_reports_a_depth_map_past_the_pixel_limit(tmp_path):
    nyud_tree(tmp_path, {"train": ["5001", "5002"]})
    png_claiming(tmp_path / "data/depth/img_5002.png", 50000, 40000)
    ds = NYUDDataset(tmp_path, "train", modalities="color+depth")
    (problem,) = ds.report.problems
    assert problem.path == "data/depth/img_5002.png" and "megapixels" in problem.message
    assert len(ds) == 1

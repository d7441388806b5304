"""SBD layout: .mat class segmentations in SBD's real structure, splits, and the paper's train_noval."""

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from fcnseg.data import SBDDataset, build_dataset, read_sbd_mat
from fcnseg.data.palette import voc_palette


def write_sbd_mat(path, segmentation):
    """A cls/*.mat as SBD ships it: struct GTcls with Boundaries (cell of sparse), Segmentation (uint8), CategoriesPresent."""
    boundaries = np.empty((20, 1), dtype=object)
    for k in range(20):
        boundaries[k, 0] = scipy.sparse.csc_matrix(segmentation == k + 1, dtype=np.float64)
    present = np.unique(segmentation[(segmentation > 0) & (segmentation < 255)]).astype(np.uint8).reshape(-1, 1)
    gtcls = {"Boundaries": boundaries, "Segmentation": segmentation.astype(np.uint8), "CategoriesPresent": present}
    scipy.io.savemat(str(path), {"GTcls": gtcls})


def write_sbd(root, splits, seed=0):
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "cls").mkdir(exist_ok=True)
    arrays = {}
    for split, names in splits.items():
        for name in names:
            h, w = int(rng.integers(10, 25)), int(rng.integers(10, 25))
            image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            seg = rng.integers(0, 21, size=(h, w)).astype(np.uint8)
            Image.fromarray(image).save(root / "img" / f"{name}.png")
            write_sbd_mat(root / "cls" / f"{name}.mat", seg)
            arrays[name] = (image, seg)
        (root / f"{split}.txt").write_text("".join(n + "\n" for n in names))
    return arrays


def test_sbd_mat_segmentation_is_read_as_a_matlab_struct_reader_sees_it(tmp_path):
    seg = np.random.default_rng(1).integers(0, 21, size=(13, 17)).astype(np.uint8)
    write_sbd_mat(tmp_path / "a.mat", seg)
    # an independent reading: the struct as MATLAB objects with attribute access, not record arrays
    gtcls = scipy.io.loadmat(str(tmp_path / "a.mat"), squeeze_me=True, struct_as_record=False)["GTcls"]
    assert sorted(gtcls._fieldnames) == ["Boundaries", "CategoriesPresent", "Segmentation"]
    ours = read_sbd_mat(tmp_path / "a.mat")
    assert ours.dtype == np.int64 and ours.shape == (13, 17)
    np.testing.assert_array_equal(ours, gtcls.Segmentation)
    np.testing.assert_array_equal(ours, seg)


def test_sbd_items_match_the_files(tmp_path):
    arrays = write_sbd(tmp_path / "benchmark_RELEASE" / "dataset", {"train": ["2008_000002", "2008_000003"], "val": ["2008_000008"]})
    ds = build_dataset("auto", tmp_path, "train")
    assert isinstance(ds, SBDDataset) and len(ds) == 2 and ds.num_classes == 21
    image, mask = ds[1]
    np.testing.assert_array_equal(mask.numpy(), arrays["2008_000003"][1])
    np.testing.assert_array_equal(ds.load_raw(1).image, arrays["2008_000003"][0])
    assert image.shape == (3, *arrays["2008_000003"][1].shape)


def test_train_noval_is_sbd_train_minus_voc_val(tmp_path):
    write_sbd(tmp_path / "sbd", {"train": ["a", "b", "c", "d"], "val": ["e"]})
    voc = tmp_path / "voc"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("b\nd\nz\n")
    ds = SBDDataset(tmp_path / "sbd", "train_noval", voc_root=voc)
    assert [ds.name(i) for i in range(len(ds))] == ["a", "c"]


def test_mat_without_gtcls_is_reported_and_skipped(tmp_path, caplog):
    write_sbd(tmp_path, {"train": ["good", "bad"]})
    scipy.io.savemat(str(tmp_path / "cls" / "bad.mat"), {"GTinst": {"Segmentation": np.zeros((3, 3), np.uint8)}})
    ds = SBDDataset(tmp_path, "train")
    assert [ds.name(i) for i in range(len(ds))] == ["good"]
    (problem,) = ds.report.problems
    assert problem.kind == "unreadable_mask" and problem.path == "cls/bad.mat" and "GTcls" in problem.message
    assert "cls/bad.mat" in caplog.text


def test_voc_palette_is_the_devkit_colour_map():
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert [tuple(c) for c in palette[:4]] == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]
    assert tuple(palette[20]) == (0, 64, 128)


def test_zero_byte_mat_is_reported_as_an_empty_file(tmp_path):
    write_sbd(tmp_path, {"train": ["good", "empty"]})
    (tmp_path / "cls" / "empty.mat").write_bytes(b"")
    ds = SBDDataset(tmp_path, "train")
    (problem,) = ds.report.problems
    assert (problem.kind, problem.path, problem.message) == ("unreadable_mask", "cls/empty.mat", "empty file (0 bytes)")


def test_voc_and_sbd_import_neither_each_other():
    import subprocess
    import sys

    for module, other in (("sbd", "voc"), ("voc", "sbd")):
        code = f"import sys, fcnseg.data.{module}; print('fcnseg.data.{other}' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "False", f"fcnseg.data.{module} imports fcnseg.data.{other}"

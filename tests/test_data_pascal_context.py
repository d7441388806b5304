"""PASCAL-Context layout: the full label set mapped onto the task classes + background, VOC2010 images and lists, the scan."""

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from fcnseg.cli import main
from fcnseg.data import PascalContextDataset, build_dataset, detect_kind
from fcnseg.data.pascal_context import CONTEXT_59_CLASSES, context_label_table, read_context_labels
from fcnseg.data.synthetic_layouts import make_synthetic_layout
from fcnseg.errors import DataError
from fcnseg.metrics import ConfusionMatrix
from fcnseg.scoring import HeadScores

# A few lines of the released labels.txt (their real ids), one respelled with a space to test the matching.
LABELS = "1: accordion\n2: aeroplane\n19: bedclothes\n80: cloth\n81: clothes tree\n308: potted plant\n397: table\n398: tableware\n"
TASK = "1: aeroplane\n2: diningtable\n3: bedcloth\n4: clothes\n5: pottedplant\n"
# stored id -> training label, written by hand: task class k -> k, everything else -> 0 (background)
HAND_TABLE = {0: 0, 1: 0, 2: 1, 19: 3, 80: 4, 81: 0, 308: 5, 397: 2, 398: 0, 999: 0}
HAND_TABLE_NO_BACKGROUND = {0: 255, 1: 255, 2: 0, 19: 2, 80: 3, 81: 255, 308: 4, 397: 1, 398: 255, 999: 255}


def context_tree(context, voc, names_by_split, seed=0, labels=LABELS, task=TASK):
    """Context annotations under ``context``, VOC2010 images and Main lists under ``voc``."""
    rng = np.random.default_rng(seed)
    (context / "trainval").mkdir(parents=True, exist_ok=True)
    (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (context / "labels.txt").write_text(labels)
    (context / "59_labels.txt").write_text(task)
    for split, names in names_by_split.items():
        for name in names:
            write_item(context, voc, name, rng.choice(list(HAND_TABLE), size=(6, 8)).astype(np.uint16), rng)
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))


def write_item(context, voc, name, label_map, rng, key="LabelMap", image_size=None):
    h, w = image_size or label_map.shape
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
    scipy.io.savemat(str(context / "trainval" / f"{name}.mat"), {key: label_map})


def test_full_labels_map_onto_the_task_classes_with_everything_else_background(tmp_path):
    context, voc = tmp_path / "pascal-context", tmp_path / "VOCdevkit" / "VOC2010"
    context_tree(context, voc, {"val": ["2008_000002"]})
    stored = np.array([[0, 1, 2, 19, 80], [81, 308, 397, 398, 999]], dtype=np.uint16)
    write_item(context, voc, "2008_000002", stored, np.random.default_rng(1))
    ds = PascalContextDataset(context, "val", voc_root=tmp_path)
    _, mask = ds[0]
    assert np.array_equal(mask.numpy(), np.vectorize(HAND_TABLE.get)(stored))
    assert ds.class_names == ["background", "aeroplane", "diningtable", "bedcloth", "clothes", "pottedplant"]
    no_background = PascalContextDataset(context, "val", voc_root=voc, background=False)
    assert np.array_equal(no_background[0][1].numpy(), np.vectorize(HAND_TABLE_NO_BACKGROUND.get)(stored))
    assert no_background.class_names == ["aeroplane", "diningtable", "bedcloth", "clothes", "pottedplant"]


def test_the_released_59_classes_give_60_outputs_and_a_background_line_is_skipped(tmp_path):
    make_synthetic_layout(tmp_path, "pascal_context", num_train=2, num_val=1, seed=0, size=(30, 40))
    ds = PascalContextDataset(tmp_path, "train")
    assert ds.num_classes == 60 and ds.class_names[0] == "background" and ds.class_names[1:] == list(CONTEXT_59_CLASSES)
    assert ds.class_names[11] == "diningtable" and ds.normalization.name == "paper_bgr"
    task = (tmp_path / "59_labels.txt").read_text()
    (tmp_path / "59_labels.txt").write_text("0: background\n" + task)  # as the reference's classes-59.txt lists them
    assert PascalContextDataset(tmp_path, "train").class_names == ds.class_names


def test_label_files_that_do_not_fit_are_reported_with_file_and_line(tmp_path):
    (tmp_path / "labels.txt").write_text("1: accordion\ntwo: aeroplane\n")
    with pytest.raises(DataError, match=r"labels.txt:2: expected '<id>: <name>'"):
        read_context_labels(tmp_path / "labels.txt")
    with pytest.raises(DataError, match="has no class 'cat' for the task class 'cat'"):
        context_label_table([(1, "accordion")], ["cat"])


@pytest.mark.parametrize(
    "line, message",
    [
        ("1000000000000000: accordion", r"labels.txt:2: label id 1000000000000000 is beyond 65535"),
        ("-3: accordion", r"labels.txt:2: label id -3 is negative"),
        ("\u00b2: accordion", r"labels.txt:2: expected '<id>: <name>'"),  # a digit to isdigit, not to int
    ],
)
def test_absurd_label_ids_are_refused_with_file_and_line_before_any_table_is_sized(tmp_path, line, message):
    (tmp_path / "labels.txt").write_text(f"0: background\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_context_labels(tmp_path / "labels.txt")
    with pytest.raises(DataError, match="label ids must lie in 0..65535"):
        context_label_table([(0, "background"), (10**15, "cat")], ["cat"])
    (tmp_path / "labels.txt").write_text("0: background\n65535: accordion\n")
    assert read_context_labels(tmp_path / "labels.txt") == [(0, "background"), (65535, "accordion")]


def test_scan_reports_missing_mat_wrong_key_and_size_mismatch(tmp_path):
    context, voc = tmp_path / "ctx", tmp_path / "VOC2010"
    context_tree(context, voc, {"train": ["good1", "good2"]})
    rng = np.random.default_rng(2)
    labels = np.full((6, 8), 2, dtype=np.uint16)
    write_item(context, voc, "nomat", labels, rng)
    (context / "trainval" / "nomat.mat").unlink()
    write_item(context, voc, "wrongkey", labels, rng, key="labels")
    write_item(context, voc, "wrongsize", labels, rng, image_size=(7, 8))
    names = ["good1", "good2", "nomat", "wrongkey", "wrongsize"]
    (voc / "ImageSets/Main/train.txt").write_text("\n".join(names) + "\n")
    ds = PascalContextDataset(context, "train", voc_root=voc)
    found = {p.name: p.kind for p in ds.report.problems}
    assert found == {"nomat": "missing_mask", "wrongkey": "unreadable_mask", "wrongsize": "size_mismatch"}
    messages = {p.name: p.message for p in ds.report.problems}
    assert "expected the key 'LabelMap'" in messages["wrongkey"] and "mask is 8x6 but its image" in messages["wrongsize"]
    assert [ds.name(i) for i in range(len(ds))] == ["good1", "good2"]
    with pytest.raises(DataError, match="ImageSets/Main/test.txt does not exist"):
        PascalContextDataset(context, "test", voc_root=voc)


def test_synthetic_context_tree_loads_through_build_dataset_and_scores_as_one_head(tmp_path, capsys):
    assert main(["make-synthetic", str(tmp_path), "--style", "pascal_context", "--num-train", "3", "--num-val", "2",
                 "--size", "32x40"]) == 0  # fmt: skip
    assert "3 train + 2 val pascal_context scenes" in capsys.readouterr().out
    assert detect_kind(tmp_path) == "pascal_context"
    ds = build_dataset("auto", tmp_path, "train")
    assert ds.report.ok and len(ds) == 3 and ds[0][0].shape == (3, 32, 40)
    labels = set(np.unique(np.concatenate([ds.load_raw(i).mask.ravel() for i in range(3)])).tolist())
    assert 0 in labels and len(labels) >= 4 and max(labels) < 60  # background (rims, other classes) and several classes
    # one head: HeadScores agrees with a plain ConfusionMatrix
    rng = np.random.default_rng(0)
    scores, matrix = HeadScores(ds.heads), ConfusionMatrix(60)
    for i in range(len(ds)):
        mask = ds[i][1][None]
        prediction = torch.from_numpy(rng.integers(0, 60, tuple(mask.shape)))
        scores.update([prediction], mask)
        matrix.update(prediction, mask)
    assert scores.compute()["semantic"] == matrix.compute()
    assert main(["check-data", str(tmp_path)]) == 0
    assert "pascal_context val at" in capsys.readouterr().out

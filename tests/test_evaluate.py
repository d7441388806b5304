"""evaluate() and score_folders(): agreement with an independent computation, saved predictions, the eval command."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.cli import main
from fcnseg.data import SyntheticDataset, VOCDataset, make_synthetic, read_mask_png
from fcnseg.errors import DataError
from fcnseg.evaluation import evaluate, score_folders

NUM_CLASSES = 6


def tiny_model(seed=0):
    """A per-pixel linear classifier: enough to produce varied, checkable predictions."""
    torch.manual_seed(seed)
    model = torch.nn.Conv2d(3, NUM_CLASSES, kernel_size=1)
    torch.nn.init.normal_(model.weight, std=0.05)
    return model


def reference_scores(predictions, truths, n):
    """score.py of fcn.berkeleyvision.org, in NumPy."""
    hist = np.zeros((n, n))
    for p, g in zip(predictions, truths):
        k = (g >= 0) & (g < n)
        hist += np.bincount(n * g[k].astype(int) + p[k], minlength=n * n).reshape(n, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.diag(hist).sum() / hist.sum()
        acc_cls = np.nanmean(np.diag(hist) / hist.sum(1))
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
    freq = hist.sum(1) / hist.sum()
    return {
        "pixel_accuracy": acc,
        "mean_accuracy": acc_cls,
        "mean_iu": np.nanmean(iu),
        "frequency_weighted_iu": (freq[freq > 0] * iu[freq > 0]).sum(),
    }


def numpy_predictions(model, dataset):
    w = model.weight.detach().numpy()[:, :, 0, 0].astype(np.float64)
    b = model.bias.detach().numpy().astype(np.float64)
    out = []
    for i in range(len(dataset)):
        x = dataset[i][0].numpy().astype(np.float64)  # [3, H, W]
        out.append(np.argmax(np.einsum("ck,khw->chw", w, x) + b[:, None, None], axis=0))
    return out


def test_evaluate_agrees_with_numpy_argmax_and_the_reference_scoring():
    dataset = SyntheticDataset("val", 4, seed=1)
    model = tiny_model()
    result = evaluate(model, dataset, precision="fp32", progress=False)
    predictions = numpy_predictions(model, dataset)
    truths = [dataset.load_raw(i).mask for i in range(len(dataset))]
    expected = reference_scores(predictions, truths, NUM_CLASSES)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-9), key
    assert result["num_images"] == 4 and result["class_names"] == dataset.class_names
    assert len(result["per_class_iu"]) == NUM_CLASSES


def test_saved_predictions_are_palette_pngs_that_score_the_same_from_folders(tmp_path):
    make_synthetic(tmp_path / "data", num_train=0, num_val=3, seed=2, image_format="png")
    dataset = VOCDataset(tmp_path / "data", "val")
    model = tiny_model(1)
    result = evaluate(model, dataset, precision="fp32", save_predictions=tmp_path / "pred", progress=False)
    predictions = numpy_predictions(model, dataset)
    for i, expected in enumerate(predictions):
        path = tmp_path / "pred" / f"{dataset.name(i)}.png"
        assert Image.open(path).mode == "P"
        np.testing.assert_array_equal(read_mask_png(path), expected)
    folders = score_folders(tmp_path / "pred", tmp_path / "data" / "SegmentationClass", num_classes=6, progress=False)
    assert folders["confusion"] == result["confusion"]
    assert folders["mean_iu"] == result["mean_iu"] and folders["missing"] == []


def test_evaluate_runs_under_bfloat16_autocast_and_restores_training_mode():
    model = tiny_model().train()
    result = evaluate(model, SyntheticDataset("val", 2), precision="bf16", progress=False)
    assert 0.0 <= result["pixel_accuracy"] <= 1.0
    assert model.training


def test_evaluate_rejects_a_model_with_a_different_number_of_classes():
    with pytest.raises(DataError, match="predicts 3 classes but the data set has 6"):
        evaluate(torch.nn.Conv2d(3, 3, 1), SyntheticDataset("val", 1), progress=False)


def test_evaluate_limit_scores_the_first_images_only():
    assert evaluate(tiny_model(), SyntheticDataset("val", 5), limit=2, progress=False)["num_images"] == 2


def write_labels(folder, name, mask):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="L").save(folder / f"{name}.png")


def test_score_folders_reports_missing_predictions_by_count_and_name(tmp_path):
    for name in ("a", "b", "c"):
        write_labels(tmp_path / "gt", name, np.zeros((4, 4)))
    write_labels(tmp_path / "pred", "a", np.zeros((4, 4)))
    with pytest.raises(DataError, match=r"2 of 3 ground truths .* have no prediction .*\(e\.g\. b, c\)"):
        score_folders(tmp_path / "pred", tmp_path / "gt", progress=False)
    result = score_folders(tmp_path / "pred", tmp_path / "gt", allow_missing=True, progress=False)
    assert result["missing"] == ["b", "c"] and result["num_images"] == 1 and result["pixel_accuracy"] == 1.0


def test_score_folders_names_a_prediction_of_the_wrong_size(tmp_path):
    write_labels(tmp_path / "gt", "a", np.zeros((4, 5)))
    write_labels(tmp_path / "pred", "a", np.zeros((4, 6)))
    with pytest.raises(DataError, match=r"pred/a\.png is 6x4 but its ground truth .*gt/a\.png is 5x4"):
        score_folders(tmp_path / "pred", tmp_path / "gt", progress=False)


def test_score_folders_rejects_predicted_labels_outside_the_classes(tmp_path):
    write_labels(tmp_path / "gt", "a", np.zeros((4, 4)))
    write_labels(tmp_path / "pred", "a", np.full((4, 4), 21))
    with pytest.raises(DataError, match=r"a\.png: predicted values \[21\] outside the classes 0..20"):
        score_folders(tmp_path / "pred", tmp_path / "gt", progress=False)


def test_eval_command_scores_folders_prints_the_table_and_writes_json(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name in ("x", "y"):
        gt = rng.integers(0, 3, (6, 7))
        gt[0] = 255
        write_labels(tmp_path / "gt", name, gt)
        write_labels(tmp_path / "pred", name, rng.integers(0, 3, (6, 7)))
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    out = tmp_path / "scores.json"
    argv = ["eval", "--pred-dir", str(tmp_path / "pred"), "--gt-dir", str(tmp_path / "gt")]
    assert main(argv + ["--class-file", str(tmp_path / "classes.txt"), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "mean IU" in printed and "dog" in printed
    saved = json.loads(out.read_text())
    assert saved["class_names"] == ["background", "cat", "dog"] and saved["num_images"] == 2
    assert 0 <= saved["mean_iu"] <= 1


def test_eval_command_on_a_checkpoint_writes_metrics_and_predictions(tmp_path, capsys):
    checkpoint = pytest.importorskip("fcnseg.checkpoint")
    models = pytest.importorskip("fcnseg.models")
    from fcnseg.data import PAPER_BGR

    make_synthetic(tmp_path / "data", num_train=0, num_val=2, seed=3, size=(48, 56))
    config = models.ModelConfig(arch="fcn32s", backbone="small", num_classes=6)
    torch.manual_seed(0)
    checkpoint.save_checkpoint(
        tmp_path / "model.pt", models.build_model(config), config, list(SyntheticDataset().class_names), PAPER_BGR
    )
    out = tmp_path / "eval.json"
    argv = ["eval", str(tmp_path / "model.pt"), "--data", str(tmp_path / "data"), "--out", str(out)]
    assert main(argv + ["--save-predictions", str(tmp_path / "pred"), "--no-progress"]) == 0
    saved = json.loads(out.read_text())
    assert saved["num_images"] == 2 and saved["normalization"]["name"] == "paper_bgr"
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["val_00000.png", "val_00001.png"]
    assert "ring" in capsys.readouterr().out


def test_eval_of_a_checkpoint_on_a_voc_tree_with_assumed_classes_names_the_missing_class_file(tmp_path, capsys):
    checkpoint = pytest.importorskip("fcnseg.checkpoint")
    models = pytest.importorskip("fcnseg.models")
    from fcnseg.data import PAPER_BGR

    make_synthetic(tmp_path / "data", num_train=0, num_val=1, seed=3, size=(32, 32))
    (tmp_path / "data" / "classes.txt").unlink()  # the tree's own 6 classes, but no class file: VOC's 21 assumed
    config = models.ModelConfig(arch="fcn32s", backbone="small", num_classes=6)
    checkpoint.save_checkpoint(
        tmp_path / "model.pt", models.build_model(config), config, list(SyntheticDataset().class_names), PAPER_BGR
    )
    argv = ["eval", str(tmp_path / "model.pt"), "--data", str(tmp_path / "data"), "--no-progress"]
    assert main(argv + ["--out", str(tmp_path / "eval.json")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "model.pt predicts is 6 but the data set" in err and "21 PASCAL VOC classes assumed" in err
    assert str(tmp_path / "data" / "classes.txt") in err

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


def numpy_predictions(model, dataset, indices=None):
    """The tiny model's labels for the stored items, computed in float64 NumPy from the raw images."""
    w = model.weight.detach().numpy()[:, :, 0, 0].astype(np.float64)
    b = model.bias.detach().numpy().astype(np.float64)
    out = []
    for i in range(len(dataset)) if indices is None else indices:
        x = dataset.normalization.image_to_tensor(dataset.load_raw(i).image).numpy().astype(np.float64)  # [3, H, W]
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
    dataset = SyntheticDataset("val", 2)
    model = tiny_model().train()
    result = evaluate(model, dataset, precision="bf16", progress=False)
    assert result["precision"] == "bf16" and model.training
    # bf16 logits may flip near-ties, so the counts agree with the float64 argmax on most pixels only
    truths = [dataset.load_raw(i).mask for i in range(len(dataset))]
    expected = reference_scores(numpy_predictions(model, dataset), truths, NUM_CLASSES)
    assert result["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"], abs=0.05)


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
    truths, predictions = [], []
    for name in ("x", "y"):
        gt = rng.integers(0, 3, (6, 7))
        gt[0] = 255
        truths.append(gt)
        predictions.append(rng.integers(0, 3, (6, 7)))
        write_labels(tmp_path / "gt", name, gt)
        write_labels(tmp_path / "pred", name, predictions[-1])
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    out = tmp_path / "scores.json"
    argv = ["eval", "--pred-dir", str(tmp_path / "pred"), "--gt-dir", str(tmp_path / "gt")]
    assert main(argv + ["--class-file", str(tmp_path / "classes.txt"), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "mean IU" in printed and "dog" in printed
    saved = json.loads(out.read_text())
    assert saved["class_names"] == ["background", "cat", "dog"] and saved["num_images"] == 2
    for key, value in reference_scores(predictions, truths, 3).items():
        assert saved[key] == pytest.approx(value, rel=1e-12), key


def test_eval_command_on_a_checkpoint_writes_metrics_and_predictions(tmp_path, capsys):
    checkpoint = pytest.importorskip("fcnseg.weights.checkpoint")
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
    checkpoint = pytest.importorskip("fcnseg.weights.checkpoint")
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


def synthetic_tree_with_bad_files(root):
    """A 5-image val split (PNG images) of which val_00001's image is empty and val_00003 has no mask."""
    make_synthetic(root, num_train=0, num_val=5, seed=4, image_format="png", size=(24, 28))
    (root / "JPEGImages" / "val_00001.png").write_bytes(b"")
    (root / "SegmentationClass" / "val_00003.png").unlink()
    return ["val_00000", "val_00002", "val_00004"]


def test_evaluate_records_the_items_the_scan_skipped(tmp_path):
    good = synthetic_tree_with_bad_files(tmp_path / "data")
    dataset = VOCDataset(tmp_path / "data", "val")
    model = tiny_model(2)
    result = evaluate(model, dataset, precision="fp32", progress=False)
    assert result["num_images"] == 3 and result["num_skipped"] == 2
    root = tmp_path / "data"
    assert result["skipped"] == [
        {"name": "val_00001", "path": str(root / "JPEGImages" / "val_00001.png"), "kind": "unreadable_image",
         "message": "empty file (0 bytes)"},
        {"name": "val_00003", "path": str(root / "JPEGImages" / "val_00003.png"), "kind": "missing_mask",
         "message": "image has no mask; expected SegmentationClass/val_00003.png"},
    ]
    assert [dataset.name(i) for i in range(len(dataset))] == good


def test_an_item_that_fails_to_load_during_evaluation_is_skipped_and_recorded_not_replaced(tmp_path):
    make_synthetic(tmp_path / "data", num_train=0, num_val=4, seed=5, image_format="png", size=(20, 22))
    dataset = VOCDataset(tmp_path / "data", "val")
    (tmp_path / "data" / "JPEGImages" / "val_00002.png").write_bytes(b"gone bad")
    model = tiny_model(3)
    result = evaluate(model, dataset, precision="fp32", progress=False)
    kept = [0, 1, 3]  # not 0, 1, 3, 3: the next item must not be scored twice in its place
    predictions = numpy_predictions(model, dataset, kept)
    truths = [dataset.load_raw(i).mask for i in kept]
    expected = reference_scores(predictions, truths, NUM_CLASSES)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-9), key
    assert result["num_images"] == 3 and result["num_skipped"] == 1
    (skipped,) = result["skipped"]
    assert skipped["name"] == "val_00002" and skipped["path"].endswith("val_00002.png")
    assert skipped["kind"] == "failed_to_load" and "cannot read the image" in skipped["message"]


def test_eval_command_says_how_many_were_scored_and_skipped_and_lists_the_skipped_files(tmp_path, capsys):
    checkpoint = pytest.importorskip("fcnseg.weights.checkpoint")
    models = pytest.importorskip("fcnseg.models")
    from fcnseg.data import PAPER_BGR

    synthetic_tree_with_bad_files(tmp_path / "data")
    config = models.ModelConfig(arch="fcn32s", backbone="small", num_classes=6)
    checkpoint.save_checkpoint(
        tmp_path / "model.pt", models.build_model(config), config, list(SyntheticDataset().class_names), PAPER_BGR
    )
    out = tmp_path / "eval.json"
    argv = ["eval", str(tmp_path / "model.pt"), "--data", str(tmp_path / "data"), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"3 images scored, 2 skipped (listed below and in {out})" in printed
    assert f"unreadable_image  {tmp_path / 'data' / 'JPEGImages' / 'val_00001.png'}: empty file (0 bytes)" in printed
    assert "missing_mask" in printed and "val_00003.png" in printed
    saved = json.loads(out.read_text())
    assert saved["num_images"] == 3 and saved["num_skipped"] == 2
    assert [s["name"] for s in saved["skipped"]] == ["val_00001", "val_00003"]


def test_score_folders_skips_and_records_unreadable_pngs_and_missing_predictions(tmp_path):
    rng = np.random.default_rng(1)
    truths = {name: rng.integers(0, 3, (5, 6)) for name in ("a", "b", "c", "d", "e")}
    preds = {name: rng.integers(0, 3, (5, 6)) for name in truths}
    for name in truths:
        write_labels(tmp_path / "gt", name, truths[name])
        if name != "e":
            write_labels(tmp_path / "pred", name, preds[name])
    (tmp_path / "gt" / "b.png").write_bytes(b"")  # unreadable ground truth
    (tmp_path / "pred" / "c.png").write_bytes(b"\x89PNG broken")  # unreadable prediction
    result = score_folders(tmp_path / "pred", tmp_path / "gt", num_classes=3, allow_missing=True, progress=False)
    expected = reference_scores([preds[n] for n in ("a", "d")], [truths[n] for n in ("a", "d")], 3)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-12), key
    assert result["num_images"] == 2 and result["num_skipped"] == 3 and result["missing"] == ["e"]
    by_name = {s["name"]: s for s in result["skipped"]}
    assert by_name["b"] == {"name": "b", "path": str(tmp_path / "gt" / "b.png"), "kind": "unreadable_mask",
                            "message": "empty file (0 bytes)"}
    assert by_name["c"]["kind"] == "unreadable_prediction" and by_name["c"]["path"] == str(tmp_path / "pred" / "c.png")
    assert "cannot read the mask" in by_name["c"]["message"]
    assert by_name["e"] == {"name": "e", "path": str(tmp_path / "pred" / "e.png"), "kind": "missing_prediction",
                            "message": f"ground truth {tmp_path / 'gt' / 'e.png'} has no prediction"}


def test_eval_command_on_folders_lists_the_skipped_files(tmp_path, capsys):
    for name in ("x", "y", "z"):
        write_labels(tmp_path / "gt", name, np.zeros((4, 4)))
        write_labels(tmp_path / "pred", name, np.zeros((4, 4)))
    (tmp_path / "pred" / "y.png").write_bytes(b"")
    out = tmp_path / "scores.json"
    argv = ["eval", "--pred-dir", str(tmp_path / "pred"), "--gt-dir", str(tmp_path / "gt"), "--num-classes", "2"]
    assert main(argv + ["--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"2 images scored, 1 skipped (listed below and in {out})" in printed
    assert f"unreadable_prediction  {tmp_path / 'pred' / 'y.png'}: empty file (0 bytes)" in printed
    assert json.loads(out.read_text())["skipped"][0]["name"] == "y"


def test_eval_command_without_skipped_files_says_so_briefly(tmp_path, capsys):
    write_labels(tmp_path / "gt", "x", np.zeros((4, 4)))
    write_labels(tmp_path / "pred", "x", np.zeros((4, 4)))
    argv = ["eval", "--pred-dir", str(tmp_path / "pred"), "--gt-dir", str(tmp_path / "gt"), "--num-classes", "2"]
    assert main(argv + ["--out", str(tmp_path / "s.json"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "skipped" not in printed and ": 1 image scored\n" in printed
    assert json.loads((tmp_path / "s.json").read_text())["num_skipped"] == 0

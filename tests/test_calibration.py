"""Calibration: the fitted temperature, ECE against a plain loop, the temperature in the contract, calibrate and eval --report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fcnseg.calibration import (
    ReliabilityBins,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability_of_logits,
)
from fcnseg.cli import main
from fcnseg.config import ModelConfig
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.models import build_model
from fcnseg.weights.checkpoint import load_model, save_checkpoint
from fcnseg.weights.onnx_format import metadata, parse_metadata


def overconfident_set(pixels: int = 20000, classes: int = 5, sharpen: float = 3.0, seed: int = 0):
    """Labels drawn from softmax(z), logits reported as sharpen * z: a model sure beyond its accuracy by a known T."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(pixels, classes, generator=g) * 1.5
    labels = torch.multinomial(z.softmax(1), 1, generator=g).squeeze(1)
    labels[:500] = 255  # ignored pixels must not count
    return sharpen * z, labels


def test_fitted_temperature_lowers_nll_on_an_overconfident_set():
    logits, labels = overconfident_set()
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)  # the sharpening undone
    assert nll(logits, labels, temperature) < nll(logits, labels, 1.0) - 0.1
    # the optimum: NLL no lower a little either side
    assert nll(logits, labels, temperature) <= min(nll(logits, labels, temperature * 0.9),
                                                   nll(logits, labels, temperature * 1.1))


def test_calibrated_probabilities_sum_to_one_and_keep_the_argmax():
    logits, _ = overconfident_set(2000)
    temperature = fit_temperature(*overconfident_set())
    plain, calibrated = logits.softmax(1), (logits / temperature).softmax(1)
    torch.testing.assert_close(calibrated.sum(1), torch.ones(len(logits)))
    assert torch.equal(calibrated.argmax(1), plain.argmax(1))
    assert calibrated.max(1).values.mean() < plain.max(1).values.mean()


def plain_ece(confidence: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """ECE with a loop over pixels and bins, as the definition reads."""
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [i for i, c in enumerate(confidence) if (low <= c < high) or (b == bins - 1 and c == 1.0)]
        if not members:
            continue
        accuracy = sum(correct[i] for i in members) / len(members)
        mean_conf = sum(confidence[i] for i in members) / len(members)
        total += len(members) / len(confidence) * abs(accuracy - mean_conf)
    return total


@pytest.mark.parametrize("bins", [10, 15])
def test_ece_agrees_with_a_plain_loop(bins):
    rng = np.random.default_rng(1)
    confidence = np.concatenate([rng.uniform(0.2, 1, 3000), [1.0, 0.0]])
    correct = rng.uniform(0, 1, len(confidence)) < confidence ** 2  # over-confident by construction
    assert expected_calibration_error(confidence, correct, bins) == pytest.approx(plain_ece(confidence, correct, bins),
                                                                                  abs=1e-9)
    halves = ReliabilityBins(bins).update(confidence[:1000], correct[:1000]).update(confidence[1000:], correct[1000:])
    assert halves.ece() == pytest.approx(plain_ece(confidence, correct, bins), abs=1e-9)
    assert halves.pixels == len(confidence)


def test_reliability_of_logits_leaves_out_the_ignore_label():
    logits, labels = overconfident_set(3000)
    bins = reliability_of_logits(logits.T, labels)
    assert bins.pixels == int((labels != 255).sum())
    probs = logits.softmax(1)
    keep = labels != 255
    expected = plain_ece(probs.max(1).values[keep].numpy(), (probs.argmax(1) == labels)[keep].numpy(), 15)
    assert bins.ece() == pytest.approx(expected, abs=1e-6)


def test_temperature_travels_in_onnx_metadata_and_is_checked():
    config = ModelConfig(arch="fcn8s", backbone="small", num_classes=3)
    meta = metadata(config, PAPER_BGR, ["a", "b", "c"], temperature=1.8)
    assert parse_metadata(meta, "m.onnx").temperature == 1.8
    assert "fcnseg.temperature" not in metadata(config, PAPER_BGR, ["a", "b", "c"])
    assert parse_metadata(metadata(config, PAPER_BGR, ["a", "b", "c"]), "m.onnx").temperature == 1.0
    from fcnseg.errors import CheckpointError

    with pytest.raises(CheckpointError, match="fcnseg.temperature"):
        parse_metadata({**meta, "fcnseg.temperature": "-2"}, "m.onnx")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small net, its score layers scaled up so that it is over-confident on the synthetic set, and the set."""
    from fcnseg.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("cal")
    make_synthetic(root / "data", num_train=2, num_val=4, size=(64, 64), image_format="png")
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="fcn32s", backbone="small", num_classes=6))
    torch.nn.init.normal_(model.score_fr.weight, std=2.0)
    from fcnseg.data.synthetic import STYLE_CLASSES

    names = list(STYLE_CLASSES["shapes"])
    save_checkpoint(root / "model.pt", model.eval(), model.config, names, PAPER_BGR)
    return root


def test_calibrate_command_writes_the_temperature_beside_the_model(trained, capsys):
    out = trained / "model_calibrated.pt"
    report = trained / "fit.json"
    assert main(["calibrate", str(trained / "model.pt"), "--data", str(trained / "data"), "--precision", "fp32",
                 "--json", str(report), "--no-progress"]) == 0
    assert "calibrated model written to" in capsys.readouterr().out
    fit = json.loads(report.read_text())
    calibrated = load_model(out)
    assert calibrated.temperature == pytest.approx(fit["temperature"]) and fit["temperature"] > 1
    assert fit["nll_after"] < fit["nll_before"] and fit["ece_after"] < fit["ece_before"]
    assert load_model(trained / "model.pt").temperature == 1.0  # the user's file untouched
    assert main(["calibrate", str(trained / "model.pt"), "--data", str(trained / "data"), "-o", str(out),
                 "--in-place"]) != 0
    assert "give -o or --in-place, not both" in capsys.readouterr().err


def test_eval_report_shows_ece_before_and_after_and_a_reliability_diagram(trained, tmp_path, capsys):
    model = trained / "model_calibrated.pt"
    if not model.exists():
        handle = load_model(trained / "model.pt")
        handle.temperature = 2.0
        handle.save(model)
    out = tmp_path / "eval.json"
    assert main(["eval", str(model), "--data", str(trained / "data"), "--precision", "fp32", "--out", str(out),
                 "--report", str(tmp_path / "report"), "--no-progress"]) == 0
    assert "expected calibration error" in capsys.readouterr().out
    c = json.loads(out.read_text())["calibration"]
    assert c["temperature"] == pytest.approx(load_model(model).temperature)
    assert c["ece_calibrated"] < c["ece_uncalibrated"]
    assert (tmp_path / "report" / "reliability.png").stat().st_size > 1000
    page = (tmp_path / "report" / "index.html").read_text()
    assert "reliability.png" in page and "expected calibration error" in page
    assert sum(r["pixels"] for r in c["reliability_uncalibrated"]) == c["pixels"] > 0


def test_training_ends_with_a_temperature_fitted_on_the_validation_split(tmp_path):
    from fcnseg.calibration import calibrate
    from fcnseg.config import resolve_run_config
    from fcnseg.data.synthetic import SyntheticDataset
    from fcnseg.training.trainer import train

    settings = {
        "model": {"arch": "fcn8s", "backbone": "small", "num_classes": 6, "dropout": 0.1},
        "data": {"dataset": "synthetic", "root": "", "synthetic_train_images": 4, "synthetic_val_images": 2,
                 "synthetic_size": 48, "crop_size": 40, "num_workers": 0, "normalization": "imagenet_rgb"},
        "train": {"out_dir": str(tmp_path / "run"), "optimizer": "adamw", "lr": 2e-3, "batch_size": 2,
                  "max_iter": 2, "val_every": 2, "checkpoint_every": 2, "precision": "fp32", "num_panels": 0},
    }
    result = train(resolve_run_config(overrides=settings), progress=False)
    last = load_model(result.last_checkpoint)
    assert last.temperature != 1.0
    # the stored value is the fit on the validation split, as fcnseg calibrate would find it
    fresh = load_model(result.last_checkpoint)
    fresh.temperature = 1.0
    val = SyntheticDataset("val", 2, size=(48, 48), normalization=last.normalization)
    refit = calibrate(fresh, val, progress=False)
    assert refit.temperature == pytest.approx(last.temperature, rel=1e-3)
    assert resolve_run_config(overrides={**settings, "train": {**settings["train"], "calibrate": False}}).train.calibrate \
        is False  # the switch that leaves it out


def test_temperature_travels_from_checkpoint_to_onnx_and_calibrate_rewrites_it(tmp_path):
    pytest.importorskip("onnx", reason="ONNX export needs the onnx extra: pip install 'fcnseg[onnx]'")
    pytest.importorskip("onnxruntime", reason="ONNX models run with the onnx extra: pip install 'fcnseg[onnx]'")
    from fcnseg.inference.export import export_onnx
    from fcnseg.weights.onnx_format import write_temperature

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="fcn32s", backbone="small", num_classes=3))
    save_checkpoint(tmp_path / "m.pt", model.eval(), model.config, ["a", "b", "c"], PAPER_BGR)
    handle = load_model(tmp_path / "m.pt")
    handle.temperature = 1.6
    export_onnx(handle, tmp_path / "m.onnx")
    assert load_model(tmp_path / "m.onnx").temperature == 1.6
    write_temperature(tmp_path / "m.onnx", tmp_path / "m2.onnx", 0.8)
    again = load_model(tmp_path / "m2.onnx")
    assert again.temperature == 0.8 and again.class_names == ["a", "b", "c"]
    write_temperature(tmp_path / "m2.onnx", tmp_path / "m2.onnx", 1.0)  # in place; 1 leaves the key out
    assert load_model(tmp_path / "m2.onnx").temperature == 1.0

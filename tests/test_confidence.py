"""Confidence maps: the three measures against a hand softmax, whole == tiled, the temperature, folder outputs and CSV."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from fcnseg.cli import main
from fcnseg.config import ModelConfig
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.data.synthetic import generate_sample
from fcnseg.inference.confidence import (
    colour_ramp,
    confidence_from_probabilities,
    confidence_picture,
    summarize,
)
from fcnseg.inference.predictor import Predictor, with_temperature
from fcnseg.models import build_model
from fcnseg.weights.checkpoint import load_model, save_checkpoint

CLASSES = ["background", "disc", "square", "triangle"]


def scoring_model(seed: int = 3):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=len(CLASSES)))
    for name in ("score_fr", "score_pool4", "score_pool3"):
        torch.nn.init.normal_(getattr(model, name).weight, std=0.5)
    return model.eval()


@pytest.fixture(scope="module")
def scene():
    return generate_sample(0, "val", 2, size=(200, 230)).image


def hand_confidence(logits: np.ndarray, kind: str, temperature: float = 1.0) -> np.ndarray:
    """Per pixel with plain numpy in float64: softmax, then the measure, one pixel column at a time."""
    z = logits.astype(np.float64) / temperature
    c = z.shape[0]
    out = np.empty(z.shape[1:])
    for y in range(z.shape[1]):
        for x in range(z.shape[2]):
            e = np.exp(z[:, y, x] - z[:, y, x].max())
            p = e / e.sum()
            top = sorted(p, reverse=True)
            if kind == "max":
                out[y, x] = top[0]
            elif kind == "margin":
                out[y, x] = top[0] - top[1]
            else:
                out[y, x] = 1 + sum(q * math.log(q) for q in p if q > 0) / math.log(c)
    return out


@pytest.mark.parametrize("kind", ["max", "margin", "entropy"])
def test_confidence_equals_a_hand_softmax_of_the_net_logits(kind):
    model = scoring_model()
    image = generate_sample(0, "val", 1, size=(40, 56)).image
    predictor = Predictor(model, PAPER_BGR, precision="fp32", layout="contiguous", max_memory=None)
    result = predictor.predict(image, confidence=kind)
    logits = predictor.runtime(torch.from_numpy(image)[None])[0].numpy()
    expected = hand_confidence(logits, kind)
    assert result.confidence.shape == image.shape[:2] and result.confidence.dtype == np.float32
    assert expected.std() > 0.01, "the test needs confidence that varies over the image"
    np.testing.assert_allclose(result.confidence, expected, atol=2e-5)
    assert result.confidence_kind == kind


@pytest.mark.parametrize("kind", ["max", "entropy"])
def test_tiled_and_whole_give_the_same_confidence_map(scene, kind):
    model = scoring_model()
    whole = Predictor(model, PAPER_BGR, precision="fp32", max_memory=None).predict(scene, confidence=kind)
    tiled = Predictor(model, PAPER_BGR, precision="fp32", tile=96).predict(scene, confidence=kind)
    assert whole.plan.whole and tiled.plan.num_tiles > 1
    np.testing.assert_allclose(tiled.confidence, whole.confidence, atol=1e-4)


def test_temperature_changes_probabilities_and_confidence_but_never_the_labels(scene):
    model = scoring_model()
    plain = Predictor(model, PAPER_BGR, precision="fp32", max_memory=None).predict(scene, probabilities=True,
                                                                                   confidence="max")
    warm = Predictor(model, PAPER_BGR, precision="fp32", max_memory=None, temperature=2.5).predict(
        scene, probabilities=True, confidence="max")
    np.testing.assert_array_equal(warm.labels, plain.labels)
    sums = warm.probabilities.astype(np.float64).sum(0)
    np.testing.assert_allclose(sums, 1, atol=5e-3)
    assert (warm.probabilities.argmax(0) == plain.probabilities.argmax(0)).mean() > 0.999  # float16 ties aside
    assert warm.confidence.mean() < plain.confidence.mean()  # a temperature above 1 softens
    # the probabilities at T are those of softmax(logits / T): p ** (1 / T) renormalised, from T = 1's
    again = with_temperature(torch.from_numpy(plain.probabilities.astype(np.float32)), 2.5).numpy()
    np.testing.assert_allclose(warm.probabilities.astype(np.float32), again, atol=2e-3)


def test_tta_labels_ignore_the_temperature(scene):
    from fcnseg.inference.tta import parse_tta

    model = scoring_model()
    plain = Predictor(model, PAPER_BGR, precision="fp32", max_memory=None, tta=parse_tta("flip")).predict(scene)
    warm = Predictor(model, PAPER_BGR, precision="fp32", max_memory=None, tta=parse_tta("flip"),
                     temperature=4.0).predict(scene, confidence="margin")
    np.testing.assert_array_equal(warm.labels, plain.labels)
    assert warm.confidence.shape == scene.shape[:2]


def test_measures_on_known_distributions():
    p = torch.tensor([[1.0, 0.25, 0.5], [0.0, 0.25, 0.5], [0.0, 0.25, 0.0], [0.0, 0.25, 0.0]])  # [C=4, 3 pixels]
    np.testing.assert_allclose(confidence_from_probabilities(p, "max").numpy(), [1, 0.25, 0.5])
    np.testing.assert_allclose(confidence_from_probabilities(p, "margin").numpy(), [1, 0, 0])
    np.testing.assert_allclose(confidence_from_probabilities(p, "entropy").numpy(), [1, 0, 0.5], atol=1e-6)


def test_summary_counts_pixels_below_the_threshold():
    values = np.array([[0.1, 0.4], [0.6, 0.9]], dtype=np.float16)
    summary = summarize(values, 0.5)
    assert summary.below == 0.5 and summary.mean == pytest.approx(0.5, abs=1e-3)


def test_picture_keeps_the_map_and_adds_a_scale():
    conf = np.linspace(0, 1, 60 * 80).reshape(60, 80)
    picture = confidence_picture(conf)
    assert picture.dtype == np.uint8 and picture.shape[1] > 80 and picture.shape[0] >= 60
    np.testing.assert_array_equal(picture[:60, :80], colour_ramp(conf))
    assert tuple(colour_ramp(np.array([0.0, 1.0]))[0]) == (68, 1, 84)  # viridis's ends: dark = unsure
    assert tuple(colour_ramp(np.array([0.0, 1.0]))[1]) == (253, 231, 37)


def test_temperature_travels_in_the_checkpoint(tmp_path):
    model = scoring_model()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, model.config, CLASSES, PAPER_BGR)
    handle = load_model(path)
    assert handle.temperature == 1.0
    handle.temperature = 1.75
    handle.save(tmp_path / "calibrated.pt")
    again = load_model(tmp_path / "calibrated.pt")
    assert again.temperature == 1.75 and "temperature" not in again.extra
    assert Predictor(again, precision="fp32").temperature == 1.75


def test_cli_writes_confidence_maps_numbers_and_a_table_and_resumes(tmp_path, capsys):
    from PIL import Image

    model = scoring_model()
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, model, model.config, CLASSES, PAPER_BGR)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(generate_sample(0, "val", i, size=(64, 80)).image).save(folder / f"img{i}.png")
    out = tmp_path / "out"
    args = ["predict", str(ckpt), str(folder), "-o", str(out), "--confidence", "entropy", "--confidence-threshold",
            "0.3", "--precision", "fp32", "--workers", "0", "--no-progress"]
    assert main(args) == 0
    values = np.load(out / "img0_confidence.npy")
    assert values.dtype == np.float16 and values.shape == (64, 80)
    assert (out / "img0_confidence.png").is_file() and (out / "img1_confidence.png").is_file()
    with open(out / "confidence.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "mean_confidence_entropy", "share_below_0.3"]
    by_name = {r[0]: r for r in rows[1:]}
    assert float(by_name["img0.png"][1]) == pytest.approx(values.astype(np.float64).mean(), abs=1e-3)
    assert float(by_name["img0.png"][2]) == pytest.approx((values < 0.3).mean(), abs=1e-3)
    # a re-run skips the finished images and still lists them in the table
    (out / "confidence.csv").unlink()
    assert main(args) == 0
    assert "0 segmented, 2 already done" in capsys.readouterr().out
    with open(out / "confidence.csv", newline="") as f:
        assert len(list(csv.reader(f))) == 3

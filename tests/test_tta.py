"""Test-time augmentation: variants parsed from --tta, flip TTA equal to a hand-made average, no change on a mirror-symmetric
input and net, the same result tiled and whole, counted by the memory planner, and through predict and eval."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.cli import main
from fcnseg.config import ModelConfig
from fcnseg.data.normalization import IMAGENET_RGB
from fcnseg.data.palette import read_mask_png
from fcnseg.data.synthetic import generate_sample
from fcnseg.errors import ConfigError, FcnsegError
from fcnseg.inference.predictor import Predictor
from fcnseg.inference.tta import TTAModel, Variant, parse_tta, reserved_bytes, transform_image
from fcnseg.models import build_model

CLASSES = ["background", "a", "b", "c"]


def scoring_model(seed: int = 3, symmetric: bool = False):
    """A small FCN-8s with random score layers; ``symmetric`` mirrors every kernel left-right (a flip-equivariant net)."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=len(CLASSES)))
    for name in ("score_fr", "score_pool4", "score_pool3"):
        torch.nn.init.normal_(getattr(model, name).weight, std=0.05)
    if symmetric:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                    m.weight.copy_((m.weight + m.weight.flip(-1)) / 2)
    return model.eval()


def predictor(model, **kwargs) -> Predictor:
    return Predictor(model, IMAGENET_RGB, CLASSES, precision="fp32", layout="contiguous", **kwargs)


def test_tta_specs_parse_into_variants_and_bad_ones_are_named():
    assert parse_tta(None) == () and parse_tta("none") == ()
    assert parse_tta("flip") == (Variant(1.0, False), Variant(1.0, True))
    assert parse_tta("scales=0.75,1,1.25") == (Variant(0.75), Variant(1.0), Variant(1.25))
    assert len(parse_tta("scales=0.75,1,1.25,flip")) == 6 and Variant(1.25, True) in parse_tta("scales=0.75,1,1.25,flip")
    for bad, words in (("mirror", "expected 'flip'"), ("scales=a", "'a' is not a scale"), ("scales=9", "outside"),
                       ("scales=flip", "no scales"), ("scales=1,1", "twice")):
        with pytest.raises(ConfigError, match=words):
            parse_tta(bad)


def softmax_of(model, image: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model(IMAGENET_RGB.image_to_tensor(image)[None])[0].softmax(0)


def test_flip_tta_is_the_mean_of_the_image_and_its_mirror_mirrored_back():
    model = scoring_model()
    image = generate_sample(0, "val", 2, size=(90, 130)).image
    expected = (softmax_of(model, image) + softmax_of(model, image[:, ::-1].copy()).flip(-1)) / 2
    result = predictor(model, tta=parse_tta("flip")).predict(image, probabilities=True)
    np.testing.assert_allclose(result.probabilities.astype(np.float32), expected.numpy(), atol=2e-3)
    margin = expected.topk(2, 0).values
    clear = (margin[0] - margin[1]) > 5e-3  # where float16 rounding cannot swap the top two
    assert (result.labels == expected.argmax(0).numpy())[clear.numpy()].all()
    assert len(result.variants) == 2


def test_tta_of_a_mirror_symmetric_input_and_net_equals_no_tta():
    model = scoring_model(symmetric=True)
    # Width 90 (= 26 mod 32): the pad-100 trunk's pooling grid and the crops are symmetric too.
    half = generate_sample(0, "val", 3, size=(64, 45)).image
    image = np.ascontiguousarray(np.concatenate([half, half[:, ::-1]], axis=1))
    plain = predictor(model).predict(image, probabilities=True)
    tta = predictor(model, tta=parse_tta("flip")).predict(image, probabilities=True)
    np.testing.assert_array_equal(tta.labels, plain.labels)
    np.testing.assert_allclose(tta.probabilities.astype(np.float32), plain.probabilities.astype(np.float32), atol=1e-3)


def test_tta_tiled_equals_tta_whole_in_fp32():
    model = scoring_model()
    image = generate_sample(0, "val", 4, size=(260, 300)).image
    variants = parse_tta("scales=1,1.25")  # the 1.25x variant's last tiles read from 32 px off the image origin
    whole = predictor(model, tta=variants, max_memory=None).predict(image, probabilities=True)
    tiled = predictor(model, tta=variants, tile=96).predict(image, probabilities=True)
    assert whole.plan.whole and tiled.plan.num_tiles == 16
    np.testing.assert_array_equal(tiled.labels, whole.labels)
    np.testing.assert_allclose(tiled.probabilities.astype(np.float32), whole.probabilities.astype(np.float32), atol=1e-3)
    assert len(np.unique(whole.labels)) >= 2


def test_the_planner_counts_what_tta_holds():
    model = scoring_model()
    height, width = 900, 1000
    variants = parse_tta("scales=1,1.5,flip")
    held = reserved_bytes(len(CLASSES), height, width, variants)
    assert held >= 2 * len(CLASSES) * height * width * 4  # the sum and one restored map, float32
    # A budget the whole image just fits without TTA: with TTA's sums held beside the forward, it is tiled.
    need = predictor(model).estimate(928, 1024).total + 3 * height * width + height * width
    assert predictor(model, max_memory=need).plan(height, width).whole
    tiled = predictor(model, max_memory=need).plan(height, width, reserved=held)
    assert not tiled.whole
    image = generate_sample(0, "val", 5, size=(120, 140)).image
    with pytest.raises(FcnsegError, match="test-time augmentation holds"):
        predictor(model, max_memory=reserved_bytes(len(CLASSES), 120, 140, variants) // 2, tta=variants).predict(image)


def test_transform_image_resizes_and_mirrors():
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    np.testing.assert_array_equal(transform_image(image, Variant(1.0, True)), image[:, ::-1])
    assert transform_image(image, Variant(1.5)).shape == (6, 9, 3)
    assert transform_image(image, Variant(0.5)).dtype == np.uint8


def test_tta_model_for_evaluation_averages_probabilities():
    model = scoring_model()
    x = IMAGENET_RGB.image_to_tensor(generate_sample(0, "val", 6, size=(80, 96)).image)[None]
    with torch.no_grad():
        out = TTAModel(model, parse_tta("scales=0.75,1,flip"))(x)
    assert out.shape == (1, len(CLASSES), 80, 96)
    torch.testing.assert_close(out.sum(1), torch.ones(1, 80, 96), atol=1e-4, rtol=0)


def test_predict_and_eval_take_tta(tmp_path, capsys):
    from fcnseg.weights.checkpoint import save_checkpoint

    from fcnseg.data import SyntheticDataset

    model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=6))
    # the synthetic set's class names: eval compares them with the data set's
    save_checkpoint(tmp_path / "m.pt", model, model.config, list(SyntheticDataset().class_names), IMAGENET_RGB)
    (tmp_path / "in").mkdir()
    Image.fromarray(generate_sample(0, "val", 7, size=(70, 90)).image).save(tmp_path / "in" / "a.png")
    assert main(["predict", str(tmp_path / "m.pt"), str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--tta", "flip",
                 "--precision", "fp32", "--no-progress", "--workers", "0"]) == 0
    assert read_mask_png(tmp_path / "out" / "a_labels.png").shape == (70, 90)
    out = tmp_path / "eval.json"
    assert main(["eval", str(tmp_path / "m.pt"), "--kind", "synthetic", "--limit", "2", "--tta", "scales=0.75,1",
                 "--precision", "fp32", "--out", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["tta"] == ["0.75", "1"]
    assert main(["predict", str(tmp_path / "m.pt"), str(tmp_path / "in"), "-o", str(tmp_path / "o2"), "--tta", "zoom"]) == 1
    assert "--tta 'zoom'" in capsys.readouterr().err

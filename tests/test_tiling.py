"""Tiled inference: tile geometry on the 32-pixel grid, tiled vs whole-image agreement, and the memory-budget planner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcnseg.config import ModelConfig
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.data.synthetic import generate_sample
from fcnseg.errors import FcnsegError
from fcnseg.files import parse_bytes
from fcnseg.inference.memory import bytes_per_pixel, conv_output_side, estimate_forward
from fcnseg.models import build_model
from fcnseg.models.geometry import receptive_fields
from fcnseg.inference.predictor import OUTPUT_STRIDE, Predictor, context_margin, plan_tiles


def scoring_model(arch: str = "fcn8s", num_classes: int = 6, seed: int = 0):
    """A small FCN whose score layers are random, so that its argmax varies across the image.

    (Zero-initialised score layers would make every pixel class 0 and any agreement test vacuous.)
    """
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch=arch, backbone="small", num_classes=num_classes))
    for name in ("score_fr", "score_pool4", "score_pool3"):
        layer = getattr(model, name, None)
        if layer is not None:
            torch.nn.init.normal_(layer.weight, std=0.05)
            torch.nn.init.zeros_(layer.bias)
    return model.eval()


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return generate_sample(0, "val", 3, size=(300, 430)).image


def test_tiles_start_on_the_output_grid_and_cover_every_pixel_once():
    plan = plan_tiles(300, 430, 100, 64)  # 100 rounds down to 96
    assert plan.tile == 96 and not plan.whole
    covered = np.zeros((300, 430), dtype=int)
    for row in plan.bands():
        for t in row:
            assert t.in_y0 % OUTPUT_STRIDE == 0 and t.in_x0 % OUTPUT_STRIDE == 0
            assert t.in_y0 <= t.y0 and t.in_y1 >= t.y1 and t.in_x0 <= t.x0 and t.in_x1 >= t.x1
            assert t.y0 - t.in_y0 in (0, 64) and t.x0 - t.in_x0 in (0, 64)
            covered[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert (covered == 1).all()
    assert plan.num_tiles == 4 * 5


@pytest.mark.parametrize("backbone,arch", [("small", "fcn8s"), ("vgg16", "fcn32s"), ("alexnet", "fcn32s")])
def test_context_margin_covers_half_the_receptive_field_on_the_grid(backbone, arch):
    model = build_model(ModelConfig(arch=arch, backbone=backbone, num_classes=3))
    rf = receptive_fields(model.backbone.named_children())[-1][1]
    margin = context_margin(model)
    assert margin % OUTPUT_STRIDE == 0
    assert margin >= rf.size // 2 + OUTPUT_STRIDE


@pytest.mark.parametrize("arch", ["fcn8s", "fcn32s"])
def test_tiled_and_whole_predictions_agree_in_fp32(arch, scene):
    model = scoring_model(arch)
    whole = Predictor(model, PAPER_BGR, precision="fp32", max_memory=None).predict(scene)
    tiled = Predictor(model, PAPER_BGR, precision="fp32", tile=160).predict(scene)
    assert whole.plan.whole and tiled.plan.num_tiles == 6
    assert len(np.unique(whole.labels)) >= 3, "the test needs a non-trivial label map"
    agreement = (whole.labels == tiled.labels).mean()
    assert agreement >= 0.999, agreement


def test_tiled_and_whole_predictions_agree_in_bf16(scene):
    model = scoring_model("fcn8s", seed=1)
    whole = Predictor(model, PAPER_BGR, precision="bf16", max_memory=None).predict(scene)
    tiled = Predictor(model, PAPER_BGR, precision="bf16", tile=160).predict(scene)
    assert tiled.plan.num_tiles >= 6
    assert len(np.unique(whole.labels)) >= 3
    assert (whole.labels == tiled.labels).mean() >= 0.999


def test_tiled_probabilities_streamed_to_file_equal_those_in_memory(tmp_path, scene):
    scene = scene[:170, :230]
    predictor = Predictor(scoring_model(), PAPER_BGR, precision="fp32", tile=96)
    in_memory = predictor.predict(scene, probabilities=True)
    streamed = predictor.predict(scene, probabilities_path=tmp_path / "p.npy")
    on_disk = np.load(tmp_path / "p.npy")
    assert on_disk.dtype == np.float16 and on_disk.shape == (6, 170, 230)
    np.testing.assert_array_equal(on_disk, in_memory.probabilities)
    np.testing.assert_array_equal(streamed.labels, in_memory.labels)
    np.testing.assert_allclose(on_disk.astype(np.float32).sum(0), 1.0, atol=0.01)
    assert [p.name for p in tmp_path.iterdir()] == ["p.npy"]  # no temp file left


def test_planner_runs_whole_images_that_fit_and_tiles_those_that_do_not():
    predictor = Predictor(scoring_model(), PAPER_BGR, precision="fp32", max_memory=parse_bytes("256MiB"))
    assert predictor.plan(200, 300).whole
    big = predictor.plan(4000, 6000)
    assert not big.whole and big.tile % OUTPUT_STRIDE == 0
    side = big.tile + 2 * big.margin
    image_and_labels = 4 * 4000 * 6000  # uint8 RGB image + uint8 label map, held whatever the tiling
    assert predictor.estimate(side, side).total + image_and_labels <= parse_bytes("256MiB")
    # The next larger tile would not have fitted: the planner takes the largest.
    bigger = big.tile + OUTPUT_STRIDE + 2 * big.margin
    assert predictor.estimate(bigger, bigger).total + image_and_labels > parse_bytes("256MiB")


def test_a_budget_below_one_tile_is_an_error_naming_the_budget():
    predictor = Predictor(scoring_model(), PAPER_BGR, precision="fp32", max_memory=parse_bytes("20MiB"))
    with pytest.raises(FcnsegError, match="--max-memory"):
        predictor.plan(4000, 6000)


@pytest.mark.parametrize("size", [(97, 130), (224, 225), (301, 160)])
def test_memory_model_shapes_match_the_layers(size):
    """The analytic output sizes (ceil-mode pools, pad 100) equal those of a real forward."""
    model = scoring_model()
    from fcnseg.inference.memory import layer_output_shape

    c, h, w = 3, *size
    x = torch.zeros(1, 3, *size)
    with torch.no_grad():
        for name, layer in model.backbone.named_children():
            x = layer(x)
            c, h, w = layer_output_shape(layer, c, h, w)
            assert tuple(x.shape[1:]) == (c, h, w), name
    assert conv_output_side(5, 2, 2, 0, ceil_mode=True) == 3


def test_memory_estimate_grows_with_pixels_and_halves_in_bf16():
    model = scoring_model()
    small, large = estimate_forward(model, 512, 512), estimate_forward(model, 1024, 1024)
    assert 3.0 < large.activations / small.activations < 5.0
    fp32, bf16 = bytes_per_pixel(model, "fp32"), bytes_per_pixel(model, "bf16")
    assert 0.4 < bf16 / fp32 < 0.8  # activations in 2 bytes, float32 input and logits kept
    vgg = build_model(ModelConfig(arch="fcn8s", backbone="vgg16", num_classes=21))
    assert estimate_forward(vgg, 500, 500).peak_layer in ("conv1_2", "fc6")

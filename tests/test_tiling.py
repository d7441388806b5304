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
from fcnseg.inference.predictor import Predictor
from fcnseg.inference.tiling import OUTPUT_STRIDE, TilePlan, context_margin, largest_plan, plan_tiles
from fcnseg.models import build_model
from fcnseg.models.geometry import receptive_fields
from test_memory import measured_peak  # the allocator and tracemalloc, measured


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


def test_planned_tiles_fit_the_budget_as_measured_and_the_whole_image_would_not():
    """The planner's choice, run for real: weights + image + every torch and numpy allocation stay within the budget.

    The oracle is the allocator (torch.profiler's memory events) and tracemalloc (numpy's arrays),
    not the memory model: the whole image run unplanned measures above the budget, its tiles below.
    """
    budget = parse_bytes("96MiB")
    image = generate_sample(0, "val", 5, size=(700, 900)).image
    model = scoring_model()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    # A narrow margin (agreement is not the point here) lets a dozen tiles, not a hundred, fit the budget.
    tiled = Predictor(model, PAPER_BGR, precision="fp32", layout="contiguous", max_memory=budget, margin=64)
    plan = tiled.plan(700, 900)
    assert not plan.whole
    tiled.predict(image)  # warm up oneDNN's primitive cache, as a folder run is after its first image
    tiled_bytes = weights + image.nbytes + measured_peak(lambda: tiled.predict(image))
    whole = Predictor(model, PAPER_BGR, precision="fp32", layout="contiguous", max_memory=None)
    whole_bytes = weights + image.nbytes + measured_peak(lambda: whole.predict(image))
    assert whole_bytes > budget, "the test needs an image that does not fit whole"
    assert tiled_bytes <= budget
    assert tiled_bytes > budget / 3, "the plan should use the budget, not the smallest tile"


def test_largest_plan_takes_the_largest_tile_whose_cost_fits():
    def cost(plan: TilePlan) -> int:  # any cost that grows with the forward's input
        h, w = plan.input_size()
        return 1000 + 3 * h * w

    height, width, margin, budget = 900, 1300, 64, 1_000_000
    found = largest_plan(height, width, margin, cost, budget)
    fitting = [t for t in range(OUTPUT_STRIDE, 1400, OUTPUT_STRIDE) if cost(TilePlan(height, width, t, margin)) <= budget]
    assert found.tile == max(fitting) and not found.whole
    assert largest_plan(height, width, margin, cost, 10 * budget).whole
    assert largest_plan(height, width, margin, cost, 1000) is None


def test_a_budget_below_one_tile_is_an_error_naming_the_budget():
    predictor = Predictor(scoring_model(), PAPER_BGR, precision="fp32", max_memory=parse_bytes("20MiB"))
    with pytest.raises(FcnsegError, match="--max-memory"):
        predictor.plan(4000, 6000)

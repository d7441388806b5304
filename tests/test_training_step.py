"""The one training step against a plain computation: accumulation, loss normalisation, clipping, divergence, callers."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.config import TrainConfig
from fcnseg.precision import resolve_execution
from fcnseg.training import loop
from fcnseg.training.loop import TrainingDiverged, train_step

CPU = resolve_execution("cpu", "fp32", "contiguous", purpose="training")  # the plan the step runs on


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class PixelScorer(nn.Module):
    """A 1x1 convolution: logits [N, C, H, W] from images [N, 3, H, W]; enough to check a step's arithmetic."""

    def __init__(self, classes=4):
        super().__init__()
        torch.manual_seed(0)
        self.score = nn.Conv2d(3, classes, 1)

    def forward(self, x):
        return self.score(x)


def batches(n_batches=2, batch=2, size=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        images = torch.randn(batch, 3, size, size, generator=g)
        masks = torch.randint(0, 4, (batch, size, size), generator=g)
        masks[0, 0, : 2 + len(out)] = 255  # a different number of labelled pixels in each batch
        out.append((images, masks))
    return out


def sgd(model, lr=1.0):
    return torch.optim.SGD(model.parameters(), lr=lr)


def no_scaler():
    return torch.amp.GradScaler("cpu", enabled=False)


def reference_gradient(model, items, normalize=True):
    """Gradient of the passes' average loss, each pass's cross-entropy the mean (or sum) over its labelled pixels."""
    clone = PixelScorer()
    clone.load_state_dict(model.state_dict())
    reduction = "mean" if normalize else "sum"
    loss = sum(F.cross_entropy(clone(images), masks, ignore_index=255, reduction=reduction) for images, masks in items)
    loss = loss / len(items)
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in clone.named_parameters()}


@pytest.mark.parametrize("normalize", [True, False], ids=["normalised", "summed"])
def test_accumulated_passes_average_their_losses_and_gradients(normalize):
    model, items = PixelScorer(), batches()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    expected_loss, grads = reference_gradient(model, items, normalize)
    config = TrainConfig(lr=0.5, iter_size=2, normalize_loss=normalize, lr_policy="fixed")
    step = train_step(model, sgd(model), no_scaler(), iter(items), config, 0, CPU)
    assert step.loss == pytest.approx(expected_loss, rel=1e-6) and step.lr == 0.5
    for name, p in model.named_parameters():
        torch.testing.assert_close(before[name] - p.detach(), 0.5 * grads[name], rtol=1e-5, atol=1e-7)


def test_the_schedule_sets_the_rate_of_the_update_it_is_given():
    model = PixelScorer()
    config = TrainConfig(lr=0.1, lr_policy="step", lr_step=10, lr_gamma=0.5, iter_size=1)
    optimizer = sgd(model)
    step = train_step(model, optimizer, no_scaler(), itertools.cycle(batches(1)), config, 25, CPU)
    assert step.lr == pytest.approx(0.1 * 0.5**2) and optimizer.param_groups[0]["lr"] == pytest.approx(0.025)


def test_gradient_clipping_bounds_the_update():
    model = PixelScorer()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    config = TrainConfig(lr=1.0, iter_size=1, grad_clip=1e-3, normalize_loss=False)
    train_step(model, sgd(model), no_scaler(), iter(batches(1)), config, 0, CPU)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (before - after).norm().item() == pytest.approx(1e-3, rel=1e-3)


def test_a_non_finite_loss_raises_before_the_optimiser_steps():
    model = PixelScorer()
    items = batches(1)
    items[0][0][1, 0, 4, 4] = math.inf  # a labelled pixel
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with pytest.raises(TrainingDiverged, match=r"became nan at iteration 8 \(lr 0\.1\)") as caught:
        train_step(model, sgd(model), no_scaler(), iter(items), TrainConfig(lr=0.1, iter_size=1), 7, CPU)
    assert caught.value.iteration == 8 and math.isnan(caught.value.loss)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name]), name


def test_staged_training_takes_the_shared_step(monkeypatch):
    from fcnseg.ideas.upsampling import train_staged

    calls = []
    real = loop.train_step

    def counting(*args, **kwargs):
        calls.append(args[5])  # the iteration
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", counting)
    trained = train_staged(budget_seconds=600.0, max_steps=2, progress=False)
    assert calls == [0, 1] * 3  # two updates per stage, 32s then 16s then 8s
    assert trained.steps == {"fcn32s": 2, "fcn16s": 2, "fcn8s": 2}
    assert all(math.isfinite(v) for v in trained.final_loss.values())


def test_a_channels_last_step_trains_as_the_contiguous_one(fake_cpu):
    # The NHWC layout changes kernels, not the arithmetic: the same loss and the same weights after the step.
    fake_cpu("avx512")  # where "auto" trains fp32 in channels_last
    items = batches()
    results = []
    for setting in ("contiguous", "auto"):
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
        torch.manual_seed(3)
        model[0].reset_parameters()
        model[3].reset_parameters()
        config = TrainConfig(lr=0.1, iter_size=2, lr_policy="fixed", layout=setting)
        plan = resolve_execution("cpu", "fp32", config.layout, purpose="training")
        assert plan.channels_last is (setting == "auto")
        if plan.channels_last:
            model.to(memory_format=torch.channels_last)
        step = train_step(model, sgd(model, 0.1), no_scaler(), iter(items), config, 0, plan)
        results.append((step.loss, torch.cat([p.detach().flatten() for p in model.parameters()])))
    (loss_plain, weights_plain), (loss_nhwc, weights_nhwc) = results
    assert loss_nhwc == pytest.approx(loss_plain, rel=1e-5)
    torch.testing.assert_close(weights_nhwc, weights_plain, rtol=1e-4, atol=1e-5)

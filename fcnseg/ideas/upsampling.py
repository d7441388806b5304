"""Coarse scores, bilinear upsampling and the FCN-32s/16s/8s outputs on one image (the paper's figure 4 view).

The models come from checkpoints, or are trained here for a short time budget on the built-in
synthetic data, staged as in the paper: FCN-32s, then FCN-16s from it, then FCN-8s from that.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from fcnseg.config import ModelConfig, TrainConfig
from fcnseg.data.synthetic import SyntheticDataset
from fcnseg.models import FCN, build_model
from fcnseg.models.surgery import transplant
from fcnseg.precision import resolve_execution
from fcnseg.training import loop
from fcnseg.training.optim import build_optimizer

log = logging.getLogger(__name__)

STAGES = ("fcn32s", "fcn16s", "fcn8s")
STAGE_SHARE = {"fcn32s": 0.5, "fcn16s": 0.25, "fcn8s": 0.25}  # of the training budget
TRAIN_SIDE = 96  # pixels: small synthetic images keep a step well under a second on two cores
TRAIN_IMAGES = 48
BATCH_SIZE = 4
LEARNING_RATE = 1e-3


@dataclass
class TrainedModels:
    models: dict[str, FCN]  # arch -> model, eval mode
    class_names: list[str]
    normalization: object
    source: str  # "checkpoint" or "trained here"
    steps: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    final_loss: dict[str, float] = field(default_factory=dict)


def train_staged(budget_seconds: float = 45.0, seed: int = 0, max_steps: int = 400, progress: bool = True) -> TrainedModels:
    """Train small-backbone FCN-32s, then FCN-16s and FCN-8s initialised from the coarser net, on synthetic shapes.

    Each stage gets a share of ``budget_seconds`` (half, a quarter, a quarter) and at most ``max_steps``
    updates of :func:`fcnseg.training.loop.train_step`, the step ``fcnseg train`` takes.
    # Deviation: AdamW at 1e-3 without weight decay (Adam) instead of the paper's SGD, so that a few
    # dozen steps show something.
    """
    torch.manual_seed(seed)
    dataset = SyntheticDataset("train", TRAIN_IMAGES, seed=seed, size=(TRAIN_SIDE, TRAIN_SIDE))
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([x for x, _ in items])
    masks = torch.stack([m for _, m in items])
    batches = _random_batches(images, masks, torch.Generator().manual_seed(seed))
    recipe = TrainConfig(optimizer="adamw", lr=LEARNING_RATE, weight_decay=0.0, bias_lr_mult=1.0, lr_policy="fixed",
                         batch_size=BATCH_SIZE, iter_size=1, max_iter=max_steps, layout="contiguous")
    # bf16 where the CPU has it natively; emulated bf16 would crawl
    plan = resolve_execution("cpu", "auto", recipe.layout, purpose="training")
    models: dict[str, FCN] = {}
    result = TrainedModels(models, dataset.class_names, dataset.normalization, "trained here")
    previous = None
    for arch in STAGES:
        model = build_model(ModelConfig(arch=arch, backbone="small", num_classes=dataset.num_classes, dropout=0.0))
        if previous is not None:
            transplant(model, previous.state_dict())  # the paper's staged training
        optimizer = build_optimizer(model, recipe)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        start, steps, loss = time.perf_counter(), 0, float("nan")
        budget = budget_seconds * STAGE_SHARE[arch]
        bar = tqdm(desc=f"training {arch} ({budget:.0f} s)", unit="step", disable=not progress, leave=False)
        while steps < max_steps and time.perf_counter() - start < budget:
            loss = loop.train_step(model, optimizer, scaler, batches, recipe, steps, plan).loss
            steps += 1
            bar.update()
            bar.set_postfix(loss=f"{loss:.3f}")
        bar.close()
        result.steps[arch], result.seconds[arch], result.final_loss[arch] = steps, time.perf_counter() - start, loss
        log.info("trained %s for %d steps in %.1f s, last loss %.3f", arch, steps, result.seconds[arch], loss)
        models[arch] = model.eval()
        previous = model
    return result


def _random_batches(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator):
    """Endless batches of ``BATCH_SIZE`` items drawn with replacement."""
    while True:
        batch = torch.randint(len(images), (BATCH_SIZE,), generator=generator)
        yield images[batch], masks[batch]


def load_models(paths: list[str]) -> TrainedModels:
    """Models from our checkpoints (or pytorch-fcn / Caffe files), keyed by their arch."""
    from fcnseg.weights.checkpoint import load_model

    models: dict[str, FCN] = {}
    first = None
    for path in paths:
        loaded = load_model(path)
        first = first or loaded
        models[loaded.config.arch] = loaded.model.eval()
    return TrainedModels(models, list(first.class_names), first.normalization, "checkpoint")


@dataclass
class UpsamplingView:
    image: np.ndarray  # uint8 [H, W, 3]
    mask: np.ndarray | None  # int64 [H, W] ground truth, if known
    coarse: torch.Tensor  # [C, h, w] score_fr of the coarsest model
    bilinear: torch.Tensor  # [C, H, W] coarse scores through a bilinear-initialised 32x transposed conv, cropped
    outputs: dict[str, torch.Tensor]  # arch -> [C, H, W] logits
    class_names: list[str]
    focus_class: int  # the class whose scores are drawn as heat maps


def upsampling_view(trained: TrainedModels, image: np.ndarray, mask: np.ndarray | None = None) -> UpsamplingView:
    """Run every model on one RGB uint8 image ``[H, W, 3]``."""
    from fcnseg.models.upsample import upsampling_layer

    x = trained.normalization.image_to_tensor(image)[None]
    outputs = {}
    with torch.no_grad():
        for arch, model in trained.models.items():
            outputs[arch] = model(x)[0]
        coarse_model = trained.models.get("fcn32s") or next(iter(trained.models.values()))
        coarse = coarse_model.coarse_scores(x)
        # The same geometry as FCN-32s: 64-wide bilinear kernel at stride 32, then the derived crop.
        up = upsampling_layer(coarse.shape[1], 32)
        offset = build_model(ModelConfig(arch="fcn32s", backbone=coarse_model.config.backbone,
                                         num_classes=coarse.shape[1], pad=coarse_model.config.pad,
                                         padding=coarse_model.config.padding)).offsets["score"]
        h, w = image.shape[:2]
        bilinear = up(coarse)[0, :, offset : offset + h, offset : offset + w]
    labels = mask if mask is not None else outputs[list(outputs)[-1]].argmax(0).numpy()
    present = [c for c in np.unique(labels) if 0 < c < 255]
    focus = int(max(present, key=lambda c: (labels == c).sum())) if present else 0
    return UpsamplingView(image, mask, coarse[0], bilinear, outputs, trained.class_names, focus)

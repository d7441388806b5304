"""One parameter update: the step every training loop in fcnseg takes (`fcnseg train`, staged training, benchmarks)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from fcnseg import distributed as D
from fcnseg.config import TrainConfig
from fcnseg.errors import FcnsegError
from fcnseg.losses import Loss, build_loss, per_head_loss
from fcnseg.precision import ExecutionPlan, autocast
from fcnseg.training.optim import set_learning_rate


class TrainingDiverged(FcnsegError):
    """The loss became NaN or infinite; the message names the iteration (and, from a run, the last good checkpoint)."""

    def __init__(self, loss: float, iteration: int, lr: float, advice: str = "") -> None:
        self.loss, self.iteration, self.lr = loss, iteration, lr
        super().__init__(f"the training loss became {loss} at iteration {iteration} (lr {lr:g}){advice}")


@dataclass
class Step:
    loss: float  # the loss of this update over all processes and passes (what the run logs)
    lr: float  # the base learning rate it used (group multipliers apart)


def train_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    config: TrainConfig,
    iteration: int,
    plan: ExecutionPlan,
    loss_fn: Loss | None = None,
    progress: float | None = None,
) -> Step:
    """One update of ``net`` over ``config.iter_size`` batches ``(images [N,3,H,W], masks int64 [N,H,W])``.

    Sets the learning rate of update ``iteration`` (0-based; on a time budget, with ``progress`` the fraction
    of it spent: :func:`fcnseg.training.optim.set_learning_rate`),
    runs each pass on ``plan.device``, its forward under autocast in ``plan.autocast_dtype`` (None: float32),
    with the images in ``plan.layout`` (the trainer places the model to match; the plan comes from
    :func:`fcnseg.precision.resolve_execution` with ``purpose="training"``), takes ``loss_fn`` (default:
    the paper's pixel-wise cross-entropy over the labelled pixels, 255 ignored, normalised or summed as
    ``config.normalize_loss`` says; see :func:`fcnseg.losses.build_loss`), accumulates gradients
    (GradScaler for fp16), clips their norm to ``config.grad_clip`` (0: no clipping) and steps the optimiser.
    A net of several heads (a dict of logits, masks ``[N, K, H, W]``) trains
    on the sum of ``loss_fn`` over its heads, weighted by ``config.head_weights``
    (:func:`fcnseg.losses.per_head_loss`); a net that returns ``(logits, aux_logits)`` (a ResNet FCN with its
    auxiliary head in training, :class:`fcnseg.models.resnet.ResNetFCN`) on ``loss_fn(logits) + config.aux_weight
    * loss_fn(aux_logits)``, as torchvision's reference.

    The passes are averaged, as Caffe's ``iter_size`` does. Within a pass the gradient equals that of
    one process seeing the whole global batch: ``loss_fn`` returns this process's share of the global
    batch's loss (:mod:`fcnseg.losses`), multiplied here by the process count, which DDP's gradient
    averaging then cancels.

    Raises:
        TrainingDiverged: the loss is NaN or infinite (the optimiser has not stepped).
    """
    world = D.get_world_size()
    loss_fn = per_head_loss(loss_fn or build_loss("cross_entropy", normalize=config.normalize_loss), config.head_weights)
    lr = set_learning_rate(optimizer, config, iteration, progress)
    device, channels_last = plan.device, plan.channels_last
    optimizer.zero_grad(set_to_none=True)
    net.train()
    logged = torch.zeros((), dtype=torch.float64, device=device)
    for micro in range(config.iter_size):
        images, masks = next(batches)
        images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        last = micro == config.iter_size - 1
        # DDP reduces gradients on the last pass only; the earlier ones accumulate locally
        with nullcontext() if last or world == 1 else net.no_sync():
            with autocast(device, plan.autocast_dtype):
                logits = net(images)
            if isinstance(logits, tuple):  # (main, auxiliary) logits: a ResNet FCN trained with its auxiliary head
                loss = (loss_fn(logits[0], masks) + config.aux_weight * loss_fn(logits[1], masks)) / config.iter_size
            else:
                loss = loss_fn(logits, masks) / config.iter_size
            scaler.scale(loss * world).backward()
        logged += loss.detach().double()
    loss_value = D.all_reduce_sum(logged).item()
    if not math.isfinite(loss_value):
        raise TrainingDiverged(loss_value, iteration + 1, lr)
    if config.grad_clip:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return Step(loss=loss_value, lr=lr)

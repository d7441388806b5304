"""Pixel-wise losses with the ignore label: the paper's softmax cross-entropy, class weights, focal, Dice and Lovasz-softmax.

Every loss here returns this process's *share* of the loss of the global batch (all processes
together): shares add up to the global loss, and their gradients add up to its gradient. A single
process's share is the whole loss. Under DDP, which averages gradients over processes, the caller
backpropagates ``share * world_size`` (as the training step does). Counts and sums that a loss
normalises by are summed over processes with :func:`fcnseg.distributed.all_reduce_sum`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from fcnseg import distributed as D
from fcnseg.data.classes import IGNORE_INDEX
from fcnseg.data.items import split_targets
from fcnseg.config import LOSSES
from fcnseg.errors import ConfigError


Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits [N,C,H,W], mask [N,H,W]) -> share


def pixel_cross_entropy_sum(
    logits: torch.Tensor, mask: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed softmax cross-entropy over the labelled pixels, and how many there were.

    Args:
        logits: float ``[N, C, H, W]`` class scores (any dtype; the loss is computed in float32).
        mask: int64 ``[N, H, W]`` class indices; ``ignore_index`` pixels add nothing.
    Returns:
        ``(loss_sum, labelled)``: a float32 scalar with gradient, and an int64 scalar count.
    """
    loss_sum = F.cross_entropy(logits.float(), mask, ignore_index=ignore_index, reduction="sum")
    labelled = (mask != ignore_index).sum()
    return loss_sum, labelled


def segmentation_loss(
    logits: torch.Tensor, mask: torch.Tensor, normalize: bool = True, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """The paper's per-pixel multinomial logistic loss (section 3) on one batch, in one process.

    Args:
        logits: float ``[N, C, H, W]``.
        mask: int64 ``[N, H, W]``; ``ignore_index`` pixels are skipped.
        normalize: divide by the number of labelled pixels (the CVPR recipe); False sums over them
            (the reference "heavy learning" solvers, Caffe ``normalize: false``).
    Returns:
        Scalar float32 loss; 0 (with gradient) when no pixel is labelled.
    """
    loss_sum, labelled = pixel_cross_entropy_sum(logits, mask, ignore_index)
    if not normalize:
        return loss_sum
    return loss_sum / labelled.clamp(min=1).to(loss_sum.dtype)


# --- per-pixel losses: a sum over labelled pixels, normalised by the global (weighted) pixel count ---


def _labelled(logits: torch.Tensor, mask: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """log-probabilities ``[P, C]`` and labels ``[P]`` of the labelled pixels, in float32."""
    log_p = F.log_softmax(logits.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    labels = mask.reshape(-1)
    keep = labels != ignore_index
    return log_p[keep], labels[keep]


def _weights(class_weights: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
    if class_weights is None:
        return torch.ones(labels.shape, dtype=torch.float32, device=labels.device)
    return class_weights.to(device=labels.device, dtype=torch.float32)[labels]


def cross_entropy(
    logits: torch.Tensor,
    mask: torch.Tensor,
    *,
    class_weights: torch.Tensor | None = None,
    normalize: bool = True,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Softmax cross-entropy ``-w[y] log p_y`` summed over labelled pixels, divided by the global ``sum w[y]``.

    Without class weights and with ``normalize`` this is the paper's loss averaged over all labelled
    pixels of all processes; ``normalize=False`` leaves the sum (Caffe's ``normalize: false``).
    """
    weight = None if class_weights is None else class_weights.to(device=logits.device, dtype=torch.float32)
    total = F.cross_entropy(logits.float(), mask, weight=weight, ignore_index=ignore_index, reduction="sum")
    if not normalize:
        return total
    labelled = mask[mask != ignore_index]
    count = labelled.numel() if weight is None else weight[labelled].sum()
    # float64, as the sum over processes of many pixel counts needs
    denominator = D.all_reduce_sum(torch.as_tensor(count, dtype=torch.float64, device=logits.device).detach())
    return total / denominator.clamp(min=1e-12 if weight is not None else 1)


def focal(
    logits: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 2.0,
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): ``-w[y] (1 - p_y)^gamma log p_y``, normalised as :func:`cross_entropy`.

    ``gamma = 0`` is the weighted cross-entropy; larger ``gamma`` down-weights pixels the net already
    gets right, so the many easy background pixels stop dominating the gradient.
    """
    log_p, labels = _labelled(logits, mask, ignore_index)
    w = _weights(class_weights, labels)
    log_p_true = log_p.gather(1, labels[:, None])[:, 0]
    total = -(w * (1 - log_p_true.exp()).clamp(min=0).pow(gamma) * log_p_true).sum()
    return total / D.all_reduce_sum(w.sum().detach().double()).clamp(min=1e-12).to(total.dtype)


# --- set losses: computed from statistics of the whole global batch ----------------------------------


def _global(local: torch.Tensor) -> torch.Tensor:
    """``local`` summed over processes, with the gradient of this process's own term only.

    The value is the global sum; the other processes' terms enter as constants, so that each
    process backpropagates its part of the global statistic (see :func:`_share`).
    """
    if D.get_world_size() == 1:
        return local
    total = D.all_reduce_sum(local.detach().clone())
    return local + (total - local.detach())


def _share(global_loss: torch.Tensor) -> torch.Tensor:
    """This process's share of a loss computed from global statistics: value ``L / world``, gradient of L
    through this process's own terms (their sum over processes is the gradient of L)."""
    world = D.get_world_size()
    if world == 1:
        return global_loss
    return global_loss - global_loss.detach() * (world - 1) / world


def dice(
    logits: torch.Tensor, mask: torch.Tensor, *, smooth: float = 1.0, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Soft Dice loss: ``1 - mean_c (2 sum p_c y_c + s) / (sum p_c + sum y_c + s)`` over the global batch.

    Sums run over labelled pixels of every process; the mean over the classes present in the ground
    truth of the global batch (a class absent from it has no overlap to measure).
    """
    log_p, labels = _labelled(logits, mask, ignore_index)
    probs = log_p.exp()  # [P, C]
    onehot = F.one_hot(labels, logits.shape[1]).to(probs.dtype)
    intersection = _global((probs * onehot).sum(0))
    predicted = _global(probs.sum(0))
    truth = _global(onehot.sum(0))
    score = (2 * intersection + smooth) / (predicted + truth + smooth)  # [C]
    present = truth.detach() > 0
    if not present.any():
        return _share(logits.sum() * 0.0)
    return _share(1 - score[present].mean())


def lovasz_grad(sorted_truth: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss at errors sorted in decreasing order.

    ``sorted_truth`` float ``[P]`` (1 where the pixel belongs to the class) in the order of the sorted errors.
    """
    total = sorted_truth.sum()
    intersection = total - sorted_truth.cumsum(0)
    union = total + (1 - sorted_truth).cumsum(0)
    jaccard = 1 - intersection / union
    if sorted_truth.numel() > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
    return jaccard


def _lovasz_image(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lovasz-softmax of one image's labelled pixels ``probs [P, C]``, ``labels [P]``: mean over present classes."""
    losses = []
    for c in labels.unique():
        truth = (labels == c).to(probs.dtype)
        errors = (truth - probs[:, c]).abs()
        errors_sorted, order = errors.sort(descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(truth[order])))
    return torch.stack(losses).mean()


def lovasz(logits: torch.Tensor, mask: torch.Tensor, *, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Lovasz-softmax loss (Berman et al. 2018), per image: a convex surrogate of ``1 - IU`` for each class.

    Each image's loss is the mean over the classes present in its ground truth; the batch loss is the
    mean over the images with labelled pixels of all processes (per-image, so that it sums across
    processes like the per-pixel losses).
    """
    probs_all = F.softmax(logits.float(), dim=1)
    total = logits.sum() * 0.0
    images = 0
    for probs, labels in zip(probs_all, mask):
        probs = probs.permute(1, 2, 0).reshape(-1, logits.shape[1])
        labels = labels.reshape(-1)
        keep = labels != ignore_index
        if keep.any():
            total = total + _lovasz_image(probs[keep], labels[keep])
            images += 1
    count = D.all_reduce_sum(torch.tensor(float(images), dtype=torch.float64, device=logits.device))
    return total / count.clamp(min=1).to(total.dtype)


# --- class weights and the loss a run trains with ------------------------------------------------------


def median_frequency_weights(class_pixels: Sequence[int], image_pixels: Sequence[int] | None = None) -> torch.Tensor:
    """Median frequency balancing (Eigen & Fergus 2015): ``w_c = median(freq) / freq_c``.

    ``freq_c`` is class c's pixels divided by the pixels of the images in which c appears
    (``image_pixels[c]``; without it, by all labelled pixels). Classes that never occur get weight 0
    (they add nothing to the loss either way); the median is taken over the classes that occur.

    Args:
        class_pixels: int ``[C]`` labelled pixels of each class over the training set.
        image_pixels: int ``[C]`` labelled pixels of the images that contain each class, or None.
    Returns:
        float32 ``[C]``.
    """
    pixels = torch.as_tensor(list(class_pixels), dtype=torch.float64)
    if image_pixels is None:
        denominator = torch.full_like(pixels, pixels.sum().item())
    else:
        denominator = torch.as_tensor(list(image_pixels), dtype=torch.float64)
    present = (pixels > 0) & (denominator > 0)
    weights = torch.zeros_like(pixels)
    if present.any():
        freq = pixels[present] / denominator[present]
        weights[present] = freq.median() / freq
    return weights.float()


def build_loss(
    kind: str = "cross_entropy",
    *,
    class_weights: torch.Tensor | None = None,
    normalize: bool = True,
    focal_gamma: float = 2.0,
    ignore_index: int = IGNORE_INDEX,
) -> Loss:
    """The loss a run trains with: one of :data:`LOSSES`, or two joined by ``+`` (their sum), e.g.
    ``"cross_entropy+lovasz"``. Class weights apply to the per-pixel terms (cross-entropy, focal)."""
    parts = kind.split("+")
    unknown = [p for p in parts if p not in LOSSES]
    if unknown or not parts:
        raise ConfigError(f"loss {kind!r}: {', '.join(map(repr, unknown))} not one of {', '.join(LOSSES)} (join two with '+')")
    terms: list[Loss] = []
    for part in parts:
        if part == "cross_entropy":
            terms.append(lambda lo, m: cross_entropy(lo, m, class_weights=class_weights, normalize=normalize,
                                                     ignore_index=ignore_index))
        elif part == "focal":
            terms.append(lambda lo, m: focal(lo, m, gamma=focal_gamma, class_weights=class_weights,
                                             ignore_index=ignore_index))
        elif part == "dice":
            terms.append(lambda lo, m: dice(lo, m, ignore_index=ignore_index))
        else:
            terms.append(lambda lo, m: lovasz(lo, m, ignore_index=ignore_index))
    if len(terms) == 1:
        return terms[0]
    return lambda logits, mask: sum(term(logits, mask) for term in terms)


def per_head_loss(loss: Loss, weights: Sequence[float] = ()) -> Loss:
    """``loss`` over every head of a net with several: ``sum_k weights[k] * loss(logits[k], mask[:, k])``.

    Args:
        loss: a loss of one head, ``(logits [N,C,H,W], mask [N,H,W]) -> share`` (e.g. :func:`build_loss`'s).
        weights: one per head, in head order; empty: 1 each (the reference siftflow-fcn* nets: two
            SoftmaxWithLoss layers of loss weight 1, each normalised, or not, on its own).
    Returns:
        a loss that takes ``(logits, mask)``: a tensor and ``[N, H, W]`` go to ``loss`` unchanged; a dict
        ``{head: [N, C_k, H, W]}`` (in head order, as multi-head nets return it) and ``[N, K, H, W]`` give
        the weighted sum of each head's loss on its label map.
    Raises:
        ConfigError: (when called) ``weights`` is not empty and not one per head.
    """
    weights = list(weights)

    def combined(logits, mask: torch.Tensor) -> torch.Tensor:
        if not isinstance(logits, Mapping):
            return loss(logits, mask)
        if weights and len(weights) != len(logits):
            raise ConfigError(f"train.head_weights has {len(weights)} weights for the {len(logits)} heads {list(logits)}")
        targets = split_targets(mask, len(logits))
        return sum(w * loss(x, t) for w, x, t in zip(weights or [1.0] * len(logits), logits.values(), targets))

    return combined

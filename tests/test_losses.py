"""The pixel-wise loss against a plain per-pixel computation, with the ignore label."""

import math

import pytest
import torch

from fcnseg.losses import pixel_cross_entropy_sum, segmentation_loss


def per_pixel_loop(logits, mask, ignore=255):
    """Independent reference: -log softmax at the true class, pixel by pixel."""
    total, count = 0.0, 0
    n, c, h, w = logits.shape
    for i in range(n):
        for y in range(h):
            for x in range(w):
                label = int(mask[i, y, x])
                if label == ignore:
                    continue
                scores = [float(logits[i, k, y, x]) for k in range(c)]
                top = max(scores)
                log_z = top + math.log(sum(math.exp(s - top) for s in scores))
                total += log_z - scores[label]
                count += 1
    return total, count


def sample(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 5, 6, generator=g) * 3
    mask = torch.randint(0, 4, (2, 5, 6), generator=g)
    mask[0, 0, :] = 255
    mask[1, 2:4, 1:3] = 255
    return logits, mask


def test_normalised_loss_is_the_mean_over_labelled_pixels():
    logits, mask = sample()
    total, count = per_pixel_loop(logits, mask)
    assert segmentation_loss(logits, mask, normalize=True).item() == pytest.approx(total / count, rel=1e-5)


def test_unnormalised_loss_is_the_sum_over_labelled_pixels():
    logits, mask = sample(1)
    total, count = per_pixel_loop(logits, mask)
    loss_sum, labelled = pixel_cross_entropy_sum(logits, mask)
    assert int(labelled) == count
    assert loss_sum.item() == pytest.approx(total, rel=1e-5)
    assert segmentation_loss(logits, mask, normalize=False).item() == pytest.approx(total, rel=1e-5)


def test_ignored_pixels_get_no_gradient():
    logits, mask = sample(2)
    logits.requires_grad_(True)
    segmentation_loss(logits, mask).backward()
    ignored = (mask == 255).unsqueeze(1).expand_as(logits)
    assert torch.all(logits.grad[ignored] == 0)
    assert torch.any(logits.grad[~ignored] != 0)


def test_all_ignored_batch_gives_zero_loss_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    mask = torch.full((1, 4, 4), 255)
    loss = segmentation_loss(logits, mask)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_bf16_logits_are_scored_in_float32():
    logits, mask = sample(3)
    full = segmentation_loss(logits, mask)
    half = segmentation_loss(logits.bfloat16(), mask)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=2e-2)

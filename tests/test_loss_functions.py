"""Each loss against a plain per-pixel (or per-set) computation with ignore pixels, and its DDP share on two processes."""

import math

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from fcnseg.errors import ConfigError
from fcnseg.losses import build_loss, cross_entropy, dice, focal, lovasz, median_frequency_weights

IGNORE = 255


def sample(seed=0, n=2, c=4, h=5, w=6, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g) * scale
    mask = torch.randint(0, c, (n, h, w), generator=g)
    mask[0, 0, :] = IGNORE
    mask[-1, 2:4, 1:3] = IGNORE
    return logits, mask


def pixels(logits, mask):
    """(softmax probabilities, label) of every labelled pixel, as plain Python lists."""
    out = []
    n, c, h, w = logits.shape
    for i in range(n):
        for y in range(h):
            for x in range(w):
                label = int(mask[i, y, x])
                if label == IGNORE:
                    continue
                scores = [float(logits[i, k, y, x]) for k in range(c)]
                top = max(scores)
                z = sum(math.exp(s - top) for s in scores)
                out.append(([math.exp(s - top) / z for s in scores], label))
    return out


def test_weighted_cross_entropy_is_the_weighted_mean_over_labelled_pixels():
    logits, mask = sample()
    weights = torch.tensor([0.5, 1.0, 2.0, 4.0])
    rows = pixels(logits, mask)
    expected = sum(-weights[y].item() * math.log(p[y]) for p, y in rows) / sum(weights[y].item() for _, y in rows)
    assert cross_entropy(logits, mask, class_weights=weights).item() == pytest.approx(expected, rel=1e-5)
    plain = sum(-math.log(p[y]) for p, y in rows) / len(rows)
    assert cross_entropy(logits, mask).item() == pytest.approx(plain, rel=1e-5)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_focal_loss_down_weights_confident_pixels_as_its_definition_says(gamma):
    logits, mask = sample(1)
    weights = torch.tensor([1.0, 3.0, 1.0, 0.5])
    rows = pixels(logits, mask)
    expected = sum(-weights[y].item() * (1 - p[y]) ** gamma * math.log(p[y]) for p, y in rows)
    expected /= sum(weights[y].item() for _, y in rows)
    assert focal(logits, mask, gamma=gamma, class_weights=weights).item() == pytest.approx(expected, rel=1e-5)


def test_dice_loss_is_one_minus_the_mean_soft_dice_of_the_classes_present():
    logits, mask = sample(2)
    mask[mask == 3] = 0  # class 3 absent from the ground truth: left out of the mean
    rows = pixels(logits, mask)
    scores = []
    for c in range(3):
        inter = sum(p[c] * (y == c) for p, y in rows)
        total = sum(p[c] for p, _ in rows) + sum(y == c for _, y in rows)
        scores.append((2 * inter + 1.0) / (total + 1.0))
    assert dice(logits, mask).item() == pytest.approx(1 - sum(scores) / 3, rel=1e-5)


def jaccard_loss(prediction: set, truth: set) -> float:
    union = prediction | truth
    return 1 - len(prediction & truth) / len(union) if union else 0.0


def lovasz_extension(errors: list[float], truth: set) -> float:
    """The Lovasz extension of the Jaccard loss at ``errors``, from its definition (sorted partial sets)."""
    order = sorted(range(len(errors)), key=lambda i: -errors[i])
    value, previous = 0.0, 0.0
    chosen: set = set()
    for i in order:
        chosen.add(i)
        # the "mispredicted" set after taking the i largest errors: truth pixels among them are missed,
        # others are false positives; the Jaccard loss of that set against the truth
        predicted = (truth - chosen) | (chosen - truth)
        now = 1 - len(truth - chosen) / len(truth | predicted) if (truth | predicted) else 0.0
        value += errors[i] * (now - previous)
        previous = now
    return value


def test_lovasz_equals_its_definition_per_image_and_one_minus_iu_for_hard_predictions():
    logits, mask = sample(3, n=2, c=3, h=4, w=5)
    per_image = []
    for i in range(2):
        rows = pixels(logits[i : i + 1], mask[i : i + 1])
        losses = []
        for c in sorted({y for _, y in rows}):
            truth = {k for k, (_, y) in enumerate(rows) if y == c}
            errors = [abs((y == c) - p[c]) for p, y in rows]
            losses.append(lovasz_extension(errors, truth))
        per_image.append(sum(losses) / len(losses))
    assert lovasz(logits, mask).item() == pytest.approx(sum(per_image) / 2, rel=1e-4)

    hard = logits * 1000  # one-hot probabilities: the extension meets the set function, 1 - IU per class
    prediction = hard.argmax(1)
    ious = []
    labelled = mask != IGNORE
    for c in mask[labelled].unique().tolist():
        truth, predicted = (mask == c) & labelled, (prediction == c) & labelled
        ious.append(1 - (truth & predicted).sum().item() / (truth | predicted).sum().item())
    one = lovasz(hard[:1], mask[:1]).item()
    truth0 = mask[0][labelled[0]]
    pred0 = prediction[0][labelled[0]]
    expected0 = np.mean([jaccard_loss(set(np.flatnonzero(pred0 == c)), set(np.flatnonzero(truth0 == c)))
                         for c in truth0.unique().tolist()])
    assert one == pytest.approx(expected0, abs=1e-4)


def test_every_loss_ignores_the_ignore_label_whatever_the_scores_there():
    logits, mask = sample(4)
    changed = logits.clone()
    changed[(mask == IGNORE)[:, None].expand_as(logits)] = 50.0
    for name in ("cross_entropy", "focal", "dice", "lovasz", "cross_entropy+lovasz"):
        loss = build_loss(name)
        assert loss(changed, mask).item() == pytest.approx(loss(logits, mask).item(), rel=1e-6), name


def test_median_frequency_weights_from_hand_counts():
    # class pixels and the pixels of the images each class appears in (hand-counted scan)
    weights = median_frequency_weights([900, 60, 40, 0], [1000, 200, 400, 0])
    freq = np.array([0.9, 0.3, 0.1])
    assert weights.tolist()[:3] == pytest.approx((np.median(freq) / freq).tolist())
    assert weights[3] == 0
    without_images = median_frequency_weights([900, 60, 40])
    assert without_images.tolist() == pytest.approx((np.median([0.9, 0.06, 0.04]) / np.array([0.9, 0.06, 0.04])).tolist())


def test_unknown_loss_names_the_choices():
    with pytest.raises(ConfigError, match="'hinge' not one of cross_entropy, focal, dice, lovasz"):
        build_loss("cross_entropy+hinge")


def _two_process_shares(rank, init, logits, mask, names, out):
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        half = slice(rank * 2, rank * 2 + 2)
        for name in names:
            local = logits[half].clone().requires_grad_(True)
            share = build_loss(name)(local, mask[half])
            share.backward()
            out[f"{name}/{rank}/value"] = share.item()
            out[f"{name}/{rank}/grad"] = local.grad.clone()
    finally:
        torch.distributed.destroy_process_group()


def test_shares_on_two_processes_add_up_to_the_loss_and_gradient_of_the_whole_batch(tmp_path):
    logits, mask = sample(5, n=4)
    names = ["cross_entropy", "focal", "dice", "lovasz"]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_two_process_shares, args=(f"file://{tmp_path / 'rendezvous'}", logits, mask, names, out), nprocs=2)
        out = dict(out)
    for name in names:
        whole = logits.clone().requires_grad_(True)
        loss = build_loss(name)(whole, mask)
        loss.backward()
        assert out[f"{name}/0/value"] + out[f"{name}/1/value"] == pytest.approx(loss.item(), rel=1e-5), name
        grad = torch.cat([out[f"{name}/0/grad"], out[f"{name}/1/grad"]])
        assert torch.allclose(grad, whole.grad, atol=1e-6, rtol=1e-4), name

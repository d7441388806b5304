"""The paper's four segmentation metrics (section 5) from an int64 confusion matrix that sums across processes."""

from __future__ import annotations

import math

import numpy as np
import torch

from fcnseg.data.classes import IGNORE_INDEX, class_pixel_counts  # noqa: F401 - the one counter, re-exported




class ConfusionMatrix:
    """Accumulated pixel counts ``counts[target, prediction]``, int64 ``[num_classes, num_classes]``.

    Pixels whose target is the ignore label (or outside ``0..num_classes-1``) are not counted, as in
    the reference ``score.py`` (fcn.berkeleyvision.org). Counts, not averages, are what add up across
    batches, data halves and processes (``+``, :meth:`merge`, :meth:`all_reduce`).

    Args:
        num_classes: number of classes ``n``.
        device: where the counts live; updates on other devices are counted there and moved.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device: torch.device | str = "cpu") -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, found {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Count one batch.

        Args:
            prediction: integer class indices (e.g. ``logits.argmax(1)``), any shape, e.g. ``[N, H, W]``.
            target: integer labels of the same shape; ``ignore_index`` pixels are skipped.
        """
        if prediction.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(prediction.shape)} differs from target shape {tuple(target.shape)}")
        n = self.num_classes
        target = target.reshape(-1).long()
        prediction = prediction.reshape(-1).to(target.device).long()
        keep = (target >= 0) & (target < n) & (target != self.ignore_index)
        prediction, target = prediction[keep], target[keep]
        if prediction.numel() and (prediction.min() < 0 or prediction.max() >= n):
            raise ValueError(f"prediction holds class indices outside 0..{n - 1}")
        # hist = bincount(n * a + b): row = ground truth, column = prediction
        flat = torch.bincount(n * target + prediction, minlength=n * n)
        self.counts += flat.view(n, n).to(self.counts.device)

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add ``other``'s counts into this matrix (in place) and return it."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class counts into {self.num_classes}-class counts")
        self.counts += other.counts.to(self.counts.device)
        return self

    def __add__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        out = ConfusionMatrix(self.num_classes, self.ignore_index, self.counts.device)
        out.counts = self.counts.clone()
        return out.merge(other)

    def __iadd__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        return self.merge(other)

    def all_reduce(self) -> "ConfusionMatrix":
        """Sum the counts over all processes when ``torch.distributed`` is initialised (no-op otherwise)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.counts, op=dist.ReduceOp.SUM)
        return self

    def reset(self) -> None:
        self.counts.zero_()

    def compute(self) -> dict:
        """The paper's metrics (section 5), as the reference ``score.py`` computes them.

        With ``n_ij`` pixels of class i predicted as j, ``t_i = sum_j n_ij``:

        - ``pixel_accuracy`` = sum_i n_ii / sum_i t_i
        - ``mean_accuracy`` = mean over classes of n_ii / t_i
        - ``mean_iu`` = mean over classes of n_ii / (t_i + sum_j n_ji - n_ii)
        - ``frequency_weighted_iu`` = sum_i t_i IU_i / sum_i t_i

        A class whose ratio is 0/0 (absent from the ground truth for accuracy; absent from both
        ground truth and prediction for IU) is left out of the means (``nanmean``), and its
        per-class entry is ``None``.

        Returns:
            dict with the four metrics (floats; NaN if no pixel was counted), ``per_class_iu`` and
            ``per_class_accuracy`` (lists of float or None), ``pixels`` (pixels counted) and
            ``confusion`` (the counts as a list of lists).
        """
        hist = self.counts.detach().to("cpu", torch.float64)
        diag = hist.diag()
        gt = hist.sum(1)
        pred = hist.sum(0)
        total = hist.sum()
        with torch.no_grad():
            acc = (diag.sum() / total).item() if total > 0 else math.nan
            acc_cls = diag / gt  # NaN where the class is absent from the ground truth
            iu = diag / (gt + pred - diag)  # NaN where absent from both
            freq = gt / total if total > 0 else torch.zeros_like(gt)
            present = freq > 0
            fwavacc = (freq[present] * iu[present]).sum().item() if total > 0 else math.nan
        return {
            "pixel_accuracy": acc,
            "mean_accuracy": _nanmean(acc_cls),
            "mean_iu": _nanmean(iu),
            "frequency_weighted_iu": fwavacc,
            "per_class_iu": _list(iu),
            "per_class_accuracy": _list(acc_cls),
            "pixels": int(total.item()),
            "confusion": self.counts.cpu().tolist(),
        }


def most_confused(counts) -> dict | None:
    """The largest off-diagonal cell of a confusion matrix: the (ground truth -> prediction) mistake made most.

    Args:
        counts: int ``[n, n]`` array or tensor, ``counts[truth, prediction]``.
    Returns:
        ``{"truth": i, "prediction": j, "pixels": counts[i, j]}`` for the largest ``i != j`` cell (the
        lowest ``(i, j)`` among ties), or None when no pixel is wrong.
    """
    hist = np.array(counts.cpu().numpy() if isinstance(counts, torch.Tensor) else counts, dtype=np.int64)
    np.fill_diagonal(hist, 0)
    truth, prediction = np.unravel_index(int(np.argmax(hist)), hist.shape)
    pixels = int(hist[truth, prediction])
    return {"truth": int(truth), "prediction": int(prediction), "pixels": pixels} if pixels > 0 else None


def image_scores(matrix: "ConfusionMatrix") -> dict:
    """One image's scores from its own confusion counts, with the paper's definitions (:meth:`ConfusionMatrix.compute`).

    The per-image mean IU is the NaN-aware mean over the classes present in that image's ground
    truth or prediction (prediction counted on non-ignored pixels only): a class absent from both
    is 0/0 and left out, as over a whole data set. A class in the ground truth that is never
    predicted counts with IU 0, and so does a class predicted where the ground truth has none.

    Returns:
        dict with ``pixels`` (pixels scored), ``pixel_accuracy``, ``mean_accuracy``, ``mean_iu``
        (floats, NaN when every pixel is ignored) and ``most_confused`` (see :func:`most_confused`).
    """
    scores = matrix.compute()
    return {
        "pixels": scores["pixels"],
        **{key: scores[key] for key in ("pixel_accuracy", "mean_accuracy", "mean_iu")},
        "most_confused": most_confused(matrix.counts),
    }


def _nanmean(x: torch.Tensor) -> float:
    valid = ~torch.isnan(x)
    return x[valid].mean().item() if valid.any() else math.nan


def _list(x: torch.Tensor) -> list[float | None]:
    return [None if math.isnan(v) else v for v in x.tolist()]


COLLAPSE_FRACTION = 0.98  # a validation predicting one class for more of its pixels than this has collapsed


def collapse_warning(result: dict, class_names: list[str] | None = None, threshold: float = COLLAPSE_FRACTION) -> str | None:
    """A warning when the predictions of a validation are (almost) all one class, else None.

    ``result`` is :meth:`ConfusionMatrix.compute`'s dict (its ``confusion`` counts). The net has then
    learned the prior, not the classes: the warning names the class, its share of the predictions and
    of the ground truth, and the usual causes, so that a user knows where to look.
    """
    confusion = torch.as_tensor(result.get("confusion") or [[0]], dtype=torch.float64)
    predicted = confusion.sum(0)
    total = predicted.sum().item()
    if total <= 0 or confusion.shape[0] < 2:
        return None
    share, index = predicted.max(0)
    fraction = share.item() / total
    if fraction <= threshold:
        return None
    truth = confusion.sum(1)[index].item() / total
    name = class_names[int(index)] if class_names and int(index) < len(class_names) else f"class {int(index)}"
    return (
        f"the validation predicted '{name}' for {100 * fraction:.1f}% of its pixels (it is {100 * truth:.1f}% of the "
        f"ground truth): the net has collapsed to one class. Likely causes: class imbalance (try "
        f"train.class_weights: auto, or loss: focal / cross_entropy+lovasz), a learning rate too high or too low, "
        f"too few updates so far, labels that do not match the images (check-data, the class file), or a wrong "
        f"normalisation of the inputs"
    )


METRIC_LABELS = {
    "pixel_accuracy": "pixel acc.",
    "mean_accuracy": "mean acc.",
    "mean_iu": "mean IU",
    "frequency_weighted_iu": "f.w. IU",
}


def format_table(result: dict, class_names: list[str] | None = None) -> str:
    """A plain-text table: the four metrics in percent, then IU and accuracy per class ("-" when undefined).

    Args:
        result: the dict from :meth:`ConfusionMatrix.compute` (or one that contains its keys).
        class_names: one name per class; default ``class 0``, ``class 1``, ...
    """
    per_iu, per_acc = result["per_class_iu"], result["per_class_accuracy"]
    names = list(class_names) if class_names is not None else [f"class {i}" for i in range(len(per_iu))]
    width = max([len(n) for n in names] + [len(v) for v in METRIC_LABELS.values()] + [5])

    def pct(v: float | None) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"

    lines = [f"{label:<{width}}  {pct(result[key]):>7}" for key, label in METRIC_LABELS.items()]
    lines.append("")
    lines.append(f"{'class':<{width}}  {'IU':>7}  {'acc.':>7}")
    lines.append("-" * (width + 18))
    for name, iu, acc in zip(names, per_iu, per_acc):
        lines.append(f"{name:<{width}}  {pct(iu):>7}  {pct(acc):>7}")
    return "\n".join(lines)

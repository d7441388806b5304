"""Calibration: a temperature fitted on held-out pixels, and how well confidence matches accuracy (ECE, reliability).

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017) divides the
logits by one scalar ``T`` before the softmax: the argmax, hence every label map and metric, is unchanged,
while the probabilities (and the confidence maps of :mod:`fcnseg.inference.confidence`) become as sure as
the model is right. ``T`` minimises the pixel-wise negative log-likelihood on the validation split (LBFGS
on ``log T``), ignore-label pixels left out; it is stored in the model's contract
(:attr:`fcnseg.weights.handle.LoadedModel.temperature`, a checkpoint's ``temperature``, an ONNX file's
``fcnseg.temperature``). The expected calibration error bins pixels by their confidence (the largest
probability) and averages ``|accuracy - confidence|`` over the bins, weighted by their pixel counts.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fcnseg.data.classes import IGNORE_INDEX
from fcnseg.errors import DataError
from fcnseg.progress import progress_bar

log = logging.getLogger(__name__)

DEFAULT_BINS = 15  # equal-width confidence bins of the ECE and the reliability diagram (Guo et al. use 15)
DEFAULT_MAX_PIXELS = 2_000_000  # pixels sampled for the fit: 2M x 21 classes x 4 bytes = 168 MB of logits


class ReliabilityBins:
    """Counts for the reliability diagram and the ECE, accumulated over any number of pixels.

    Per equal-width bin of confidence in ``[0, 1]``: the number of pixels, the sum of their confidences
    and the number predicted right (float64, so that sums over millions of pixels stay exact enough).
    """

    def __init__(self, bins: int = DEFAULT_BINS):
        self.bins = int(bins)
        self.counts = np.zeros(self.bins, dtype=np.float64)
        self.confidence = np.zeros(self.bins, dtype=np.float64)
        self.correct = np.zeros(self.bins, dtype=np.float64)

    def update(self, confidence, correct) -> "ReliabilityBins":
        """Add pixels: ``confidence`` float ``[P]`` in ``[0, 1]`` and ``correct`` bool ``[P]`` (tensors or arrays)."""
        conf = torch.as_tensor(confidence).detach().reshape(-1).double().cpu()
        right = torch.as_tensor(correct).detach().reshape(-1).double().cpu()
        index = (conf * self.bins).long().clamp_(0, self.bins - 1)  # confidence 1 falls in the last bin
        self.counts += torch.bincount(index, minlength=self.bins).numpy()
        self.confidence += torch.bincount(index, weights=conf, minlength=self.bins).numpy()
        self.correct += torch.bincount(index, weights=right, minlength=self.bins).numpy()
        return self

    @property
    def pixels(self) -> int:
        return int(self.counts.sum())

    def ece(self) -> float:
        """Expected calibration error: ``sum_b n_b / N * |accuracy_b - confidence_b|`` (NaN without pixels)."""
        total = self.counts.sum()
        if total == 0:
            return float("nan")
        used = self.counts > 0
        gap = np.abs(self.correct[used] - self.confidence[used])  # n_b * |acc_b - conf_b|
        return float(gap.sum() / total)

    def rows(self) -> list[dict]:
        """One dict per bin: ``low``, ``high``, ``pixels``, ``confidence`` and ``accuracy`` (NaN for an empty bin)."""
        out = []
        for b in range(self.bins):
            n = self.counts[b]
            out.append({"low": b / self.bins, "high": (b + 1) / self.bins, "pixels": int(n),
                        "confidence": float(self.confidence[b] / n) if n else float("nan"),
                        "accuracy": float(self.correct[b] / n) if n else float("nan")})
        return out


def calibration_summary(uncalibrated: ReliabilityBins, calibrated: ReliabilityBins, temperature: float) -> dict:
    """What an evaluation reports: the temperature, each ECE and each reliability table (plain values, JSON-ready)."""
    return {"temperature": float(temperature), "bins": uncalibrated.bins, "pixels": uncalibrated.pixels,
            "ece_uncalibrated": uncalibrated.ece(), "ece_calibrated": calibrated.ece(),
            "reliability_uncalibrated": uncalibrated.rows(), "reliability_calibrated": calibrated.rows()}


def reliability_of_logits(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                          bins: ReliabilityBins | None = None, ignore_index: int = IGNORE_INDEX) -> ReliabilityBins:
    """Add pixels to ``bins`` (new ones if None): logits ``[C, ...]`` (classes first) and targets ``[...]``; the
    ignore label left out. Confidence is the largest probability of ``softmax(logits / temperature)``."""
    bins = bins if bins is not None else ReliabilityBins()
    flat = logits.float().reshape(logits.shape[0], -1)
    truth = targets.reshape(-1).to(flat.device)
    keep = truth != ignore_index
    probs = (flat[:, keep] / temperature).softmax(0)
    confidence, predicted = probs.max(0)
    return bins.update(confidence, predicted == truth[keep])


def expected_calibration_error(confidence, correct, bins: int = DEFAULT_BINS) -> float:
    """ECE of pixels: ``confidence`` float ``[P]`` and ``correct`` bool ``[P]``."""
    return ReliabilityBins(bins).update(confidence, correct).ece()


def nll(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0, ignore_index: int = IGNORE_INDEX) -> float:
    """Mean negative log-likelihood of ``softmax(logits / temperature)``: logits ``[P, C]``, targets ``[P]``."""
    return float(F.cross_entropy(logits.float() / temperature, targets, ignore_index=ignore_index))


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                    max_iter: int = 100) -> float:
    """The temperature that minimises the NLL of ``softmax(logits / T)``: LBFGS on ``log T`` (so ``T`` stays positive).

    Args:
        logits: float ``[P, C]`` held-out pixels' logits.
        targets: int64 ``[P]`` their labels; ``ignore_index`` pixels are left out.
    Returns:
        T > 0 (1 when there is no labelled pixel).
    """
    logits = logits.detach().float().clone()  # a plain tensor even when made under inference mode
    targets = targets.detach().long().clone()
    if not bool((targets != ignore_index).any()):
        return 1.0
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits * torch.exp(-log_t), targets, ignore_index=ignore_index)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    temperature = float(torch.exp(log_t.detach()))
    if not np.isfinite(temperature) or temperature <= 0:  # a degenerate set (every pixel right with any T)
        return 1.0
    return temperature


@dataclass
class CalibrationResult:
    """What :func:`calibrate` found.

    Attributes:
        temperature: the fitted temperature.
        previous: the model's temperature before (1 when uncalibrated).
        pixels: labelled pixels the fit used; images: images they came from.
        nll_before, nll_after: mean NLL at ``previous`` and at ``temperature``.
        ece_before, ece_after: expected calibration error at each.
    """

    temperature: float
    previous: float
    pixels: int
    images: int
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"temperature {self.temperature:.3f} (was {self.previous:.3f}) fitted on {self.pixels:,} pixels of "
                f"{self.images} images: NLL {self.nll_before:.4f} -> {self.nll_after:.4f}, "
                f"expected calibration error {100 * self.ece_before:.2f}% -> {100 * self.ece_after:.2f}%")


@torch.inference_mode()
def sample_logits(handle, dataset, *, max_pixels: int = DEFAULT_MAX_PIXELS, seed: int = 0, progress: bool = True,
                  limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Run ``handle`` over ``dataset`` and keep up to ``max_pixels`` labelled pixels, drawn evenly over the images.

    The data set is fed as the model expects (:func:`fcnseg.evaluation_data.fed_as`) and its labels read in the
    model's classes (:meth:`~fcnseg.weights.handle.LoadedModel.check_data`).

    Returns:
        (logits float32 ``[P, C]``, targets int64 ``[P]``, images used).
    Raises:
        DataError: the data set has no image.
    """
    from fcnseg.evaluation_data import fed_as

    mapping = handle.check_data(dataset)[handle.config.output_heads()[0][0]]
    dataset = fed_as(dataset, handle)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if count == 0:
        raise DataError("no image to calibrate on", path=str(getattr(dataset, "root", "the data set")))
    per_image = max(1, max_pixels // count)
    generator = torch.Generator().manual_seed(seed)
    if handle.plan is None:
        handle.prepare()
    was_training = handle.model.training if handle.model is not None else False
    if handle.model is not None:
        handle.model.eval()
    chunks, labels = [], []
    try:
        for index in progress_bar(range(count), desc="calibrate", unit="img", show=progress):
            image, mask = dataset[index]
            truth = mask if mask.ndim == 2 else mask[0]
            if not mapping.identity:
                truth = mapping.remap_mask(truth)
            logits = handle.forward(image[None])
            logits = logits[0] if not isinstance(logits, dict) else next(iter(logits.values()))[0]
            flat = logits.float().reshape(logits.shape[0], -1).cpu()  # [C, H*W]
            truth = truth.reshape(-1).cpu()
            where = torch.nonzero(truth != IGNORE_INDEX).squeeze(1)
            if len(where) > per_image:
                where = where[torch.randperm(len(where), generator=generator)[:per_image]]
            chunks.append(flat[:, where].T.contiguous())
            labels.append(truth[where])
    finally:
        if handle.model is not None:
            handle.model.train(was_training)
    return torch.cat(chunks), torch.cat(labels).long(), count


def calibrate(handle, dataset, *, max_pixels: int = DEFAULT_MAX_PIXELS, seed: int = 0, bins: int = DEFAULT_BINS,
              progress: bool = True, limit: int | None = None) -> CalibrationResult:
    """Fit the temperature of ``handle`` on ``dataset`` (its validation split) and set it on the handle.

    Returns:
        :class:`CalibrationResult`; ``handle.temperature`` is the fitted value afterwards (save the handle,
        or export it, to keep it: ``handle.save(path)``).
    """
    logits, targets, images = sample_logits(handle, dataset, max_pixels=max_pixels, seed=seed, progress=progress,
                                            limit=limit)
    previous = handle.temperature
    temperature = fit_temperature(logits, targets)
    before = reliability_of_logits(logits.T, targets, previous, ReliabilityBins(bins))
    after = reliability_of_logits(logits.T, targets, temperature, ReliabilityBins(bins))
    result = CalibrationResult(temperature, previous, int(len(targets)), images, nll(logits, targets, previous),
                               nll(logits, targets, temperature), before.ece(), after.ece())
    handle.temperature = temperature
    log.info("%s", result.summary())
    return result


__all__ = [
    "CalibrationResult",
    "DEFAULT_BINS",
    "ReliabilityBins",
    "calibrate",
    "calibration_summary",
    "expected_calibration_error",
    "fit_temperature",
    "nll",
    "reliability_of_logits",
    "sample_logits",
]

"""Scoring every head of a data set as the paper does (section 5): one ConfusionMatrix per head, the four metrics each,
and the leave-out of classes that the SIFT Flow reference asks for.

SIFT Flow's test set has no pixel of three semantic classes (cow, desert, moon). The mean accuracy skips
them anyway (0/0), but the mean IU would count a class that is predicted somewhere and never true as
IU 0; the reference README excludes them ("score manually from the histogram"), and so does
``compute(leave_out_absent=True)`` or ``compute(leave_out={"semantic": SIFTFLOW_ABSENT_FROM_TEST})``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch

from fcnseg.data.classes import IGNORE_INDEX
from fcnseg.data.items import Head, split_targets
from fcnseg.errors import ConfigError
from fcnseg.metrics import ConfusionMatrix, format_table


def absent_classes(result: dict) -> list[int]:
    """Classes without a ground-truth pixel in the counts behind ``result`` (a :meth:`ConfusionMatrix.compute` dict)."""
    return [i for i, row in enumerate(result["confusion"]) if sum(row) == 0]


def leave_classes_out(result: dict, classes: Iterable[int]) -> dict:
    """``result`` with the class means taken without ``classes``.

    ``mean_accuracy`` and ``mean_iu`` average the per-class values of the kept classes (still skipping
    undefined ones, as ``nanmean`` does). ``pixel_accuracy`` and ``frequency_weighted_iu`` weigh classes
    by their ground-truth pixels, so they are unchanged: a class absent from the ground truth weighs 0 in
    both, and its false positives stay errors of the true classes. Per-class entries are kept.

    Returns:
        a new dict with the two means replaced and ``left_out`` (the sorted class indices) added.
    """
    dropped = sorted({int(c) for c in classes})
    out = dict(result)
    for mean_key, per_class_key in (("mean_accuracy", "per_class_accuracy"), ("mean_iu", "per_class_iu")):
        kept = [v for i, v in enumerate(result[per_class_key]) if i not in dropped and v is not None]
        out[mean_key] = sum(kept) / len(kept) if kept else math.nan
    out["left_out"] = dropped
    return out


class HeadScores:
    """One :class:`~fcnseg.metrics.ConfusionMatrix` per head of a data set (``dataset.heads``).

    Args:
        heads: the heads, in the order of the mask's label maps (objects with ``name`` and ``num_classes``).
        ignore_index: the label that is never scored.
        device: where the counts live.
    """

    def __init__(self, heads: Sequence[Head], ignore_index: int = IGNORE_INDEX, device: torch.device | str = "cpu") -> None:
        self.heads = list(heads)
        if not self.heads:
            raise ValueError("HeadScores needs at least one head")
        self.matrices = {h.name: ConfusionMatrix(h.num_classes, ignore_index, device) for h in self.heads}

    @torch.no_grad()
    def update(self, predictions: Sequence[torch.Tensor] | Mapping[str, torch.Tensor], masks: torch.Tensor) -> None:
        """Count one batch.

        Args:
            predictions: class indices per head, ``[N, H, W]`` each (e.g. ``logits.argmax(1)``): a sequence in
                head order or a mapping from head name.
            masks: the batch's targets, ``[N, H, W]`` for one head or ``[N, K, H, W]`` for K heads.
        """
        targets = split_targets(masks, len(self.heads))
        if isinstance(predictions, Mapping):
            missing = [h.name for h in self.heads if h.name not in predictions]
            if missing:
                raise ValueError(f"no prediction for the heads {missing}; found {sorted(predictions)}")
            predictions = [predictions[h.name] for h in self.heads]
        if len(predictions) != len(self.heads):
            raise ValueError(f"{len(predictions)} predictions for {len(self.heads)} heads")
        for head, prediction, target in zip(self.heads, predictions, targets):
            self.matrices[head.name].update(prediction, target)

    def merge(self, other: "HeadScores") -> "HeadScores":
        """Add ``other``'s counts head by head (in place) and return self."""
        for name, matrix in self.matrices.items():
            matrix.merge(other.matrices[name])
        return self

    def all_reduce(self) -> "HeadScores":
        """Sum every head's counts over all processes (no-op without ``torch.distributed``)."""
        for matrix in self.matrices.values():
            matrix.all_reduce()
        return self

    def reset(self) -> None:
        for matrix in self.matrices.values():
            matrix.reset()

    def compute(
        self, *, leave_out: Mapping[str, Iterable[str | int]] | None = None, leave_out_absent: bool = False
    ) -> dict[str, dict]:
        """The four metrics of each head (see :meth:`ConfusionMatrix.compute`), keyed by head name.

        Args:
            leave_out: head name -> classes (names or indices) to leave out of that head's class means,
                e.g. ``{"semantic": ("cow", "desert", "moon")}`` for SIFT Flow's test set.
            leave_out_absent: also leave out, in every head, the classes without a ground-truth pixel in
                the scored images (on SIFT Flow's test set: cow, desert and moon).
        Returns:
            ``{head: result}``; a head with classes left out has its two means taken over the rest and
            ``left_out`` (class names) added (see :func:`leave_classes_out`).
        """
        leave_out = dict(leave_out or {})
        unknown = sorted(set(leave_out) - set(self.matrices))
        if unknown:
            raise ConfigError(f"leave_out names heads {unknown}; the heads are {[h.name for h in self.heads]}")
        results = {}
        for head in self.heads:
            result = self.matrices[head.name].compute()
            dropped = {_class_index(head, c) for c in leave_out.get(head.name, ())}
            if leave_out_absent:
                dropped.update(absent_classes(result))
            if dropped:
                result = leave_classes_out(result, dropped)
                result["left_out"] = [head.class_names[i] for i in result["left_out"]]
            results[head.name] = result
        return results


def format_head_tables(results: Mapping[str, dict], heads: Sequence[Head]) -> str:
    """One :func:`~fcnseg.metrics.format_table` per head, each under a ``== head ==`` line (and the classes left out)."""
    blocks = []
    for head in heads:
        result = results[head.name]
        title = f"== {head.name} ({head.num_classes} classes) =="
        if result.get("left_out"):
            title += f"\nleft out of the class means: {', '.join(result['left_out'])}"
        blocks.append(f"{title}\n{format_table(result, list(head.class_names))}")
    return "\n\n".join(blocks)


def _class_index(head: Head, cls: str | int) -> int:
    if isinstance(cls, str):
        if cls not in head.class_names:
            raise ConfigError(f"head {head.name!r} has no class {cls!r}; its classes are {list(head.class_names)}")
        return head.class_names.index(cls)
    if not 0 <= int(cls) < head.num_classes:
        raise ConfigError(f"head {head.name!r} has classes 0..{head.num_classes - 1}; found {cls}")
    return int(cls)

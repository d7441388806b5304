"""Which unlabelled image to label next: images ordered by the model's uncertainty, optionally spread over their looks.

Each image's score is its pixels' mean uncertainty, ``1 - confidence`` of one measure of
:mod:`fcnseg.inference.confidence`: ``entropy`` (normalised entropy), ``margin`` (one minus the gap between
the two likeliest classes) or ``least-confidence`` (one minus the largest probability); ``random`` draws a
seeded random score, the baseline. With ``diverse``, picks are made greedily (a k-center selection weighted
by the score): each next image maximises its score times its distance to the nearest image already picked,
in a feature space of what the model sees in it (the share of each predicted class) and how it looks (a
4x4 grey thumbnail), so that ten near-identical frames do not take the first ten places.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fcnseg.errors import ConfigError, DataError
from fcnseg.files import atomic_write_text
from fcnseg.images import DEFAULT_MAX_PIXELS, list_images, read_image
from fcnseg.progress import progress_bar

log = logging.getLogger(__name__)

RANK_BY = ("entropy", "margin", "least-confidence", "random")
# the confidence measure whose complement each strategy scores
_MEASURE = {"entropy": "entropy", "margin": "margin", "least-confidence": "max", "random": "max"}
THUMBNAIL = 4  # the grey thumbnail's side in the diversity features
LOOK_WEIGHT = 0.5  # how much the thumbnail counts beside the class shares (each block has unit scale)


@dataclass
class RankedImage:
    """One image's place in the order.

    Attributes:
        rank: 1 = label it first.
        name: the image's path relative to its input folder (or its file name).
        path: the image file.
        score: the mean uncertainty over its pixels in ``[0, 1]`` (a random draw under ``random``).
        mean_confidence: mean confidence (of the strategy's measure; the largest probability under ``random``).
        features: the diversity features (class shares, thumbnail); not written to the CSV.
    """

    rank: int
    name: str
    path: Path
    score: float
    mean_confidence: float
    features: np.ndarray | None = None


def check_by(by: str) -> str:
    if by not in RANK_BY:
        raise ConfigError(f"--by must be one of {', '.join(RANK_BY)}, got {by!r}")
    return by


def image_features(labels: np.ndarray, image: np.ndarray, num_classes: int) -> np.ndarray:
    """float64 ``[num_classes + 16]``: the share of each predicted class, then a 4x4 grey thumbnail in ``[0, 1]``.

    Args:
        labels: ``[H, W]`` predicted classes; image: RGB uint8 ``[H, W, 3]``.
    """
    shares = np.bincount(labels.reshape(-1).astype(np.int64), minlength=num_classes)[:num_classes].astype(np.float64)
    shares /= max(shares.sum(), 1.0)
    grey = torch.from_numpy(np.ascontiguousarray(image)).float().mean(2)[None, None] / 255  # [1, 1, H, W]
    thumb = torch.nn.functional.adaptive_avg_pool2d(grey, THUMBNAIL).reshape(-1).double().numpy()
    return np.concatenate([shares, LOOK_WEIGHT * thumb])


def diverse_order(scores: np.ndarray, features: np.ndarray) -> list[int]:
    """Greedy k-center weighted by score: indices in pick order.

    The first pick is the highest score; each next maximises ``score * distance to the nearest pick`` (Euclidean in
    ``features``), ties to the higher score, then the lower index. An image identical to a pick (distance 0) comes
    only after every image that differs from all picks.
    """
    n = len(scores)
    if n == 0:
        return []
    scores = np.asarray(scores, dtype=np.float64)
    feats = np.asarray(features, dtype=np.float64)
    weight = np.clip(scores, 0, None) + 1e-6  # scores are in [0, 1]; positive, so that a distance always counts
    order = [int(np.lexsort((np.arange(n), -scores))[0])]
    nearest = np.linalg.norm(feats - feats[order[0]], axis=1)
    left = np.ones(n, dtype=bool)
    left[order[0]] = False
    while left.any():
        gain = np.where(left, weight * nearest, -np.inf)
        best = np.flatnonzero(gain == gain.max())
        pick = int(best[np.lexsort((best, -scores[best]))[0]])
        order.append(pick)
        left[pick] = False
        nearest = np.minimum(nearest, np.linalg.norm(feats - feats[pick], axis=1))
    return order


def list_unlabelled(inputs: list[str | Path]) -> list[tuple[str, Path]]:
    """(name, path) of every image under ``inputs`` (folders searched recursively, or files), in a stable order."""
    found = []
    for root in map(Path, inputs):
        if root.is_dir():
            found += [(str(p.relative_to(root)), p) for p in list_images(root)]
        elif root.is_file():
            found.append((root.name, root))
        else:
            raise ConfigError(f"{root}: no such file or folder")
    return found


def rank_images(
    predictor,
    inputs: list[str | Path],
    *,
    by: str = "entropy",
    diverse: bool = False,
    seed: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> tuple[list[RankedImage], list[tuple[str, str]]]:
    """Order the images under ``inputs`` by how much a label would help, most first.

    Args:
        predictor: a :class:`~fcnseg.inference.predictor.Predictor` (its temperature applies).
        by: one of :data:`RANK_BY`.
        diverse: spread the order over different-looking images (:func:`diverse_order`).
        seed: the random scores under ``random``.
    Returns:
        (the ranked images, the files that could not be read with the reason).
    """
    check_by(by)
    kind = _MEASURE[by]
    entries, failed = [], []
    for name, path in progress_bar(list_unlabelled(inputs), desc="rank", unit="img", show=progress):
        try:
            image = read_image(path, max_pixels)
        except DataError as e:
            failed.append((str(path), e.reason))
            log.warning("skipping %s: %s", path, e.reason)
            continue
        result = predictor.predict(image, confidence=kind)
        confidence = result.confidence.astype(np.float64)
        features = image_features(result.labels, image, predictor.num_classes) if diverse else None
        entries.append(RankedImage(0, name, path, float(1 - confidence.mean()), float(confidence.mean()), features))
    if by == "random":
        draws = np.random.default_rng(seed).random(len(entries))
        for entry, draw in zip(entries, draws):
            entry.score = float(draw)
    scores = np.array([e.score for e in entries])
    if diverse and entries:
        order = diverse_order(scores, np.stack([e.features for e in entries]))
    else:
        order = list(np.lexsort((np.arange(len(entries)), -scores))) if entries else []
    ranked = [entries[i] for i in order]
    for rank, entry in enumerate(ranked, 1):
        entry.rank = rank
    return ranked, failed


def write_ranking_csv(ranked: list[RankedImage], path: str | Path, by: str) -> None:
    """``rank,image,path,score,mean_confidence`` per image, best first (atomic)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["rank", "image", "path", f"score_{by}", "mean_confidence"])
    for entry in ranked:
        writer.writerow([entry.rank, entry.name, str(entry.path), f"{entry.score:.6f}", f"{entry.mean_confidence:.6f}"])
    atomic_write_text(buffer.getvalue(), path)


def gather_top(ranked: list[RankedImage], count: int, folder: str | Path, *, link: bool = False) -> list[Path]:
    """Copy (or symlink) the first ``count`` images into ``folder``, keeping their relative names.

    A file already there under the same name is left alone (it is the same image from an earlier run, or the
    user's): it is reported and not replaced. Returns the paths written.
    """
    folder = Path(folder)
    written, kept = [], []
    for entry in ranked[:count]:
        target = folder / entry.name
        if target.exists() or target.is_symlink():
            kept.append(str(target))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if link:
            os.symlink(Path(entry.path).absolute(), target)
        else:
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copy2(entry.path, tmp)
            os.replace(tmp, target)
        written.append(target)
    if kept:
        log.warning("%d already in %s, left as they are: %s%s", len(kept), folder, ", ".join(kept[:5]),
                    ", ..." if len(kept) > 5 else "")
    return written


__all__ = ["RANK_BY", "RankedImage", "diverse_order", "gather_top", "image_features", "list_unlabelled",
           "rank_images", "write_ranking_csv"]

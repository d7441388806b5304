"""Score a model on a data set, or a folder of predicted label PNGs against ground truth, with the paper's metrics."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from fcnseg.data.base import require_folder
from fcnseg.data.class_match import PREDICTION_CLASS_FILE, match_classes, read_class_map
from fcnseg.data.classes import IGNORE_INDEX, VOC_CLASSES, ClassInfo, read_class_file
from fcnseg.data.items import Head, single_head, split_targets
from fcnseg.data.palette import read_mask_png, write_mask_png
from fcnseg.errors import DataError
from fcnseg.images import images_by_stem
from fcnseg.evaluation_data import fed_as
from fcnseg.distributed import all_gather_objects, all_reduce_sum, get_rank, get_world_size
from fcnseg.metrics import ConfusionMatrix, image_scores
from fcnseg.precision import autocast, autocast_dtype, describe
from fcnseg.progress import progress_bar
from fcnseg.scoring import HeadScores

logger = logging.getLogger(__name__)


FAILED_TO_LOAD = "failed_to_load"  # passed the data set's scan but could not be read when it came to be scored


def skipped_entry(name: str, path: str | Path, kind: str, message: str) -> dict[str, str]:
    """One skipped file as the results record it: item name, the file at fault, a problem kind, what was found."""
    return {"name": name, "path": str(path), "kind": kind, "message": message}


def scan_skipped(dataset) -> list[dict[str, str]]:
    """The items the data set's scan left out (``dataset.report``), paths joined to the data set's root."""
    report = getattr(dataset, "report", None)
    if report is None:
        return []
    root = Path(report.root)
    return [
        # a missing_files problem is a name in the split file, not a file under the root
        skipped_entry(p.name, p.path if p.kind == "missing_files" else root / p.path, p.kind, p.message)
        for p in report.problems
    ]


def format_skipped(result: dict, max_lines: int = 20) -> str:
    """The skipped files of an evaluation result, one per line (``KIND  PATH: MESSAGE``), at most ``max_lines``."""
    skipped = result.get("skipped", [])
    lines = [f"{s['kind']:>16}  {s['path']}: {s['message']}" for s in skipped[:max_lines]]
    if len(skipped) > max_lines:
        lines.append(f"... and {len(skipped) - max_lines} more")
    return "\n".join(lines)


class _Indexed(torch.utils.data.Dataset):
    """Wraps a data set so the loader also returns each item's index (to name saved predictions).

    An item that cannot be loaded comes back as ``(index, None, skipped entry)`` rather than being
    replaced by the next one (which fcnseg data sets do for training), so that no item is scored twice.
    """

    def __init__(self, dataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices
        self.load = getattr(dataset, "load_item", dataset.__getitem__)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        try:
            image, mask = self.load(index)
        except DataError as e:
            name = self.dataset.name(index)
            return index, None, skipped_entry(name, e.path or name, FAILED_TO_LOAD, e.reason)
        return index, image, mask


class _Subject:
    """What :func:`evaluate` runs: a model handle, fed as it expects, or a bare module run as given."""

    def __init__(self, model, dataset, device, precision, layout, tta, check: dict | None):
        from fcnseg.weights.handle import LoadedModel

        self.handle = model if isinstance(model, LoadedModel) else None
        self.mappings: dict = {}  # head -> ClassMapping that reads the data's labels in the model's terms
        if self.handle is not None:
            if check is not None:
                self.mappings = {k: m for k, m in self.handle.check_data(dataset, **check).items() if not m.identity}
            if device is not None or precision is not None or self.handle.plan is None:
                if self.handle.onnx_info is None:
                    self.handle.prepare(device or "auto", precision or "auto", layout)
                else:
                    self.handle.prepare()
            self.dataset = fed_as(dataset, self.handle)
            self.module = self.handle.model
            self.device = self.handle.plan.device
            self.dtype = None  # the handle's forward runs its own autocast
            self.precision = self.handle.precision
            forward = self.handle
        else:
            self.dataset = dataset
            self.module = model
            self.device = torch.device(device or "cpu")
            self.dtype = autocast_dtype(precision or "auto", self.device)
            self.precision = describe(self.dtype)
            forward = model
        if tta:
            from fcnseg.inference.tta import TTAModel

            forward = TTAModel(forward, tuple(tta))
        self.forward = forward

    def __call__(self, x: torch.Tensor):
        with autocast(self.device, self.dtype):
            return self.forward(x)

    @contextlib.contextmanager
    def eval_mode(self):
        """The torch module in eval mode on the device while scoring, its training flag restored after."""
        module = self.module
        if module is None:
            yield
            return
        was_training = module.training
        module.to(self.device).eval()
        try:
            yield
        finally:
            module.train(was_training)


@torch.inference_mode()
def evaluate(
    model,
    dataset,
    *,
    device: torch.device | str | None = None,
    precision: str | None = None,
    layout: str = "auto",
    num_workers: int = 0,
    limit: int | None = None,
    save_predictions: str | Path | None = None,
    progress: bool = True,
    per_image: bool = False,
    leave_out_absent: bool = False,
    tta: tuple = (),
    class_map: dict[str, str] | None = None,
    ignore_class_names: bool = False,
    calibration: bool = False,
) -> dict:
    """Run a model over ``dataset`` one image at a time at full resolution and score it, every head of it.

    Under ``torch.distributed`` each process takes every ``world_size``-th image and the confusion
    counts are summed over processes before the metrics are computed; only rank 0 shows progress.

    Args:
        model: the model handle (:func:`fcnseg.load_model`'s result, any file kind): its class names are
            checked against the data set's by name (``class_map``, ``ignore_class_names``: see
            :func:`fcnseg.data.class_match.match_classes`), and the images are normalised as it expects,
            whatever the data set's own default. Or a bare module ``model(x float32 [1, C, H, W]) -> logits
            [1, classes, H, W]`` (``{head: logits}`` for several heads) fed the data set's items as they are.
        dataset: yields ``(image float32 [C, H, W], mask int64 [H, W] or [K, H, W])`` and has ``class_names``,
            ``num_classes``, ``heads`` and ``name(i)`` (every fcnseg data set does).
        device, precision, layout: how a handle runs (its plan, :meth:`~fcnseg.weights.handle.LoadedModel.prepare`;
            None: the plan it has, else auto); a bare module runs on ``device`` (default CPU) in ``precision``
            (``auto`` | ``fp32`` | ``bf16`` | ``fp16``, :mod:`fcnseg.precision`).
        tta: test-time variants (:func:`fcnseg.inference.tta.parse_tta`), their softmax averaged.
        num_workers: DataLoader worker processes.
        limit: score only the first ``limit`` images.
        save_predictions: folder for predicted label maps as palette PNGs named ``<item name>.png``
            (several heads: ``<head>/<item name>.png``).
        progress: show a tqdm bar.
        per_image: also score each image on its own counts (see :func:`fcnseg.metrics.image_scores`), on
            the first head.
        leave_out_absent: leave the classes without a ground-truth pixel out of the class means
            (:meth:`fcnseg.scoring.HeadScores.compute`; SIFT Flow's test set lacks three).
        calibration: also measure how well the first head's confidence matches its accuracy, at temperature 1
            and at the model's own (:mod:`fcnseg.calibration`): ``result["calibration"]`` (not under TTA).
    Returns:
        dict: the metrics of :meth:`fcnseg.metrics.ConfusionMatrix.compute`, plus ``class_names``,
        ``num_images`` (images scored, over all processes), ``skipped`` (one
        ``{"name", "path", "kind", "message"}`` per item left out: by the data set's scan, or
        ``failed_to_load`` when a file went bad after it), ``num_skipped``, ``seconds``,
        ``images_per_second`` and ``precision`` (the concrete format it ran in). With ``per_image``, also
        ``per_image``: one dict per image (all processes', in data set order) with ``name``, ``index``
        and the keys of :func:`~fcnseg.metrics.image_scores`; a few numbers per image, never the label maps.
        The metrics are the first head's; a data set of several heads adds ``heads``: ``{head: metrics}``
        for every head, in order.
    """
    check = {"class_map": class_map, "ignore_class_names": ignore_class_names}
    subject = _Subject(model, dataset, device, precision, layout, tta, check)
    dataset, device = subject.dataset, subject.device
    heads = list(getattr(dataset, "heads", None) or single_head(dataset.class_names))
    # A class map reads the data's labels in the model's terms: those heads are scored over the model's classes.
    heads = [Head(h.name, subject.mappings[h.name].model_names) if h.name in subject.mappings else h for h in heads]
    rank, world = get_rank(), get_world_size()
    indices = list(range(len(dataset) if limit is None else min(limit, len(dataset))))[rank::world]
    loader = torch.utils.data.DataLoader(
        _Indexed(dataset, indices), batch_size=None, shuffle=False, num_workers=num_workers
    )
    out_dir = Path(save_predictions) if save_predictions is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    palette = getattr(dataset, "palette", None)
    scores = HeadScores(heads, device=device)
    matrix = scores.matrices[heads[0].name]
    rows: list[dict] | None = [] if per_image else None
    failed: list[dict[str, str]] = []
    bins = None
    if calibration and not tta:
        from fcnseg.calibration import ReliabilityBins

        temperature = subject.handle.temperature if subject.handle is not None else 1.0
        bins = (ReliabilityBins(), ReliabilityBins())  # at temperature 1, at the model's
    start = time.perf_counter()
    with subject.eval_mode():
        for index, image, mask in progress_bar(loader, desc="eval", unit="img", show=progress and rank == 0):
            if image is None:
                logger.warning("not scored: %s: %s", mask["path"], mask["message"])
                failed.append(mask)
                continue
            image, mask = image.to(device), mask.to(device)
            logits = subject(image[None])  # [1, C, H, W], or {head: [1, C_k, H, W]}
            predictions = _head_predictions(logits, heads, dataset)
            name = dataset.name(int(index))
            for k, (head, prediction, truth) in enumerate(zip(heads, predictions, split_targets(mask, len(heads)))):
                if head.name in subject.mappings:
                    truth = subject.mappings[head.name].remap_mask(truth)
                if k == 0 and bins is not None:
                    _add_reliability(bins, logits, heads[0].name, truth, temperature)
                if prediction.shape != truth.shape:
                    raise ValueError(f"model output is {tuple(prediction.shape)} for an input of {tuple(truth.shape)}")
                if k == 0 and rows is not None:
                    rows.append(_score_image(matrix, prediction, truth, name=name, index=int(index)))
                else:
                    scores.matrices[head.name].update(prediction, truth)
                if out_dir is not None:
                    folder = out_dir / head.name if len(heads) > 1 else out_dir
                    folder.mkdir(exist_ok=True)
                    write_mask_png(prediction.cpu().numpy(), folder / f"{name}.png", palette)
    seconds = time.perf_counter() - start
    scores.all_reduce()
    scored = len(indices) - len(failed)
    num_images = all_reduce_sum(torch.tensor([scored], device=device))
    skipped = scan_skipped(dataset) + [entry for part in all_gather_objects(failed) for entry in part]
    per_head = scores.compute(leave_out_absent=leave_out_absent)
    result = dict(per_head[heads[0].name])
    if len(heads) > 1:
        result["heads"] = {
            head.name: {**per_head[head.name], "class_names": list(head.class_names)} for head in heads
        }
    result.update(
        class_names=list(heads[0].class_names),
        num_images=int(num_images.item()),
        skipped=skipped,
        num_skipped=len(skipped),
        seconds=seconds,
        images_per_second=scored / seconds if seconds > 0 else math.nan,
        precision=subject.precision,
    )
    if subject.handle is not None:
        result.update(runtime=subject.handle.runtime, normalization=subject.handle.normalization.to_dict())
    if bins is not None:
        from fcnseg.calibration import calibration_summary

        for b in bins:  # every process's pixels
            for array in (b.counts, b.confidence, b.correct):
                array[:] = all_reduce_sum(torch.from_numpy(array.copy()).to(device)).cpu().numpy()
        result["calibration"] = calibration_summary(bins[0], bins[1], temperature)
    if rows is not None:
        result["per_image"] = sorted((row for part in all_gather_objects(rows) for row in part), key=lambda r: r["index"])
    return result


def _add_reliability(bins, logits, head: str, truth: torch.Tensor, temperature: float) -> None:
    """Count one image's pixels into the reliability bins at temperature 1 and at ``temperature``."""
    from fcnseg.calibration import reliability_of_logits

    scores = (logits[head] if isinstance(logits, Mapping) else logits)[0]  # [C, H, W]
    reliability_of_logits(scores, truth, 1.0, bins[0])
    reliability_of_logits(scores, truth, temperature, bins[1])


def _head_predictions(logits, heads: list, dataset) -> list[torch.Tensor]:
    """One ``[H, W]`` prediction per head (argmax; ``max().indices``, faster on CPU), checked against the heads."""
    by_head = logits if isinstance(logits, Mapping) else {heads[0].name: logits}
    if list(by_head) != [h.name for h in heads]:
        raise DataError(f"the model gives the outputs {list(by_head)} but the data set has the heads "
                        f"{[h.name for h in heads]} ({dataset!r})")
    for head in heads:
        found = by_head[head.name].shape[1]
        if found != head.num_classes:
            which = f" for head {head.name!r}" if len(heads) > 1 else ""
            raise DataError(f"the model predicts {found} classes{which} but the data set has {head.num_classes} ({dataset!r})")
    return [by_head[head.name].max(1).indices[0] for head in heads]


def _score_image(total: ConfusionMatrix, prediction: torch.Tensor, truth: torch.Tensor, **identity) -> dict:
    """Count one image on its own, add its counts to ``total`` and return ``identity`` plus its scores."""
    image = ConfusionMatrix(total.num_classes, total.ignore_index, device=total.counts.device)
    image.update(prediction, truth)
    total.merge(image)
    return {**identity, **image_scores(image)}


def score_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    *,
    class_file: str | Path | None = None,
    num_classes: int | None = None,
    allow_missing: bool = False,
    progress: bool = True,
    per_image: bool = False,
    class_map: str | Path | dict | None = None,
    ignore_class_names: bool = False,
) -> dict:
    """Score a folder of predicted label PNGs against a folder of ground-truth PNGs, matched by stem.

    Both may be palette or grey PNGs of class indices (or RGB PNGs in the class file's colours);
    ground-truth 255 is ignored. Use this to score any model's output with the paper's metrics.
    A ground truth or prediction that cannot be read (empty, truncated, not a PNG) is skipped and
    recorded, as the data set scan does; so are ground truths without a prediction, with ``allow_missing``.

    Args:
        pred_dir: predictions, ``<stem>.png``, values ``0..num_classes-1``.
        gt_dir: ground truth, e.g. VOC's ``SegmentationClass``.
        class_file: class names (and colours); else ``num_classes`` unnamed classes; else the 21 VOC classes.
        allow_missing: score the ground truths that have a prediction instead of raising when some have none.
        per_image: also score each image on its own counts, as :func:`evaluate` does.
        class_map: a class map file (:func:`fcnseg.data.class_match.read_class_map`) or dict, ground-truth name ->
            prediction name, for a prediction folder whose ``classes.txt`` names the classes otherwise.
        ignore_class_names: compare the class counts only (matched by index; logged as a warning).
    Class names: when ``pred_dir`` holds a ``classes.txt`` (``fcnseg predict`` writes the model's), its names are
    compared with the ground truth's (:func:`fcnseg.data.class_match.match_classes`); with a class map the ground
    truth is read in the predictions' terms and the result's classes are the predictions'.
    Returns:
        dict as :func:`evaluate` (``skipped`` entries of kind ``unreadable_mask`` for a ground truth,
        ``unreadable_prediction`` and ``missing_prediction``), plus ``missing`` (ground-truth stems
        without a prediction). With ``per_image``, the ``per_image`` rows carry ``name`` (the stem),
        ``prediction_path`` and ``truth_path`` instead of ``index``.
    Raises:
        DataError: a folder is missing or holds no ground truth, a prediction is missing (unless
            ``allow_missing``), a prediction's size differs from its ground truth, or labels fall
            outside the classes.
        ConfigError: the prediction folder's class names are not the ground truth's (both lists and the remedies).
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if class_file is not None:
        classes, class_source = read_class_file(class_file), str(class_file)
    elif num_classes is not None:
        classes, class_source = ClassInfo(tuple(f"class {i}" for i in range(num_classes))), f"--num-classes {num_classes}"
    else:
        classes, class_source = ClassInfo(VOC_CLASSES), "the 21 PASCAL VOC classes (assumed: no class file given)"
    n = classes.num_classes
    for folder in (pred_dir, gt_dir):
        require_folder(folder)
    mapping = _prediction_classes(pred_dir, classes.names, class_source, class_map, ignore_class_names)
    n_predicted = len(mapping.model_names)
    truths, predictions = images_by_stem(gt_dir), prediction_stems(images_by_stem(pred_dir))
    if not truths:
        raise DataError(f"{gt_dir} holds no label images")
    missing = [stem for stem in truths if stem not in predictions]
    if missing and not allow_missing:
        shown = ", ".join(missing[:5])
        raise DataError(
            f"{len(missing)} of {len(truths)} ground truths in {gt_dir} have no prediction in {pred_dir} (e.g. {shown})"
        )
    matrix = ConfusionMatrix(n_predicted)
    skipped: list[dict[str, str]] = []
    scored = 0
    rows: list[dict] | None = [] if per_image else None
    start = time.perf_counter()
    for stem in progress_bar(list(truths), desc="score", unit="img", show=progress):
        if stem not in predictions:
            message = f"ground truth {truths[stem]} has no prediction"
            skipped.append(skipped_entry(stem, pred_dir / f"{stem}.png", "missing_prediction", message))
            continue
        try:
            truth = read_mask_png(truths[stem], classes.colours)
        except DataError as e:
            skipped.append(skipped_entry(stem, truths[stem], "unreadable_mask", e.reason))
            continue
        try:
            prediction = read_mask_png(predictions[stem], classes.colours)
        except DataError as e:
            skipped.append(skipped_entry(stem, predictions[stem], "unreadable_prediction", e.reason))
            continue
        if prediction.shape != truth.shape:
            raise DataError(
                f"{predictions[stem]} is {prediction.shape[1]}x{prediction.shape[0]} "
                f"but its ground truth {truths[stem]} is {truth.shape[1]}x{truth.shape[0]}"
            )
        bad_gt = np.setdiff1d(np.unique(truth), np.r_[np.arange(n), IGNORE_INDEX])
        if bad_gt.size:
            raise DataError(f"{truths[stem]}: label values {bad_gt.tolist()[:8]} outside 0..{n - 1} (and ignore 255)")
        scored_pixels = truth != IGNORE_INDEX
        bad_pred = np.setdiff1d(np.unique(prediction[scored_pixels]), np.arange(n_predicted))
        if bad_pred.size:
            raise DataError(f"{predictions[stem]}: predicted values {bad_pred.tolist()[:8]} outside the classes "
                            f"0..{n_predicted - 1}")
        truth = mapping.remap_mask(truth)  # ground-truth labels in the predictions' terms
        if rows is None:
            matrix.update(torch.from_numpy(prediction), torch.from_numpy(truth))
        else:
            paths = {"prediction_path": str(predictions[stem]), "truth_path": str(truths[stem])}
            rows.append(_score_image(matrix, torch.from_numpy(prediction), torch.from_numpy(truth), name=stem, **paths))
        scored += 1
    seconds = time.perf_counter() - start
    if skipped:
        logger.warning("%d of %d ground truths not scored (see the result's 'skipped')", len(skipped), len(truths))
    result = matrix.compute()
    result.update(
        class_names=list(mapping.model_names),
        num_images=scored,
        skipped=skipped,
        num_skipped=len(skipped),
        seconds=seconds,
        images_per_second=scored / seconds if seconds > 0 else math.nan,
        missing=missing,
    )
    if rows is not None:
        result["per_image"] = rows
    return result


def _prediction_classes(pred_dir: Path, truth_names, truth_source: str, class_map, ignore_names: bool):
    """How to read the ground truth in the prediction folder's terms (:class:`ClassMapping`).

    A folder without ``classes.txt`` (written by other tools, or by fcnseg before it recorded one) is taken to
    use the ground truth's classes, as before.
    """
    recorded = pred_dir / PREDICTION_CLASS_FILE
    if recorded.is_file():
        names, source = read_class_file(recorded).names, str(recorded)
    else:
        names, source = tuple(truth_names), f"{pred_dir} (no {PREDICTION_CLASS_FILE}: the ground truth's classes assumed)"
    if isinstance(class_map, (str, Path)):
        class_map = read_class_map(class_map)
    mapping = match_classes(names, truth_names, model_source=source, data_source=truth_source,
                            class_map=class_map, ignore_names=ignore_names)
    if not mapping.identity:
        logger.info("%s", mapping.describe())
    return mapping


def prediction_stems(found: dict[str, Path]) -> dict[str, Path]:
    """Predictions by the stem of the image they label: ``photo_labels.png`` (what ``fcnseg predict`` writes)
    counts as ``photo``'s, unless the folder also holds a ``photo.png`` (another tool's name for it)."""
    from fcnseg.inference.folder import MASK_SUFFIX

    label_stem = Path(MASK_SUFFIX).stem  # "_labels"
    by_stem = dict(found)
    for stem, path in found.items():
        if stem.endswith(label_stem) and path.suffix.lower() == ".png":
            by_stem.setdefault(stem[: -len(label_stem)], path)
    return by_stem


@torch.inference_mode()
def predict_items(
    model,
    dataset,
    indices: list[int],
    *,
    device: torch.device | str | None = None,
    precision: str | None = None,
    tta: tuple = (),
) -> list[dict]:
    """Predict a few chosen items again, as :func:`evaluate` predicted them, for pictures of them.

    A report picks the images to show after the scoring pass (which keeps no label maps), then
    asks for those only.

    Args:
        model, dataset, device, precision, tta: as for :func:`evaluate` (a handle's classes were checked there).
        indices: data set indices, e.g. the ``index`` of :func:`evaluate`'s ``per_image`` rows.
    Returns:
        one dict per index, in order: ``index``, ``name``, ``image`` (RGB uint8 ``[H, W, 3]`` as stored),
        ``mask`` (int64 ``[H, W]``, 255 = ignore) and ``prediction`` (int64 ``[H, W]``).
    """
    subject = _Subject(model, dataset, device, precision, "auto", tta, check=None)
    dataset = subject.dataset
    items = []
    with subject.eval_mode():
        for index in indices:
            image, _ = dataset[index]
            logits = subject(image[None].to(subject.device))  # [1, C, H, W], or {head: ...}: the first head is shown
            if isinstance(logits, Mapping):
                logits = next(iter(logits.values()))
            raw = dataset.load_raw(index)
            mask = raw.mask if raw.mask.ndim == 2 else raw.mask[0]  # [K, H, W]: the first head's
            items.append({"index": index, "name": dataset.name(index), "image": raw.image, "mask": mask,
                          "prediction": logits.max(1).indices[0].cpu().numpy().astype(np.int64)})
    return items

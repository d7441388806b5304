"""A run's validations: the four metrics on the val split (all processes), the record kept of each, the panels' predictions."""

from __future__ import annotations


from fcnseg.evaluation import evaluate, predict_items
from fcnseg.metrics import collapse_warning
from fcnseg.weights.handle import LoadedModel


def validate(model: LoadedModel, val_set, limit: int = 0) -> dict:
    """The four metrics on ``val_set`` (its first ``limit`` images; 0: all); each process scores a shard and counts are summed.

    ``model`` is the handle of the net being trained, run in its plan (the training's device, precision and
    layout). Every head is scored (:func:`fcnseg.evaluation.evaluate`): the metrics are the first head's,
    ``heads`` holds each.
    """
    return evaluate(model, val_set, limit=limit or None, progress=False)


def validation_record(result: dict, iteration: int, epoch: float, train_loss: float, lr: float) -> dict:
    """What metrics.csv/json keep of one validation: when, the training loss since the last one, and the metrics
    (the first head's; a net of several heads adds ``head_mean_iu``, each head's mean IU, and ``heads``, all
    of each head's metrics but its confusion matrix)."""
    extra = {}
    if "heads" in result:
        extra["head_mean_iu"] = {name: r["mean_iu"] for name, r in result["heads"].items()}
        extra["heads"] = {name: {k: v for k, v in r.items() if k != "confusion"} for name, r in result["heads"].items()}
    return {
        "iteration": iteration,
        "epoch": epoch,
        "train_loss": train_loss,
        "lr": lr,
        **{k: result[k] for k in ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu")},
        "per_class_iu": result["per_class_iu"],
        "per_class_accuracy": result["per_class_accuracy"],
        "pixels": result["pixels"],
        **extra,
        # ground-truth pixels of each class (the confusion matrix's row sums), for the per-class IU bars
        "class_pixels": [int(sum(row)) for row in result.get("confusion") or []],
        # set when the predictions collapsed to one class (fcnseg.metrics.collapse_warning), else None
        "warning": collapse_warning(result, result.get("class_names")),
    }


def panel_items(model: LoadedModel, val_set, count: int) -> list[dict]:
    """Predictions for the first ``count`` validation images, as :func:`fcnseg.training.figures.draw_panels` takes them.

    Each item: ``name``, ``image`` (RGB uint8 ``[H, W, 3]``), ``mask`` and ``prediction`` (int ``[H, W]``), the
    first head's (:func:`fcnseg.evaluation.predict_items`).
    """
    return predict_items(model, val_set, list(range(min(count, len(val_set)))))

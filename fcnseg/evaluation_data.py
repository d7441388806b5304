"""The data set a model is scored on, opened as the model reads it: its modalities and normalisation."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from fcnseg.data import build_dataset, detect_kind
from fcnseg.data.normalization import InputSpec
from fcnseg.errors import ConfigError
from fcnseg.weights.handle import LoadedModel

logger = logging.getLogger("fcnseg.evaluation")


def dataset_for_model(
    model: LoadedModel,
    root: str | Path | None,
    *,
    kind: str = "auto",
    split: str = "val",
    sbd_root: str | Path | None = None,
    voc_root: str | Path | None = None,
    modalities: str | None = None,
    style: str = "shapes",
):
    """Open the data set at ``root`` (None with ``kind="synthetic"``: the in-memory synthetic set) to score ``model``.

    Images are normalised as the model expects (:attr:`~fcnseg.weights.handle.LoadedModel.feed_normalization`),
    whatever the data set's own default; a NYUD tree is read in the modalities the model was trained on
    (``modalities`` overrides them for a model that records none, e.g. a colour-only caffemodel).

    Raises:
        ConfigError: ``modalities`` for a layout other than NYUD.
    """
    if root is not None and kind in ("auto", "synthetic"):
        kind = detect_kind(root)
    if modalities and kind != "nyud":
        raise ConfigError(f"--modalities is for NYUD; {root} holds a {kind} data set")
    options: dict = {}
    normalization = model.feed_normalization
    if root is None:
        options = {"style": style}
    elif kind == "nyud":
        from fcnseg.data.nyud import nyud_options

        if model.inputs is not None and model.onnx_info is None:
            options = nyud_options(model.inputs)
            normalization = options.pop("normalization", None)
        if modalities:
            options["modalities"] = modalities
    elif kind == "voc" and sbd_root is not None:
        options = {"sbd_root": sbd_root}
    elif kind == "pascal_context" and voc_root is not None:
        options = {"voc_root": voc_root}
    return build_dataset(kind, root, split, normalization=normalization, **options)


__all__ = ["dataset_for_model"]


def first_image(dataset):
    """The data set's first image as uint8 RGB ``[H, W, 3]`` (its normalisation undone), for ``--runtime auto``
    to time the runtimes on; None for a data set of other inputs (depth, HHA) or one that cannot give it."""
    import torch

    from fcnseg.data.normalization import Normalization

    normalization = getattr(dataset, "normalization", None)
    if not isinstance(normalization, Normalization) or len(dataset) == 0:
        return None
    try:
        item = dataset[0]
    except Exception:  # noqa: BLE001 - a broken first item is reported by the evaluation itself
        return None
    image = item[0] if isinstance(item, (tuple, list)) else None
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        return None
    return normalization.tensor_to_image(image)


def fed_as(dataset, handle):
    """``dataset`` as ``handle`` must be fed: a shallow copy normalising each input modality as the model
    expects (the data set's own default may differ; :meth:`~fcnseg.data.base.SegmentationDataset.use_inputs`),
    logged where it changes anything; the caller's object is left as it was.

    Raises:
        DataError: the model reads other modalities than the data set serves.
    """
    inputs = handle.inputs if handle.onnx_info is None else None
    wanted = handle.feed_normalization if inputs is None else None
    if inputs is not None and getattr(dataset, "input_spec", None) == inputs:
        return dataset
    if wanted is not None and getattr(dataset, "normalization", None) in (None, wanted):
        return dataset
    fed = copy.copy(dataset)
    if hasattr(fed, "input_normalizations"):
        fed.input_normalizations = dict(fed.input_normalizations)  # not the caller's dict
    fed.use_inputs(normalization=wanted, inputs=inputs)
    spec = inputs or InputSpec("color", {"color": wanted})
    logger.info("inputs normalised as %s expects: %s (the data set's own: %s)", handle.path or "the model",
                ", ".join(f"{m} {n.name}" for m, n in spec.normalizations.items()), dataset.normalization.name)
    return fed

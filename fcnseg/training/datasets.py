"""A run's training and validation sets, opened from its data settings and checked against its model, and the class weights they imply."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fcnseg.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from fcnseg.data import build_dataset, check_class_count, detect_kind, train_transform
from fcnseg.data.cache import CachedItems, serves_rgb
from fcnseg.data.normalization import Normalization
from fcnseg.data.classes import class_pixel_counts
from fcnseg.errors import ConfigError
from fcnseg.losses import median_frequency_weights

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    train_set: Any  # augmented: mirror, scale and crop as data.* says (a CachedItems for RGB sets)
    val_set: Any  # whole images, no augmentation
    class_names: list[str]


def _open(data: DataConfig, kind: str, root: str, split: str, normalization: Normalization | None, transform,
          count: int):
    kwargs: dict[str, Any] = {}
    if kind == "synthetic" and not root:
        kwargs = {"num_images": count, "seed": data.synthetic_seed, "style": data.synthetic_style,
                  "size": (data.synthetic_size, data.synthetic_size) if data.synthetic_size else None}
    else:
        kind = detect_kind(root) if kind in ("auto", "synthetic") else kind
        if data.sbd_root and kind == "voc":
            kwargs = {"sbd_root": data.sbd_root}
        elif data.voc_root and kind == "pascal_context":
            kwargs = {"voc_root": data.voc_root}
        if data.modalities:
            if kind != "nyud":
                raise ConfigError(f"data.modalities {data.modalities!r} is for NYUD, but {root} holds a {kind} data set")
            kwargs = {"modalities": data.modalities}
    return build_dataset(kind, root or None, split, normalization=normalization, transform=transform, **kwargs)


def check_model_fits(dataset, model: ModelConfig) -> None:
    """Raise unless the model's heads and input streams are the data set's (``dataset.heads``, ``streams``).

    One head is checked by its class count (:func:`fcnseg.data.check_class_count`, which names the class file);
    several by name and count. One input stream by its channels, several (late fusion) by name and channels.

    Raises:
        ConfigError: naming the setting to write (``model.heads``, ``model.streams``) and the data set's values.
    """
    heads = [[h.name, h.num_classes] for h in dataset.heads]
    if len(heads) == 1 and not model.heads:
        check_class_count(dataset, model.num_classes, what="model.num_classes")
    elif [list(h) for h in model.output_heads()] != heads:
        raise ConfigError(f"model.heads is {[list(h) for h in model.output_heads()]} but the data set's heads are "
                          f"{heads}; set model.heads: {heads} (and model.num_classes: {heads[0][1]})")
    streams = [[s.name, s.channels] for s in dataset.streams]
    ours = [list(s) for s in model.input_streams()]
    fits = ours[0][1] == streams[0][1] if len(streams) == len(ours) == 1 else ours == streams
    if not fits:
        raise ConfigError(f"the model reads the input streams {ours} but the data set gives {streams}; "
                          f"set model.streams: {streams}")


def take_class_count(config: RunConfig, dataset) -> RunConfig:
    """``config`` with ``model.num_classes`` from ``dataset`` where the user gave none (``num_classes_from_data``).

    Logged in one line when it changes the count. A data set of several heads is left to
    :func:`check_model_fits` (``model.heads`` must be written out).
    """
    model = config.model
    if not config.num_classes_from_data or model.heads or len(dataset.heads) != 1:
        return config
    found = dataset.num_classes
    if found == model.num_classes:
        return config
    source = getattr(dataset, "class_source", None)
    where = source.description if source is not None else f"the data set's {found} class names"
    log.info("model.num_classes %d, from %s (no config file or flag set it)", found, where)
    return dataclasses.replace(config, model=dataclasses.replace(model, num_classes=found))


def data_class_source(dataset, config: RunConfig) -> str:
    """Where a training set's class names come from, for messages: its class file, else its root or kind."""
    source = getattr(dataset, "class_source", None)
    if source is not None and source.file is not None:
        return f"the data set's class file {source.file}"
    root = getattr(dataset, "root", None) or config.data.root
    return f"the data set at {root}" if root else f"the {config.data.dataset} data set"


def build_training_data(config: RunConfig, normalization: Normalization | None, check_model: bool = True) -> TrainingData:
    """Open both splits (scanning their files) and check their heads and inputs against the model's.

    Args:
        normalization: the colour normalisation; None: the data set's own (NYUD's, SIFT Flow's mean pixel).
        check_model: check the model against the data (:func:`check_model_fits`); off for a caller that first
            takes the class count from the data (:func:`take_class_count`) and checks afterwards.
    Raises:
        DataError: a root, split or file is missing or unreadable (from :func:`fcnseg.data.build_dataset`).
        ConfigError: the splits disagree on the classes, or the model has other heads or inputs.
    """
    d = config.data
    scale = (d.scale_min, d.scale_max) if (d.scale_min, d.scale_max) != (1.0, 1.0) else None
    augment = {"mirror": d.mirror, "scale_range": scale, "crop_size": d.crop_size or None}
    train_set = _open(d, d.dataset, d.root, d.train_split, normalization, None, d.synthetic_train_images)
    if serves_rgb(train_set):
        # mirror, scale and crop the stored uint8 picture, then normalise the crop (fcnseg.data.cache)
        # normalised as the data set would (its own normalisation where the run gives none: SIFT Flow's mean)
        train_set = CachedItems(train_set, train_transform(**augment, normalization=train_set.normalization),
                                d.cache_mb << 20)
        train_set.fill()
    else:
        train_set.transform = train_transform(**augment)
    val_kind, val_root = (d.val_dataset, d.val_root) if d.val_dataset else (d.dataset, d.root)
    val_set = _open(d, val_kind, val_root, d.val_split, normalization, None, d.synthetic_val_images)
    class_names = list(train_set.class_names)
    found = train_set.num_classes
    if val_set.num_classes != found:
        raise ConfigError(f"the train split has {found} classes but the val split has {val_set.num_classes}")
    if check_model:
        check_model_fits(train_set, config.model)
    return TrainingData(train_set, val_set, class_names)


def class_frequencies(dataset) -> tuple[np.ndarray, np.ndarray]:
    """Labelled pixels of each class, and of the images each class appears in, over ``dataset`` (int64 ``[C]`` each).

    Taken from the data set's scan, which counted them while reading every mask; a data set served
    from memory (no scan) is counted here, once, from its label maps.
    """
    report = getattr(dataset, "report", None)
    if report is not None and report.class_pixels is not None:
        return report.class_pixels, report.image_pixels
    num_classes = dataset.num_classes
    class_pixels = np.zeros(num_classes, dtype=np.int64)
    image_pixels = np.zeros(num_classes, dtype=np.int64)
    for index in range(len(dataset)):
        mask = dataset.load_raw(index).mask
        counts = class_pixel_counts(mask[0] if mask.ndim == 3 else mask, num_classes)
        class_pixels += counts
        image_pixels += np.where(counts > 0, counts.sum(), 0)
    return class_pixels, image_pixels


def class_weights(config: TrainConfig, train_set, class_names: list[str]) -> torch.Tensor | None:
    """The per-class loss weights ``train.class_weights`` asks for: None, median frequency balancing, or the list.

    Raises:
        ConfigError: a list whose length is not the number of classes.
    """
    setting = config.class_weights
    if setting == "none":
        return None
    if setting == "auto":
        class_pixels, image_pixels = class_frequencies(train_set)
        weights = median_frequency_weights(class_pixels, image_pixels)
        shown = ", ".join(f"{name} {w:.2f}" for name, w in zip(class_names, weights.tolist()))
        log.info("class weights (median frequency balancing over %d training images): %s", len(train_set), shown)
        return weights
    if len(setting) != len(class_names):
        raise ConfigError(f"train.class_weights has {len(setting)} values but the data set has {len(class_names)} "
                          f"classes ({', '.join(class_names[:6])}{', ...' if len(class_names) > 6 else ''})")
    return torch.tensor([float(w) for w in setting])

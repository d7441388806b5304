"""A run's training and validation sets, opened from its data settings and checked against its model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fcnseg.config import DataConfig, RunConfig
from fcnseg.data import build_dataset, check_class_count, train_transform
from fcnseg.data.cache import CachedItems, serves_rgb
from fcnseg.data.normalization import Normalization
from fcnseg.errors import ConfigError


@dataclass
class TrainingData:
    train_set: Any  # augmented: mirror, scale and crop as data.* says (a CachedItems for RGB sets)
    val_set: Any  # whole images, no augmentation
    class_names: list[str]


def _open(data: DataConfig, kind: str, root: str, split: str, normalization: Normalization, transform, count: int):
    kwargs: dict[str, Any] = {}
    if kind == "synthetic" and not root:
        kwargs = {"num_images": count, "seed": data.synthetic_seed, "style": data.synthetic_style,
                  "size": (data.synthetic_size, data.synthetic_size) if data.synthetic_size else None}
    elif data.sbd_root and kind in ("voc", "auto"):
        kwargs = {"sbd_root": data.sbd_root}
    return build_dataset(kind, root or None, split, normalization=normalization, transform=transform, **kwargs)


def build_training_data(config: RunConfig, normalization: Normalization) -> TrainingData:
    """Open both splits (scanning their files) and check their classes against ``model.num_classes``.

    Raises:
        DataError: a root, split or file is missing or unreadable (from :func:`fcnseg.data.build_dataset`).
        ConfigError: the splits disagree on the classes, or the model has another number of them.
    """
    d = config.data
    scale = (d.scale_min, d.scale_max) if (d.scale_min, d.scale_max) != (1.0, 1.0) else None
    augment = {"mirror": d.mirror, "scale_range": scale, "crop_size": d.crop_size or None}
    train_set = _open(d, d.dataset, d.root, d.train_split, normalization, None, d.synthetic_train_images)
    if serves_rgb(train_set):
        # mirror, scale and crop the stored uint8 picture, then normalise the crop (fcnseg.data.cache)
        train_set = CachedItems(train_set, train_transform(**augment, normalization=normalization), d.cache_mb << 20)
        train_set.fill()
    else:
        train_set.transform = train_transform(**augment)
    val_kind, val_root = (d.val_dataset, d.val_root) if d.val_dataset else (d.dataset, d.root)
    val_set = _open(d, val_kind, val_root, d.val_split, normalization, None, d.synthetic_val_images)
    class_names = list(train_set.class_names)
    found = train_set.num_classes
    if val_set.num_classes != found:
        raise ConfigError(f"the train split has {found} classes but the val split has {val_set.num_classes}")
    check_class_count(train_set, config.model.num_classes, what="model.num_classes")
    return TrainingData(train_set, val_set, class_names)

"""Our self-describing checkpoints, written: the model, its config, class names, normalisation, inputs and palette.

Writing is atomic (temp file, fsync, rename), so a crash mid-write leaves the previous file intact.
:func:`fcnseg.weights.checkpoint.load_model` reads them back.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fcnseg.config import ModelConfig
from fcnseg.data.normalization import InputSpec, Normalization
from fcnseg.errors import ConfigError
from fcnseg.files import atomic_write

FORMAT = "fcnseg-checkpoint"
FORMAT_VERSION = 1


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, fsync it, then rename over ``path``."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    atomic_write(path, write, durable=True)


def checkpoint_dict(
    model: nn.Module,
    config: ModelConfig,
    class_names: list[str],
    normalization: Normalization,
    extra: dict[str, Any] | None = None,
    *,
    head_class_names: dict[str, list[str]] | None = None,
    inputs: InputSpec | None = None,
    palette=None,
) -> dict[str, Any]:
    """The dict our checkpoints hold; only tensors and plain Python values, so it loads with weights_only.

    ``class_names`` are the first head's; ``head_class_names`` (every head's, for a net of several) and
    ``inputs`` (NYUD's modalities and normalisations) are stored when given.
    """
    model = getattr(model, "module", model)  # unwrap DDP
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    if len(class_names) != config.num_classes:
        raise ConfigError(f"{len(class_names)} class names for a model of {config.num_classes} classes")
    ckpt = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model_config": asdict(config),
        "class_names": list(class_names),
        "normalization": normalization.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if head_class_names:
        heads = config.output_heads()
        found = [(name, len(head_class_names.get(name, ()))) for name, _ in heads]
        if found != heads:
            raise ConfigError(f"class names for the heads {found} of a model whose heads are {heads}")
        ckpt["heads"] = {name: list(head_class_names[name]) for name, _ in heads}
    if inputs is not None:
        ckpt["inputs"] = inputs.to_dict()
    if palette is not None:
        ckpt["palette"] = torch.as_tensor(np.asarray(palette, dtype=np.uint8))
    ckpt.update(extra or {})
    return ckpt


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: ModelConfig,
    class_names: list[str],
    normalization: Normalization,
    extra: dict[str, Any] | None = None,
    *,
    head_class_names: dict[str, list[str]] | None = None,
    inputs: InputSpec | None = None,
    palette=None,
) -> None:
    """Write a self-describing checkpoint atomically: ``load_model(path)`` needs nothing else (``palette``: the
    class colours, uint8 ``[K, 3]``, stored when given)."""
    atomic_save(checkpoint_dict(model, config, class_names, normalization, extra, head_class_names=head_class_names,
                                inputs=inputs, palette=palette), path)

"""Where a run's weights start: from scratch, an ImageNet VGG16 classifier, a coarser FCN, or the checkpoint it resumes.

Each start says which input normalisation its weights imply; :func:`resolve_normalization` turns
that and ``data.normalization`` into the one the run feeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from fcnseg.checkpoint import load_checkpoint, read_classifier_trunk
from fcnseg.config import ModelConfig, RunConfig, from_dict
from fcnseg.data import get_normalization
from fcnseg.data.normalization import IMAGENET_RGB, PAPER_BGR, Normalization
from fcnseg.errors import CheckpointError, ConfigError
from fcnseg.models import build_model
from fcnseg.models.surgery import transplant, transplant_trunk


@dataclass
class InitializedModel:
    """A freshly built FCN with its starting weights in place."""

    model: nn.Module
    normalization: Normalization | None  # the one the weights were trained with; None from scratch
    description: str  # one line for the log: where the weights came from


def initialize_model(
    config: RunConfig, resume_checkpoint: dict[str, Any] | None = None, resume_source: str | Path = "checkpoint"
) -> InitializedModel:
    """Build ``config.model`` and load its starting weights.

    Args:
        config: the run settings; ``train.classifier_weights`` (net surgery, paper section 4) or
            ``train.init_from`` (staged training, section 4.2) choose the start, else scratch.
        resume_checkpoint: a ``last.pt`` already read (:func:`fcnseg.training.state.read_resume`);
            its weights win over every other start, and its model must be the one ``config`` asks for.
        resume_source: the file it came from, for messages.
    Raises:
        ConfigError: the resumed model differs from the config's, or a classifier for a non-VGG16 trunk.
        CheckpointError: an ``init_from`` checkpoint shares no layer, or its trunk does not fit.
    """
    model_config = config.model
    if resume_checkpoint is not None:
        return _resumed(model_config, resume_checkpoint, resume_source)
    t = config.train
    if t.classifier_weights:
        return _from_classifier(model_config, t.classifier_weights)
    if t.init_from:
        return _from_coarser(model_config, t.init_from)
    return InitializedModel(build_model(model_config), None, "weights initialised from scratch")


def _resumed(model_config: ModelConfig, checkpoint: dict[str, Any], source: str | Path) -> InitializedModel:
    stored = from_dict(ModelConfig, checkpoint["model_config"], f"{source}: model_config")
    if stored != model_config:
        raise ConfigError(
            f"{source}: the checkpoint's model is {stored} but the config asks for {model_config}; "
            f"resume with the run's own config (fcnseg train --resume {source})"
        )
    model = build_model(model_config)
    model.load_state_dict(checkpoint["state_dict"])
    return InitializedModel(model, Normalization.from_dict(checkpoint["normalization"]), f"weights from {source}")


def _from_classifier(model_config: ModelConfig, path: str) -> InitializedModel:
    if model_config.backbone != "vgg16":
        raise ConfigError(f"classifier_weights {path}: only a VGG16 trunk can start from it, "
                          f"but model.backbone is {model_config.backbone!r}")
    model = build_model(model_config)
    trunk, normalization = read_classifier_trunk(path)
    transplant_trunk(model, trunk, path)
    return InitializedModel(model, normalization,
                            f"trunk initialised from the classifier {path}; score layers zero, upsampling bilinear")


def _from_coarser(model_config: ModelConfig, path: str) -> InitializedModel:
    model = build_model(model_config)
    checkpoint = load_checkpoint(path)
    copied = transplant(model, checkpoint["state_dict"])
    if not copied:
        raise CheckpointError(f"{path}: no layer of it fits a {model_config.arch} on {model_config.backbone}")
    new = [k for k in model.state_dict() if k not in copied]
    trunk_left = [k for k in new if k.startswith("backbone.")]
    if trunk_left:  # staged training continues the whole trunk; a partial copy is a different net
        theirs = checkpoint["model_config"]
        raise CheckpointError(
            f"{path}: its trunk ({theirs.get('backbone')}, batch_norm {theirs.get('batch_norm', False)}) "
            f"does not fit this {model_config.backbone} trunk (batch_norm {model_config.batch_norm}); "
            f"missing or differently shaped: {', '.join(trunk_left[:4])}{' ...' if len(trunk_left) > 4 else ''}"
        )
    description = (f"initialised {len(copied)} tensors from {path} (a {checkpoint['model_config'].get('arch')}); "
                   f"new layers keep their zero/bilinear init: {', '.join(new) or 'none'}")
    return InitializedModel(model, Normalization.from_dict(checkpoint["normalization"]), description)


def resolve_normalization(config: RunConfig, weights_normalization: Normalization | None) -> Normalization:
    """``auto``: the weights' own normalisation, else paper BGR for VGG16/AlexNet, ImageNet RGB for the small net."""
    name = config.data.normalization
    if name != "auto":
        return get_normalization(name)
    if weights_normalization is not None:
        return weights_normalization
    return IMAGENET_RGB if config.model.backbone == "small" else PAPER_BGR

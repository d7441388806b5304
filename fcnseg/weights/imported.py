"""What a foreign-layout importer returns: weights under fcnseg's keys, and the net they describe."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fcnseg.config import ModelConfig
from fcnseg.data.normalization import InputSpec, Normalization


@dataclass
class ImportedWeights:
    """Weights renamed to fcnseg's state-dict keys (docs/CONTRACT.md).

    Attributes:
        state_dict: ``{key: float32 tensor}`` with our keys: ``backbone.conv1_1.weight`` ... ``backbone.fc7.*``,
            then an FCN's ``score_fr.*``, ``upscore*.weight``..., or an ImageNet classifier's
            ``classifier.fc8.*`` (a 1x1 convolution ``[1000, 4096, 1, 1]``).
        backbone: ``"vgg16"``, ``"alexnet"`` or ``"small"``.
        num_classes: classes scored (1000 for an ImageNet classifier).
        config: the FCN the weights fill, or None for a classifier (trunk and fc8 only).
        normalization: the input the weights were trained on (its first modality's, for several).
        inputs: the modalities and their normalisations of a net that reads more than an RGB image, else None.
        head_class_names: head name -> class names, where the net's data set is known (else empty).
    """

    state_dict: dict[str, torch.Tensor]
    backbone: str
    num_classes: int
    config: ModelConfig | None
    normalization: Normalization
    inputs: InputSpec | None = None
    head_class_names: dict[str, list[str]] = field(default_factory=dict)

    @property
    def arch(self) -> str | None:
        """The FCN architecture, or None for an ImageNet classifier."""
        return self.config.arch if self.config is not None else None

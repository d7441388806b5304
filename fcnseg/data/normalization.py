"""How stored pixels become the float tensor a model was trained on, recorded in checkpoints.

RGB-like images (colour, HHA) go through :class:`Normalization`; NYUD's depth maps through :class:`LogDepthNormalization`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from fcnseg.errors import ConfigError


@dataclass(frozen=True)
class Normalization:
    """Per-channel affine input normalisation.

    ``x = (pixel * value_scale - mean) / std`` with ``pixel`` in [0, 255], channels reordered to BGR
    first when ``bgr`` is set (``mean``/``std`` are then given in BGR order, as Caffe does).
    """

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool
    value_scale: float  # multiplier applied to 0..255 pixel values before the mean is subtracted

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        try:
            return cls(
                name=str(d["name"]),
                mean=tuple(float(v) for v in d["mean"]),
                std=tuple(float(v) for v in d["std"]),
                bgr=bool(d["bgr"]),
                value_scale=float(d["value_scale"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"normalization {d!r} is malformed: {e}") from e

    def coefficients(self, shape: tuple[int, ...] = (3, 1, 1), device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(multiplier, offset)`` float32 tensors of ``shape``: the normalised input is ``x * multiplier + offset``
        for ``x`` the 0..255 pixel values in the channel order the model reads (BGR first when :attr:`bgr`).

        The one formula of fcnseg's input: data sets, the predictor's forward and the exported ONNX graph all
        apply these coefficients, so the three give the same numbers.
        """
        std = torch.tensor(self.std, dtype=torch.float64)
        multiplier = (self.value_scale / std).to(torch.float32).view(shape)
        offset = (-torch.tensor(self.mean, dtype=torch.float64) / std).to(torch.float32).view(shape)
        return multiplier.to(device), offset.to(device)

    def image_to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """RGB uint8 ``[H, W, 3]`` array -> normalised float32 tensor ``[3, H, W]``."""
        return self.normalize(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """RGB ``[3, H, W]`` tensor of 0..255 values (uint8, e.g. a training crop) -> normalised float32 ``[3, H, W]``."""
        x = image.float()
        if self.bgr:
            x = x.flip(0)
        multiplier, offset = self.coefficients(device=x.device)
        return x.mul_(multiplier).add_(offset) if x is not image else x * multiplier + offset

    def tensor_to_image(self, x: torch.Tensor) -> np.ndarray:
        """Inverse of :meth:`image_to_tensor`: float ``[3, H, W]`` -> RGB uint8 ``[H, W, 3]``."""
        multiplier, offset = self.coefficients(device=x.device)
        x = (x.float() - offset) / multiplier
        if self.bgr:
            x = x.flip(0)
        return x.clamp(0, 255).round().byte().permute(1, 2, 0).cpu().numpy()


# The reference FCN nets (and Caffe VGG16, and pytorch-fcn): BGR, 0..255, mean pixel subtracted, no scaling.
PAPER_BGR = Normalization(
    name="paper_bgr",
    mean=(104.00698793, 116.66876762, 122.67891434),
    std=(1.0, 1.0, 1.0),
    bgr=True,
    value_scale=1.0,
)

# torchvision-style ImageNet classifiers: RGB in [0, 1], per-channel mean and std.
IMAGENET_RGB = Normalization(
    name="imagenet_rgb",
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    bgr=False,
    value_scale=1.0 / 255.0,
)

# The reference data layers of the paper's other benchmarks (fcn.berkeleyvision.org nyud_layers.py,
# siftflow_layers.py): each subtracts its own data set's mean pixel, in BGR order for colour.
NYUD_BGR = Normalization(name="nyud_bgr", mean=(116.190, 97.203, 92.318), std=(1.0, 1.0, 1.0), bgr=True, value_scale=1.0)
# HHA (horizontal disparity, height above ground, angle with gravity) is read in the file's channel
# order and not reordered, as nyud_layers.py does.
NYUD_HHA = Normalization(name="nyud_hha", mean=(132.431, 94.076, 118.477), std=(1.0, 1.0, 1.0), bgr=False, value_scale=1.0)
SIFTFLOW_BGR = Normalization(
    name="siftflow_bgr", mean=(114.578, 115.294, 108.353), std=(1.0, 1.0, 1.0), bgr=True, value_scale=1.0
)

PRESETS = {n.name: n for n in (PAPER_BGR, IMAGENET_RGB, NYUD_BGR, NYUD_HHA, SIFTFLOW_BGR)}


@dataclass(frozen=True)
class LogDepthNormalization:
    """A depth map as one input channel: ``x = log(max(depth, min_depth)) - mean`` (nyud_layers.py ``load_depth``).

    ``depth`` is the stored value (NYUD's ``data/depth`` PNGs: millimetres, so ``mean`` 7.844 is about 2.55 m).
    """

    name: str = "nyud_log_depth"
    mean: float = 7.844
    # Deviation: the reference takes log(depth) as stored, which is -inf at a 0 (missing) value; the
    # reference's hole-filled maps have none, but a raw Kinect map would, so values are clamped first.
    min_depth: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LogDepthNormalization":
        try:
            return cls(name=str(d["name"]), mean=float(d["mean"]), min_depth=float(d["min_depth"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"depth normalization {d!r} is malformed: {e}") from e

    def depth_to_tensor(self, depth: np.ndarray) -> torch.Tensor:
        """float ``[H, W]`` depth -> float32 ``[1, H, W]``."""
        x = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))
        return (x.clamp_min(self.min_depth).log() - self.mean)[None]


NYUD_LOG_DEPTH = LogDepthNormalization()


def normalization_from_dict(d: dict) -> "Normalization | LogDepthNormalization":
    """Either kind from its ``to_dict()``: a depth normalisation has ``min_depth``."""
    if isinstance(d, dict) and "min_depth" in d:
        return LogDepthNormalization.from_dict(d)
    return Normalization.from_dict(d)


@dataclass(frozen=True)
class InputSpec:
    """The inputs of a model that reads more than an RGB image: NYUD's modalities in channel order
    (``color+hha``, ``color+depth``, ``hha``...) and how each is normalised; stored in checkpoints, so
    that evaluation feeds the model what it was trained on."""

    modalities: str
    normalizations: dict  # modality -> Normalization | LogDepthNormalization

    def to_dict(self) -> dict:
        return {"modalities": self.modalities, "normalizations": {m: n.to_dict() for m, n in self.normalizations.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        try:
            return cls(str(d["modalities"]), {str(m): normalization_from_dict(n) for m, n in d["normalizations"].items()})
        except (KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"inputs {d!r} are malformed: {e}") from e


def get_normalization(name: str) -> Normalization:
    """Look up a preset by name (``paper_bgr`` or ``imagenet_rgb``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown normalization {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]

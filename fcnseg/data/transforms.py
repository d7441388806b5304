"""Training augmentations: random mirror, random scale, random crop with the mask padded by ignore, and the normalisation.

Every transform maps ``(image [C, H, W], mask int64 [H, W])`` to the same pair (or a mask ``[K, H, W]``,
one map per head, all moved alike). The image is either already normalised (float32: padding it with 0
means padding with the mean pixel, as the reference Caffe crop does), or still the stored RGB uint8
(the training pipeline: mirror, scale and crop on a quarter of the bytes, then :class:`Normalize` on the
crop alone, which also adds the mean-pixel padding a uint8 crop leaves out). Padded mask pixels get 255
and are neither trained on nor scored. The random draws are the same for both, in the same order. Each
transform describes itself with ``to_dict()`` for the run record.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fcnseg.data.classes import IGNORE_INDEX
from fcnseg.data.normalization import Normalization
from fcnseg.errors import ConfigError

Pair = tuple[torch.Tensor, torch.Tensor]


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: list) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        for transform in self.transforms:
            image, mask = transform(image, mask)
        return image, mask

    def to_dict(self) -> dict:
        return {"name": "compose", "transforms": [t.to_dict() for t in self.transforms]}

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomMirror:
    """Flip image and mask left-right with probability ``p`` (the paper's "random mirroring", section 4.3)."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        self.p = p
        self.generator = generator

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        if torch.rand((), generator=self.generator).item() < self.p:
            return image.flip(-1), mask.flip(-1)
        return image, mask

    def to_dict(self) -> dict:
        return {"name": "random_mirror", "p": self.p}

    def __repr__(self) -> str:
        return f"RandomMirror(p={self.p})"


class RandomScale:
    """Resize by a factor drawn uniformly from ``[min_scale, max_scale]``: image bilinear, mask nearest.

    Output: image ``[C, round(s H), round(s W)]``, mask ``[(K,) round(s H), round(s W)]`` (at least 1 pixel).
    """

    def __init__(self, min_scale: float = 0.5, max_scale: float = 2.0, generator: torch.Generator | None = None) -> None:
        if not 0 < min_scale <= max_scale:
            raise ConfigError(f"scale range must satisfy 0 < min <= max, found [{min_scale}, {max_scale}]")
        self.min_scale, self.max_scale = min_scale, max_scale
        self.generator = generator

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        u = torch.rand((), generator=self.generator).item()
        scale = self.min_scale + (self.max_scale - self.min_scale) * u
        h, w = mask.shape[-2:]
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        if size == (h, w):
            return image, mask
        # a uint8 image is interpolated in uint8 (values rounded), several times faster than in float
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        # nearest keeps labels (and 255) exact; interpolating class indices would invent classes
        maps = mask.reshape(1, -1, h, w)  # [1, K, H, W], K = 1 for a single head
        maps = maps if maps.dtype == torch.uint8 else maps.float()
        mask = F.interpolate(maps, size=size, mode="nearest")[0].to(mask.dtype).reshape(*mask.shape[:-2], *size)
        return image, mask

    def to_dict(self) -> dict:
        return {"name": "random_scale", "min_scale": self.min_scale, "max_scale": self.max_scale}

    def __repr__(self) -> str:
        return f"RandomScale({self.min_scale}, {self.max_scale})"


class RandomCrop:
    """Crop a random ``size = (height, width)`` window; smaller inputs are first padded bottom/right
    with 0 (the mean pixel after normalisation) and the mask with ``ignore_index``.

    A uint8 image is not normalised yet, so it has no mean-pixel value to pad with: it is cut to the
    window's part inside the image and :class:`Normalize` pads it to the mask's size.
    """

    def __init__(
        self, size: int | tuple[int, int], ignore_index: int = IGNORE_INDEX, generator: torch.Generator | None = None
    ) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if min(self.size) < 1:
            raise ConfigError(f"crop size must be positive, found {self.size}")
        self.ignore_index = ignore_index
        self.generator = generator

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        ch, cw = self.size
        h, w = mask.shape[-2:]
        pad_h, pad_w = max(0, ch - h), max(0, cw - w)
        if pad_h or pad_w:
            if image.dtype != torch.uint8:
                image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
            mask = F.pad(mask, (0, pad_w, 0, pad_h), value=self.ignore_index)
            h, w = h + pad_h, w + pad_w
        top = int(torch.randint(0, h - ch + 1, (), generator=self.generator))
        left = int(torch.randint(0, w - cw + 1, (), generator=self.generator))
        return image[:, top : top + ch, left : left + cw], mask[..., top : top + ch, left : left + cw]

    def to_dict(self) -> dict:
        return {"name": "random_crop", "size": list(self.size), "ignore_index": self.ignore_index}

    def __repr__(self) -> str:
        return f"RandomCrop({self.size})"


class Normalize:
    """RGB uint8 ``[3, h, w]`` -> the normalised float32 ``[3, H, W]`` of the mask's size ``H >= h, W >= w``,
    padded bottom/right with 0 (the mean pixel; see :class:`RandomCrop`); the mask int64. The last step of the
    uint8 pipeline: only the crop is converted to float."""

    def __init__(self, normalization: Normalization) -> None:
        self.normalization = normalization

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        if image.dtype != torch.uint8:
            raise TypeError(f"Normalize expects the stored uint8 image, got {image.dtype}")
        x = self.normalization.normalize(image)
        h, w = mask.shape[-2:]
        if x.shape[-2:] != (h, w):
            x = F.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2]), value=0.0)
        return x, mask.long()

    def to_dict(self) -> dict:
        return {"name": "normalize", "normalization": self.normalization.name}

    def __repr__(self) -> str:
        return f"Normalize({self.normalization.name!r})"


def train_transform(
    mirror: bool = True,
    scale_range: tuple[float, float] | None = None,
    crop_size: int | tuple[int, int] | None = None,
    ignore_index: int = IGNORE_INDEX,
    normalization: Normalization | None = None,
) -> Compose:
    """The usual training pipeline: mirror, then optionally scale, then optionally crop.

    The paper trains on whole images with mirroring only (section 4.3; random cropping "did not help");
    ``scale_range`` and ``crop_size`` are the common later additions, off by default. With
    ``normalization`` the pipeline takes the stored uint8 image and ends with :class:`Normalize`.
    """
    transforms: list = []
    if mirror:
        transforms.append(RandomMirror())
    if scale_range is not None:
        transforms.append(RandomScale(*scale_range))
    if crop_size is not None:
        transforms.append(RandomCrop(crop_size, ignore_index))
    if normalization is not None:
        transforms.append(Normalize(normalization))
    return Compose(transforms)

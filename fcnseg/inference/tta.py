"""Test-time augmentation: variants of an image (scales, horizontal flip), and their softmax probabilities averaged at input resolution.

``--tta flip`` averages the image and its mirror; ``--tta scales=0.75,1,1.25`` three resized copies,
``scales=0.75,1,1.25,flip`` each of them and its mirror. Each variant is predicted on its own (and
tiled on its own grid by the predictor, so that tiled and whole-image TTA agree), its probabilities
mirrored back and resized bilinearly to the input size, and the mean taken.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fcnseg.errors import ConfigError
from fcnseg.files import plural

MIN_SCALE, MAX_SCALE = 0.1, 4.0


@dataclass(frozen=True)
class Variant:
    """One test-time variant: resize by ``scale``, then mirror left-right when ``flip``."""

    scale: float = 1.0
    flip: bool = False

    def __str__(self) -> str:
        return f"{self.scale:g}{' flipped' if self.flip else ''}"


def parse_tta(text: str | None) -> tuple[Variant, ...]:
    """``--tta`` -> its variants: ``"flip"``, ``"scales=0.75,1,1.25"``, ``"scales=0.75,1,1.25,flip"``; None/"none" -> ``()``.

    Raises:
        ConfigError: naming the text and what was expected.
    """
    if text is None or text.strip().lower() in ("", "none"):
        return ()
    words = text.strip().lower()
    expected = "expected 'flip', 'scales=S1,S2,...' or 'scales=S1,S2,...,flip' (e.g. scales=0.75,1,1.25,flip)"
    if words == "flip":
        return (Variant(1.0, False), Variant(1.0, True))
    if not words.startswith("scales="):
        raise ConfigError(f"--tta {text!r}: {expected}")
    items = [w.strip() for w in words[len("scales="):].split(",") if w.strip()]
    flip = "flip" in items
    scales = []
    for item in (w for w in items if w != "flip"):
        try:
            scale = float(item)
        except ValueError:
            raise ConfigError(f"--tta {text!r}: {item!r} is not a scale; {expected}") from None
        if not MIN_SCALE <= scale <= MAX_SCALE:
            raise ConfigError(f"--tta {text!r}: scale {scale:g} is outside {MIN_SCALE:g}..{MAX_SCALE:g}")
        scales.append(scale)
    if not scales:
        raise ConfigError(f"--tta {text!r}: no scales; {expected}")
    if len(set(scales)) != len(scales):
        raise ConfigError(f"--tta {text!r}: a scale is listed twice")
    return tuple(Variant(s, f) for s in scales for f in ((False, True) if flip else (False,)))


def describe_tta(variants: tuple[Variant, ...]) -> str:
    """``"4 variants: scales 0.75, 1 x (plain, flipped)"``-like one-liner for logs; ``"none"`` without TTA."""
    if not variants:
        return "none"
    return f"{plural(len(variants), 'variant')} ({', '.join(str(v) for v in variants)}), softmax averaged"


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(round(height * scale), round(width * scale))``, at least 1 each."""
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of float ``[N, C, H, W]`` (antialiased when shrinking, so small scales do not alias)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def transform_image(image: np.ndarray, variant: Variant) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> the variant's RGB uint8 ``[h, w, 3]`` (resized, rounded, mirrored)."""
    height, width = image.shape[:2]
    size = scaled_size(height, width, variant.scale)
    out = image
    if size != (height, width):
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        x = _resize(x, size).round_().clamp_(0, 255)
        out = x[0].permute(1, 2, 0).to(torch.uint8).numpy()
    if variant.flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def restore(probabilities: torch.Tensor, variant: Variant, height: int, width: int) -> torch.Tensor:
    """A variant's probabilities ``[..., C, h, w]`` mirrored back and resized to ``[..., C, height, width]`` (float32)."""
    p = probabilities.float()
    if variant.flip:
        p = p.flip(-1)
    if tuple(p.shape[-2:]) != (height, width):
        squeeze = p.dim() == 3
        p = _resize(p[None] if squeeze else p, (height, width))
        p = p[0] if squeeze else p
    return p


def reserved_bytes(num_classes: int, height: int, width: int, variants: tuple[Variant, ...]) -> int:
    """Bytes TTA holds beside one variant's forward: the float32 sum and one restored map at input size,
    and the largest variant's image (uint8) and float32 probabilities."""
    if not variants:
        return 0
    largest = max(scaled_size(height, width, v.scale)[0] * scaled_size(height, width, v.scale)[1] for v in variants)
    return 2 * num_classes * height * width * 4 + largest * (3 + num_classes * 4)


class TTAModel(nn.Module):
    """``model`` under test-time augmentation, for evaluation: ``x [N, 3, H, W]`` (normalised) -> mean softmax ``[N, C, H, W]``.

    The variants resize the normalised input bilinearly (the predictor resizes uint8 pixels, rounding
    them; otherwise the same). The argmax of the result is the TTA prediction.
    """

    def __init__(self, model: nn.Module, variants: tuple[Variant, ...]):
        super().__init__()
        if not variants:
            raise ValueError("TTAModel needs at least one variant")
        self.model = model
        self.variants = tuple(variants)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        total = None
        for v in self.variants:
            xv = _resize(x.float(), scaled_size(height, width, v.scale)).to(x.dtype)
            if v.flip:
                xv = xv.flip(-1)
            p = restore(self.model(xv).float().softmax(1), v, height, width)
            total = p if total is None else total.add_(p)
        return total.div_(len(self.variants))


__all__ = ["TTAModel", "Variant", "describe_tta", "parse_tta", "reserved_bytes", "restore", "scaled_size", "transform_image"]

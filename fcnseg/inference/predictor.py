"""Inference on images of any size: the fastest correct precision for the machine, and tiling in bounded memory.

:class:`Predictor` wraps a loaded FCN. On CUDA it runs float16 autocast; on a CPU with native bf16
(AVX-512 BF16 or AMX) it runs bf16 autocast on channels_last tensors; elsewhere float32, channels_last
where the CPU's kernels run it faster (AVX2-only CPUs). An image too large for the memory budget
is cut into tiles whose origins sit on the net's 32-pixel output grid, each with a margin of at least
the receptive field's context; only each tile's centre is kept, so tiled and whole-image predictions
agree up to floating-point rounding (see ``docs/inference.md``).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from fcnseg.data.normalization import Normalization
from fcnseg.errors import ConfigError, FcnsegError
from fcnseg.files import atomic_write, format_bytes
from fcnseg.inference.memory import estimate_forward
from fcnseg.models.batchnorm import fold_batch_norm
from fcnseg.models.fcn import FCN
from fcnseg.models.geometry import receptive_fields
from fcnseg.precision import cpu_has_native_bf16, dtype_of, resolve_precision, select_device

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "channels_last", "contiguous")
OUTPUT_STRIDE = 32  # every trunk here pools five times by 2 (AlexNet: 4 * 2 * 2 * 2)
DEFAULT_MAX_MEMORY = 2 * 1024**3  # bytes for weights + one tile's activations (the interpreter not included)


# --- machine and precision -------------------------------------------------------------------------


def select_layout(device: torch.device, precision: str, layout: str = "auto") -> str:
    """Resolve ``layout`` ("auto", "channels_last", "contiguous") for a resolved ``precision`` on ``device``.

    auto: channels_last for autocast (oneDNN's bf16 and cuDNN's fp16 convolutions want NHWC; in NCHW
    every layer pays a reorder). In float32 on the CPU it depends on oneDNN's kernels for the CPU:
    on AVX2-only CPUs channels_last runs the small net 1.2-1.7x and VGG16 1.04-1.1x faster, with AVX-512
    it is no faster (the transposed convolutions lose), so the plain layout is kept there
    (docs/inference.md gives the measurements).
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    if layout != "auto":
        return layout
    if precision != "fp32":
        return "channels_last"
    if device.type != "cpu":
        return "contiguous"
    return "contiguous" if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else "channels_last"


def check_predictable(model: FCN) -> None:
    """Raise unless ``model`` reads one 3-channel image and gives one label map: what prediction on image
    files draws. A NYUD net on HHA alone passes (an HHA PNG is a 3-channel image, normalised as trained).

    Raises:
        ConfigError: a net of other inputs (NYUD depth, colour + depth, colour + HHA) or of several heads
            (SIFT Flow), naming what scores or runs it instead.
    """
    cfg = model.config
    if cfg.in_channels != 3 or len(cfg.input_streams()) != 1:
        streams = ", ".join(f"{name} ({channels} channels)" for name, channels in cfg.input_streams())
        raise ConfigError(
            f"this {cfg.arch} reads {streams}, not one RGB image; prediction reads image files. Run it on a NYUD "
            "tree with 'fcnseg eval CHECKPOINT --data NYUD --save-predictions DIR' (label PNGs of every image), "
            "or from Python: fcnseg.checkpoint.load_model(CHECKPOINT).model(x) on the data set's items"
        )
    if len(model.heads) > 1:
        names = ", ".join(h.name for h in model.heads)
        raise ConfigError(
            f"this {cfg.arch} has the heads {names}; prediction writes one label map per image. Use "
            "'fcnseg eval CHECKPOINT --data ROOT --save-predictions DIR' (a folder of label PNGs per head), or "
            "from Python: fcnseg.checkpoint.load_model(CHECKPOINT).model(x) -> {head: logits}"
        )


# --- tiling ---------------------------------------------------------------------------------------


def context_margin(model: FCN) -> int:
    """Pixels of context a tile needs on each side so that its kept centre matches the whole-image result.

    Half the receptive field of fc7 (from the layers), plus one output stride for the bilinear
    upsampling that mixes neighbouring score cells and one for the skip fusion, rounded up to a
    multiple of the output stride so that tile origins stay on the net's grid.
    """
    rf = receptive_fields(model.backbone.named_children())[-1][1]
    need = rf.size // 2 + 2 * rf.stride
    return int(math.ceil(need / OUTPUT_STRIDE) * OUTPUT_STRIDE)


@dataclass(frozen=True)
class Tile:
    """One tile: the input window ``[in_y0:in_y1, in_x0:in_x1]`` and the centre ``[y0:y1, x0:x1]`` kept from it."""

    y0: int
    y1: int
    x0: int
    x1: int
    in_y0: int
    in_y1: int
    in_x0: int
    in_x1: int


@dataclass(frozen=True)
class TilePlan:
    """How an image is cut: ``tile`` x ``tile`` centres on a grid from the origin, each read with ``margin`` around it.

    ``tile >= max(height, width)`` means one forward on the whole image.
    """

    height: int
    width: int
    tile: int
    margin: int

    @property
    def whole(self) -> bool:
        return self.tile >= self.height and self.tile >= self.width

    @property
    def num_tiles(self) -> int:
        return math.ceil(self.height / self.tile) * math.ceil(self.width / self.tile)

    def bands(self) -> Iterator[list[Tile]]:
        """Rows of tiles, top to bottom; each row covers image rows ``[y0, y1)`` of its tiles."""
        for y0 in range(0, self.height, self.tile):
            y1 = min(y0 + self.tile, self.height)
            row = []
            for x0 in range(0, self.width, self.tile):
                x1 = min(x0 + self.tile, self.width)
                # Origins are multiples of the output stride: tile and margin both are.
                row.append(
                    Tile(
                        y0, y1, x0, x1,
                        max(0, y0 - self.margin), min(self.height, y1 + self.margin),
                        max(0, x0 - self.margin), min(self.width, x1 + self.margin),
                    )
                )
            yield row


def plan_tiles(height: int, width: int, tile: int, margin: int) -> TilePlan:
    """A plan with ``tile``-pixel centres (rounded down to a multiple of 32, at least 32)."""
    if margin % OUTPUT_STRIDE:
        raise ConfigError(f"tile margin must be a multiple of {OUTPUT_STRIDE} pixels, got {margin}")
    tile = max(OUTPUT_STRIDE, tile // OUTPUT_STRIDE * OUTPUT_STRIDE)
    return TilePlan(height, width, tile, margin)


# --- results --------------------------------------------------------------------------------------


@dataclass
class Prediction:
    """What :meth:`Predictor.predict` returns.

    Attributes:
        labels: uint8 ``[H, W]`` class indices (int32 for more than 256 classes).
        probabilities: float16 ``[C, H, W]`` softmax probabilities when asked for in memory, else None.
        plan: the tiling used (``plan.whole`` for a single forward).
        precision: the precision the forward ran in.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    plan: TilePlan
    precision: str

    def class_pixels(self, num_classes: int) -> np.ndarray:
        """int64 ``[num_classes]`` pixel count of each predicted class."""
        return np.bincount(self.labels.ravel(), minlength=num_classes)[:num_classes]


class ProbabilityFile:
    """A float16 ``[C, H, W]`` ``.npy`` file filled row band by row band, then renamed into place.

    Keeps only one band of probabilities in memory: the file is written with seeks, one contiguous
    run of rows per class and band.
    """

    def __init__(self, path: str | Path, num_classes: int, height: int, width: int):
        self.path = Path(path)
        self.shape = (num_classes, height, width)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp.npy")
        self.file = open(self.tmp, "wb")
        header = {"descr": np.dtype(np.float16).str, "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_1_0(self.file, header)
        self.offset = self.file.tell()
        self.file.truncate(self.offset + num_classes * height * width * 2)

    def write_band(self, y0: int, band: np.ndarray) -> None:
        """Write float16 ``[C, h, W]`` rows ``y0 .. y0 + h``."""
        c, h, w = self.shape
        for k in range(c):
            self.file.seek(self.offset + (k * h * w + y0 * w) * 2)
            self.file.write(np.ascontiguousarray(band[k], dtype=np.float16).tobytes())

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


# --- the predictor --------------------------------------------------------------------------------


class Predictor:
    """Run an FCN on RGB images of any size, in the fastest correct way the machine allows.

    Args:
        model: an :class:`~fcnseg.models.fcn.FCN` (put in eval mode here).
        normalization: how RGB uint8 pixels become the model's input.
        class_names: one name per class.
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1"...
        precision: "auto" | "fp32" | "bf16" | "fp16" (see :mod:`fcnseg.precision`).
        layout: "auto" | "channels_last" | "contiguous" memory layout of the activations (see
            :func:`select_layout`).
        compile: wrap the model in ``torch.compile`` (off by default: on CPU it recompiles for every
            new input size and does not pay for mixed-size folders).
        max_memory: bytes for weights plus one forward's activations; images whose estimate exceeds it
            are tiled (see :mod:`fcnseg.inference.memory`). ``None``: never tile.
        tile: force a tile size in pixels (rounded down to a multiple of 32); ``None`` = automatic.
        margin: context pixels around each tile; ``None`` = :func:`context_margin`.
    """

    def __init__(
        self,
        model: FCN,
        normalization: Normalization,
        class_names: list[str] | None = None,
        *,
        device: str = "auto",
        precision: str = "auto",
        layout: str = "auto",
        compile: bool = False,
        max_memory: int | None = DEFAULT_MAX_MEMORY,
        tile: int | None = None,
        margin: int | None = None,
    ):
        check_predictable(model)
        self.device = select_device(device)
        self.precision = resolve_precision(precision, self.device)
        # BatchNorm (the small net's) is merged into its convolutions: same scores, one layer less each.
        self.model = fold_batch_norm(model.eval()).to(self.device)
        self.normalization = normalization
        self.num_classes = model.config.num_classes
        self.class_names = list(class_names) if class_names else [f"class_{i}" for i in range(self.num_classes)]
        self.autocast_dtype = dtype_of(self.precision)
        self.channels_last = select_layout(self.device, self.precision, layout) == "channels_last"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = torch.compile(self.model, dynamic=True) if compile else self.model
        self.max_memory = max_memory
        self.tile = tile
        self.margin = context_margin(model) if margin is None else int(margin)
        if self.margin % OUTPUT_STRIDE:
            raise ConfigError(f"tile margin must be a multiple of {OUTPUT_STRIDE} pixels, got {self.margin}")

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> "Predictor":
        """Load any weights file :func:`fcnseg.checkpoint.load_model` reads and wrap it."""
        from fcnseg.checkpoint import load_model

        loaded = load_model(path)
        return cls(loaded.model, loaded.normalization, loaded.class_names, **kwargs)

    def describe(self) -> str:
        cfg = self.model.config
        return (
            f"{cfg.arch} ({cfg.backbone}, {self.num_classes} classes) on {self.device}, precision {self.precision}"
            f"{', channels_last' if self.channels_last else ''}{', compiled' if self.net is not self.model else ''}"
        )

    # -- the forward --

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input float32 ``[N, 3, H, W]`` -> float32 logits ``[N, C, H, W]`` (one forward, no tiling)."""
        with torch.inference_mode():
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.autocast_dtype is not None:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                    y = self.net(x)
            else:
                y = self.net(x)
            return y.float()

    # -- planning --

    def estimate(self, height: int, width: int):
        """:class:`~fcnseg.inference.memory.MemoryEstimate` of one forward on a ``height x width`` input."""
        return estimate_forward(self.model, height, width, self.precision)

    def plan(self, height: int, width: int, probability_band: bool = False) -> TilePlan:
        """Choose the tiling of a ``height x width`` image: whole if it fits ``max_memory``, else the largest tile that does.

        Args:
            probability_band: also budget a float16 band of probabilities ``[C, tile, width]``.
        Raises:
            FcnsegError: not even a 32-pixel tile fits the budget.
        """
        if self.tile is not None:
            return plan_tiles(height, width, self.tile, self.margin)
        side = max(height, width)
        whole = TilePlan(height, width, int(math.ceil(side / OUTPUT_STRIDE) * OUTPUT_STRIDE), self.margin)
        if self.max_memory is None:
            return whole

        # The decoded uint8 image and the label map are held for the whole image whatever the tiling.
        fixed = 3 * height * width + np.dtype(np.uint8 if self.num_classes <= 256 else np.int32).itemsize * height * width

        def cost(tile: int) -> int:
            h, w = min(height, tile + 2 * self.margin), min(width, tile + 2 * self.margin)
            if tile >= height and tile >= width:
                h, w = height, width
            band = self.num_classes * min(tile, height) * width * 2 if probability_band else 0
            return self.estimate(h, w).total + band + fixed

        if cost(whole.tile) <= self.max_memory:
            return whole
        lo, hi = 0, whole.tile // OUTPUT_STRIDE  # in units of the stride; cost grows with the tile
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if cost(mid * OUTPUT_STRIDE) <= self.max_memory:
                lo = mid
            else:
                hi = mid - 1
        if lo == 0:
            raise FcnsegError(
                f"a {width}x{height} image needs {format_bytes(cost(OUTPUT_STRIDE))} even in {OUTPUT_STRIDE}-pixel tiles "
                f"with {self.margin}-pixel margins ({self.model.config.arch}/{self.model.config.backbone}, {self.precision}; "
                f"the weights alone take {format_bytes(self.estimate(OUTPUT_STRIDE, OUTPUT_STRIDE).weights)}), "
                f"more than the memory budget of {format_bytes(self.max_memory)}; raise --max-memory"
            )
        return TilePlan(height, width, lo * OUTPUT_STRIDE, self.margin)

    # -- prediction --

    def predict(
        self,
        image: np.ndarray,
        probabilities: bool = False,
        probabilities_path: str | Path | None = None,
    ) -> Prediction:
        """Segment one RGB uint8 image ``[H, W, 3]``.

        Args:
            probabilities: also return float16 ``[C, H, W]`` softmax probabilities in memory
                (``C * H * W * 2`` bytes: for a 6000x4000 scan and 21 classes, 1 GB).
            probabilities_path: stream float16 ``[C, H, W]`` probabilities into this ``.npy`` file
                band by band instead, holding one band in memory (written atomically).
        Returns:
            Prediction with uint8 labels ``[H, W]``.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {list(image.shape)}")
        height, width = image.shape[:2]
        plan = self.plan(height, width, probability_band=probabilities_path is not None)
        if not plan.whole and self.tile is None:
            log.info("%dx%d image in %d tiles of %d+2x%d px to stay within the memory budget of %s "
                     "(whole it would need %s; a larger --max-memory means fewer, faster tiles)",
                     width, height, plan.num_tiles, plan.tile, plan.margin, format_bytes(self.max_memory or 0),
                     format_bytes(self.estimate(height, width).total))
        labels = np.empty((height, width), dtype=np.uint8 if self.num_classes <= 256 else np.int32)
        in_memory = np.empty((self.num_classes, height, width), dtype=np.float16) if probabilities else None
        writer = ProbabilityFile(probabilities_path, self.num_classes, height, width) if probabilities_path else None
        try:
            for row in plan.bands():
                band = None
                if writer is not None:
                    band = np.empty((self.num_classes, row[0].y1 - row[0].y0, width), dtype=np.float16)
                for t in row:
                    x = normalize_tile(image[t.in_y0 : t.in_y1, t.in_x0 : t.in_x1], self.normalization, self.channels_last)
                    logits = self.logits(x)[0]  # [C, h, w]
                    del x
                    core = logits[:, t.y0 - t.in_y0 : t.y1 - t.in_y0, t.x0 - t.in_x0 : t.x1 - t.in_x0]
                    # max().indices follows argmax's first-maximum rule and runs several times faster on CPU
                    labels[t.y0 : t.y1, t.x0 : t.x1] = core.max(0).indices.cpu().numpy()
                    if in_memory is not None or band is not None:
                        prob = core.softmax(0).half().cpu().numpy()
                        if in_memory is not None:
                            in_memory[:, t.y0 : t.y1, t.x0 : t.x1] = prob
                        if band is not None:
                            band[:, :, t.x0 : t.x1] = prob
                    del logits, core
                if writer is not None:
                    writer.write_band(row[0].y0, band)
            if writer is not None:
                writer.close()
                writer = None
        finally:
            if writer is not None:
                writer.abort()
        return Prediction(labels, in_memory, plan, self.precision)


def normalize_tile(pixels: np.ndarray, normalization: Normalization, channels_last: bool = False) -> torch.Tensor:
    """RGB uint8 ``[h, w, 3]`` -> normalised float32 ``[1, 3, h, w]``, the same values as ``image_to_tensor``.

    Works in place after one float copy (plus one for the BGR flip): ``image_to_tensor``'s
    out-of-place arithmetic holds three or four float copies at once, which for a whole 24-megapixel
    scan is more than the small net's activations. With ``channels_last`` the result keeps the
    pixels' own HWC layout, which is channels_last already: no further copy before the forward.
    """
    x = torch.from_numpy(np.array(pixels, dtype=np.float32)).permute(2, 0, 1)[None]  # HWC memory = channels_last
    if normalization.bgr:
        x = x.flip(1)  # keeps the channels_last layout
    if not channels_last:
        x = x.contiguous()
    mean = torch.tensor(normalization.mean).view(1, 3, 1, 1)
    std = torch.tensor(normalization.std).view(1, 3, 1, 1)
    return x.mul_(normalization.value_scale).sub_(mean).div_(std)


def class_areas(labels: np.ndarray, class_names: list[str]) -> dict:
    """Per-class pixel counts and fractions of a label map: ``{"pixels": {name: n}, "fraction": {name: f}}``."""
    counts = np.bincount(np.asarray(labels).ravel(), minlength=len(class_names))[: len(class_names)]
    total = max(int(np.asarray(labels).size), 1)
    return {
        "pixels": {name: int(n) for name, n in zip(class_names, counts)},
        "fraction": {name: float(n) / total for name, n in zip(class_names, counts)},
    }


def save_probabilities(probabilities: np.ndarray, path: str | Path) -> None:
    """Write a float16 ``[C, H, W]`` array as ``.npy``, atomically."""
    atomic_write(path, lambda tmp: np.save(tmp, probabilities.astype(np.float16, copy=False)))


__all__ = [
    "DEFAULT_MAX_MEMORY",
    "Prediction",
    "Predictor",
    "ProbabilityFile",
    "Tile",
    "TilePlan",
    "class_areas",
    "context_margin",
    "cpu_has_native_bf16",
    "plan_tiles",
    "select_device",
]

"""Inference on images of any size: the fastest correct precision and layout for the machine, tiles within a memory budget.

:class:`Predictor` wraps a loaded FCN. On CUDA it runs float16 autocast; on a CPU with native bf16
(AVX-512 BF16 or AMX) it runs bf16 autocast on channels_last tensors; elsewhere float32, channels_last
where the CPU's kernels run it faster (AVX2-only CPUs). An image whose forward would not fit the
memory budget (:mod:`fcnseg.inference.memory`) is cut into tiles (:mod:`fcnseg.inference.tiling`);
only each tile's centre is kept, so tiled and whole-image predictions agree up to floating-point
rounding (see ``docs/inference.md``).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

import numpy as np
import torch

from fcnseg.data.normalization import Normalization
from fcnseg.errors import ConfigError, FcnsegError
from fcnseg.files import atomic_open, format_bytes
from fcnseg.inference.forward import class_indices, forward_logits, normalize_pixels
from fcnseg.inference.memory import MemoryEstimate, estimate_forward
from fcnseg.inference.tiling import (
    OUTPUT_STRIDE,
    Tile,
    TilePlan,
    check_margin,
    context_margin,
    largest_plan,
    plan_tiles,
    whole_image,
)
from fcnseg.models.batchnorm import fold_batch_norm
from fcnseg.models.fcn import FCN
from fcnseg.precision import dtype_of, resolve_precision, select_device

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "channels_last", "contiguous")
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


class ProbabilityFile:
    """A float16 ``[C, H, W]`` ``.npy`` file filled row band by row band, with seeks.

    Keeps only one band of probabilities in memory: one contiguous run of rows per class and band
    is written into the file at its place. Open it with :meth:`create`, which writes through
    :func:`fcnseg.files.atomic_open`: the file appears complete when the block ends, or not at all.
    """

    def __init__(self, file: IO[bytes], num_classes: int, height: int, width: int):
        self.file = file
        self.shape = (num_classes, height, width)
        header = {"descr": np.dtype(np.float16).str, "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_1_0(file, header)
        self.offset = file.tell()
        file.truncate(self.offset + num_classes * height * width * 2)

    @classmethod
    @contextlib.contextmanager
    def create(cls, path: str | Path, num_classes: int, height: int, width: int) -> Iterator["ProbabilityFile"]:
        """``with ProbabilityFile.create(path, C, H, W) as f: f.write_band(...)``; renamed into place on success."""
        with atomic_open(path, "wb") as file:
            yield cls(file, num_classes, height, width)

    def write_band(self, y0: int, band: np.ndarray) -> None:
        """Write float16 ``[C, h, W]`` rows ``y0 .. y0 + h``."""
        c, h, w = self.shape
        for k in range(c):
            self.file.seek(self.offset + (k * h * w + y0 * w) * 2)
            self.file.write(np.ascontiguousarray(band[k], dtype=np.float16).tobytes())


# --- the predictor --------------------------------------------------------------------------------


def _on_grid(n: int) -> int:
    """``n`` rounded up to the output grid."""
    return -(-n // OUTPUT_STRIDE) * OUTPUT_STRIDE


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
        margin: context pixels around each tile; ``None`` = :func:`~fcnseg.inference.tiling.context_margin`.
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
        self.margin = check_margin(context_margin(model) if margin is None else int(margin))
        self._estimates: dict[tuple[int, int, bool], MemoryEstimate] = {}

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
            return forward_logits(self.net, x, self.autocast_dtype)

    # -- planning --

    def estimate(self, height: int, width: int, probabilities: bool = False) -> MemoryEstimate:
        """:class:`~fcnseg.inference.memory.MemoryEstimate` of one tile's forward on a ``height x width`` input.

        Counts what :meth:`predict` holds for a tile: its normalisation, the forward in this
        predictor's precision and layout, the float32 logits and labels (and, with
        ``probabilities``, their softmax). Estimates are kept, one per size.
        """
        key = (height, width, probabilities)
        if key not in self._estimates:
            if len(self._estimates) > 4096:  # a folder of many sizes: keep the memory of the cache bounded
                self._estimates.clear()
            self._estimates[key] = estimate_forward(
                self.model, height, width, self.precision,
                normalization=self.normalization, channels_last=self.channels_last, probabilities=probabilities,
            )
        return self._estimates[key]

    def plan(self, height: int, width: int, probability_band: bool = False) -> TilePlan:
        """Choose the tiling of a ``height x width`` image: whole if it fits ``max_memory``, else the largest tile that does.

        Args:
            probability_band: also budget the softmax and a float16 band of probabilities ``[C, tile, width]``.
        Raises:
            FcnsegError: not even a 32-pixel tile fits the budget.
        """
        if self.tile is not None:
            return plan_tiles(height, width, self.tile, self.margin)
        if self.max_memory is None:
            return whole_image(height, width, self.margin)

        # The decoded uint8 image and the label map are held for the whole image whatever the tiling.
        fixed = 3 * height * width + np.dtype(np.uint8 if self.num_classes <= 256 else np.int32).itemsize * height * width

        def cost(plan: TilePlan) -> int:
            h, w = plan.input_size()
            # Estimated on the 32-pixel grid: memory never shrinks as the input grows, and a folder of
            # mixed sizes then shares a few estimates.
            forward = self.estimate(_on_grid(h), _on_grid(w), probability_band).total
            band = self.num_classes * min(plan.tile, height) * width * 2 if probability_band else 0
            return forward + band + fixed

        found = largest_plan(height, width, self.margin, cost, self.max_memory)
        if found is None:
            smallest = TilePlan(height, width, OUTPUT_STRIDE, self.margin)
            raise FcnsegError(
                f"a {width}x{height} image needs {format_bytes(cost(smallest))} even in {OUTPUT_STRIDE}-pixel tiles "
                f"with {self.margin}-pixel margins ({self.model.config.arch}/{self.model.config.backbone}, {self.precision}; "
                f"the weights alone take {format_bytes(self.estimate(OUTPUT_STRIDE, OUTPUT_STRIDE).weights)}), "
                f"more than the memory budget of {format_bytes(self.max_memory)}; raise --max-memory"
            )
        return found

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
                     format_bytes(self.estimate(_on_grid(height), _on_grid(width)).total))
        labels = np.empty((height, width), dtype=np.uint8 if self.num_classes <= 256 else np.int32)
        in_memory = np.empty((self.num_classes, height, width), dtype=np.float16) if probabilities else None
        with contextlib.ExitStack() as stack:
            writer = None
            if probabilities_path is not None:
                writer = stack.enter_context(ProbabilityFile.create(probabilities_path, self.num_classes, height, width))
            for row in plan.bands():
                band = None
                if writer is not None:
                    band = np.empty((self.num_classes, row[0].y1 - row[0].y0, width), dtype=np.float16)
                for t in row:
                    self._predict_tile(image, t, labels, in_memory, band)
                if writer is not None:
                    writer.write_band(row[0].y0, band)
        return Prediction(labels, in_memory, plan, self.precision)

    def _predict_tile(self, image: np.ndarray, t: Tile, labels: np.ndarray, in_memory, band) -> None:
        """Run one tile and write its kept centre into ``labels`` (and the probability arrays given)."""
        x = normalize_tile(image[t.in_y0 : t.in_y1, t.in_x0 : t.in_x1], self.normalization, self.channels_last)
        logits = self.logits(x)[0]  # [C, h, w]
        del x
        core = logits[:, t.y0 - t.in_y0 : t.y1 - t.in_y0, t.x0 - t.in_x0 : t.x1 - t.in_x0]
        labels[t.y0 : t.y1, t.x0 : t.x1] = class_indices(core, 0).cpu().numpy()
        if in_memory is not None or band is not None:
            prob = core.softmax(0).half().cpu().numpy()
            if in_memory is not None:
                in_memory[:, t.y0 : t.y1, t.x0 : t.x1] = prob
            if band is not None:
                band[:, :, t.x0 : t.x1] = prob


def normalize_tile(pixels: np.ndarray, normalization: Normalization, channels_last: bool = False) -> torch.Tensor:
    """RGB uint8 ``[h, w, 3]`` -> normalised float32 ``[1, 3, h, w]``, the same values as ``image_to_tensor``.

    See :func:`~fcnseg.inference.forward.normalize_pixels` (one float copy, in place after it).
    """
    return normalize_pixels(torch.from_numpy(pixels)[None], normalization, channels_last)


__all__ = [
    "DEFAULT_MAX_MEMORY",
    "LAYOUTS",
    "Prediction",
    "Predictor",
    "ProbabilityFile",
    "normalize_tile",
    "select_layout",
]

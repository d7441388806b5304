"""Inference on images of any size: the fastest correct precision and layout for the machine, tiles within a memory budget.

:class:`Predictor` wraps a *net* (:mod:`fcnseg.inference.runtime`): a loaded FCN run by PyTorch, or an
fcnseg ``.onnx`` file (fp32 or int8) run by ONNX Runtime. With PyTorch on CUDA it runs float16
autocast; on a CPU with native bf16 (AVX-512 BF16 or AMX) bf16 autocast on channels_last tensors;
elsewhere float32, channels_last where the CPU's kernels run it faster (AVX2-only CPUs). An image
whose forward would not fit the memory budget (:mod:`fcnseg.inference.memory`) is cut into tiles
(:mod:`fcnseg.inference.tiling`); only each tile's centre is kept, so tiled and whole-image
predictions agree up to floating-point rounding, whichever runtime runs the tiles, and under
test-time augmentation (:mod:`fcnseg.inference.tta`), whose variants are tiled one by one (see
``docs/inference.md``).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator

import numpy as np
import torch

from fcnseg.data.normalization import Normalization
from fcnseg.errors import FcnsegError
from fcnseg.files import atomic_open, format_bytes, plural
from fcnseg.inference import tta as tta_variants
from fcnseg.inference.confidence import check_kind, confidence_from_probabilities
from fcnseg.inference.forward import class_indices, normalize_pixels
from fcnseg.inference.memory import MemoryEstimate
from fcnseg.inference.runtime import LAYOUTS, OrtNet, TorchNet, runtime_for, select_layout
from fcnseg.inference.tiling import (
    OUTPUT_STRIDE,
    Tile,
    TilePlan,
    check_margin,
    largest_plan,
    plan_tiles,
    whole_image,
)
from fcnseg.models.fcn import FCN
from fcnseg.weights.handle import LoadedModel

log = logging.getLogger(__name__)

DEFAULT_MAX_MEMORY = 2 * 1024**3  # bytes for weights + one tile's activations (the interpreter not included)

TileCallback = Callable[[int, int], None]  # on_tile(done, total): after each tile's forward, 1-based, in order


# --- results --------------------------------------------------------------------------------------


@dataclass
class Prediction:
    """What :meth:`Predictor.predict` returns.

    Attributes:
        labels: uint8 ``[H, W]`` class indices (int32 for more than 256 classes).
        probabilities: float16 ``[C, H, W]`` softmax probabilities when asked for in memory, else None.
        plan: the tiling used (``plan.whole`` for a single forward; under TTA, the plan of the variant
            with the most tiles).
        precision: the precision the forward ran in ("int8" for a quantized ONNX file).
        variants: the test-time variants averaged (empty without TTA).
        confidence: float32 ``[H, W]`` per-pixel confidence in ``[0, 1]`` when asked for
            (:mod:`fcnseg.inference.confidence`), else None.
        confidence_kind: the measure of ``confidence`` ("max", "margin" or "entropy"), else None.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    plan: TilePlan
    precision: str
    variants: tuple = ()
    confidence: np.ndarray | None = None
    confidence_kind: str | None = None


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
        model: the model handle (:func:`fcnseg.load_model`'s :class:`~fcnseg.weights.handle.LoadedModel`: a
            checkpoint run by PyTorch, or an ``.onnx`` file run by ONNX Runtime), which brings its normalisation,
            class names and palette; or a bare :class:`~fcnseg.models.fcn.FCN` with ``normalization`` and
            ``class_names``; or None with ``net``.
        normalization: how RGB uint8 pixels become a bare FCN's input.
        class_names: a bare FCN's class names.
        net: instead of ``model``, any runtime of :mod:`fcnseg.inference.runtime` (``net(pixels uint8
            [N, H, W, 3]) -> float32 logits [N, C, H, W]``, with ``estimate`` and ``margin``), e.g. an
            :class:`~fcnseg.inference.runtime.OrtNet`.
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1"... (with ``model``)
        precision: "auto" | "fp32" | "bf16" | "fp16" (see :mod:`fcnseg.precision`; with ``model``).
        layout: "auto" | "channels_last" | "contiguous" memory layout of the activations (see
            :func:`~fcnseg.inference.runtime.select_layout`; with ``model``).
        compile: wrap the model in ``torch.compile`` (off by default: on CPU it recompiles for every
            new input size and does not pay for mixed-size folders).
        max_memory: bytes for weights plus one forward's activations; images whose estimate exceeds it
            are tiled (see :mod:`fcnseg.inference.memory`). ``None``: never tile.
        tile: force a tile size in pixels (rounded down to a multiple of 32); ``None`` = automatic.
        margin: context pixels around each tile; ``None`` = the net's
            (:func:`~fcnseg.inference.tiling.context_margin` of its layers).
        tta: test-time variants (:func:`fcnseg.inference.tta.parse_tta`); empty: none.
        temperature: divides the logits before every softmax (probabilities and confidence, never the labels);
            ``None`` = the model's own (:attr:`~fcnseg.weights.handle.LoadedModel.temperature`, 1 when uncalibrated).
    """

    def __init__(
        self,
        model: LoadedModel | FCN | None = None,
        normalization: Normalization | None = None,
        class_names: list[str] | None = None,
        *,
        net=None,
        device: str = "auto",
        precision: str = "auto",
        layout: str = "auto",
        compile: bool = False,
        max_memory: int | None = DEFAULT_MAX_MEMORY,
        tile: int | None = None,
        margin: int | None = None,
        tta: tuple = (),
        temperature: float | None = None,
    ):
        if (model is None) == (net is None):
            raise ValueError("give a model (run by PyTorch) or a net, not both")
        if model is not None and not isinstance(model, LoadedModel):  # a bare module (an FCN, a ResNet FCN)
            if normalization is None:
                raise ValueError("a bare FCN needs its normalization (a model handle from load_model() brings its own)")
            model = LoadedModel(model, model.config, list(class_names or []), normalization, "memory")
        if model is not None:
            # A handle prepared already (its runtime chosen by measurement) keeps its plan unless flags say otherwise.
            if model.onnx_info is None and (model.plan is None or (device, precision, layout) != ("auto", "auto", "auto")):
                model.prepare(device, precision, layout)
            # Under a memory budget ONNX Runtime's arena is off: tiles of several shapes would grow it past the plan.
            net = runtime_for(model, compile=compile, memory_arena=max_memory is None)
            class_names = model.class_names
        self.handle = getattr(net, "handle", None)
        self.runtime = net
        self.normalization = net.normalization
        self.num_classes = net.num_classes
        self.class_names = list(class_names) if class_names else [f"class_{i}" for i in range(self.num_classes)]
        if self.handle is not None:
            self.palette = self.handle.palette
        self.max_memory = max_memory
        self.tile = tile
        self.margin = check_margin(net.margin if margin is None else int(margin))
        self.tta = tuple(tta)
        if temperature is None:
            temperature = getattr(self.handle, "temperature", 1.0) if self.handle is not None else 1.0
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self._estimates: dict[tuple[int, int, bool], MemoryEstimate] = {}

    # What the PyTorch runtime holds (None or neutral values under ONNX Runtime).
    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def precision(self) -> str:
        return self.runtime.precision

    @property
    def config(self):
        """The architecture: a :class:`~fcnseg.config.ModelConfig` (arch, backbone, num_classes)."""
        return self.runtime.config

    @property
    def model(self):
        """The torch module the PyTorch runtime runs (BatchNorm folded), or None under ONNX Runtime."""
        return getattr(self.runtime, "model", None)

    @property
    def net(self):
        """The torch callable the PyTorch runtime runs (the compiled model when compiled), or None."""
        return getattr(self.runtime, "net", None) if isinstance(self.runtime, TorchNet) else None

    @property
    def channels_last(self) -> bool:
        return self.runtime.channels_last

    @property
    def autocast_dtype(self):
        return self.runtime.autocast_dtype

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, runtime: str | None = None, device: str = "auto", precision: str = "auto",
                        layout: str = "auto", compile: bool = False, image: np.ndarray | None = None,
                        **kwargs) -> "Predictor":
        """Load a model file (anything :func:`fcnseg.load_model` reads: a checkpoint, or an fcnseg ``.onnx``, fp32 or
        int8) and wrap it, run by the runtime ``runtime`` names: "auto" (default; ``$FCNSEG_RUNTIME`` overrides the
        default) times PyTorch, ONNX Runtime and OpenVINO on ``image`` (the first input, uint8 ``[H, W, 3]``; None: a
        500x500 stand-in) once per model file and CPU and keeps the fastest that agrees
        (:func:`~fcnseg.inference.runtime_choice.choose_runtime`); the choice and why are logged. ``kwargs``
        go to the constructor (``max_memory``, ``tile``, ``tta`` ...)."""
        from fcnseg.inference.runtime_choice import choose_runtime
        from fcnseg.weights.checkpoint import load_model

        choice = choose_runtime(load_model(path), image, runtime=runtime, device=device, precision=precision,
                                layout=layout, compile=compile)
        log.log(choice.log_level, "%s: runtime %s", path, choice.why)
        predictor = cls(choice.handle, device=device, precision=precision, layout=layout, compile=compile, **kwargs)
        predictor.choice = choice
        return predictor

    palette = None  # uint8 [256, 3] class colours: the model's (its file's, else VOC's)
    hint = None  # a faster way to run this model, where one is known
    choice = None  # how from_checkpoint chose the runtime (a RuntimeChoice)

    def describe(self) -> str:
        """One line: the net, where and how it runs (threads), TTA, and the hint if any."""
        text = self.runtime.describe()
        text += f"; TTA: {tta_variants.describe_tta(self.tta)}" if self.tta else ""
        return text + (f"; {self.hint}" if self.hint else "")

    # -- the forward --

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input float32 ``[N, 3, H, W]`` -> float32 logits ``[N, C, H, W]`` (PyTorch runtime; no tiling)."""
        if not isinstance(self.runtime, TorchNet):
            raise TypeError("logits() of a normalised tensor is for the PyTorch runtime; predict() takes any runtime")
        return self.runtime.logits(x)

    # -- planning --

    def estimate(self, height: int, width: int, probabilities: bool = False) -> MemoryEstimate:
        """:class:`~fcnseg.inference.memory.MemoryEstimate` of one tile's forward on a ``height x width`` input.

        Counts what :meth:`predict` holds for a tile in this predictor's runtime: its normalisation,
        the forward in its precision and layout, the float32 logits and labels (and, with
        ``probabilities``, their softmax). Estimates are kept, one per size.
        """
        key = (height, width, probabilities)
        if key not in self._estimates:
            if len(self._estimates) > 4096:  # a folder of many sizes: keep the memory of the cache bounded
                self._estimates.clear()
            self._estimates[key] = self.runtime.estimate(height, width, probabilities)
        return self._estimates[key]

    def plan(self, height: int, width: int, probability_band: bool = False, reserved: int = 0) -> TilePlan:
        """Choose the tiling of a ``height x width`` image: whole if it fits ``max_memory``, else the largest tile that does.

        Args:
            probability_band: also budget the softmax and a float16 band of probabilities ``[C, tile, width]``.
            reserved: bytes held beside the forward (test-time augmentation's sums), taken off the budget.
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
            return forward + band + fixed + reserved

        found = largest_plan(height, width, self.margin, cost, self.max_memory)
        if found is None:
            smallest = TilePlan(height, width, OUTPUT_STRIDE, self.margin)
            cfg = self.config
            held = f"; test-time augmentation holds {format_bytes(reserved)} of it" if reserved else ""
            raise FcnsegError(
                f"a {width}x{height} image needs {format_bytes(cost(smallest))} even in {OUTPUT_STRIDE}-pixel tiles "
                f"with {self.margin}-pixel margins ({cfg.arch}/{cfg.backbone}, {self.precision}; "
                f"the weights alone take {format_bytes(self.estimate(OUTPUT_STRIDE, OUTPUT_STRIDE).weights)}{held}), "
                f"more than the memory budget of {format_bytes(self.max_memory)}; raise --max-memory"
            )
        return found

    # -- prediction --

    def predict(
        self,
        image: np.ndarray,
        probabilities: bool = False,
        probabilities_path: str | Path | None = None,
        on_tile: TileCallback | None = None,
        confidence: str | None = None,
    ) -> Prediction:
        """Segment one RGB uint8 image ``[H, W, 3]``.

        Args:
            probabilities: also return float16 ``[C, H, W]`` softmax probabilities in memory
                (``C * H * W * 2`` bytes: for a 6000x4000 scan and 21 classes, 1 GB).
            probabilities_path: stream float16 ``[C, H, W]`` probabilities into this ``.npy`` file
                band by band instead, holding one band in memory (written atomically).
            on_tile: called as ``on_tile(done, total)`` after each forward, ``done`` = 1 .. ``total``, in order;
                ``total`` counts the tiles of the whole image (of every test-time variant), known before the first.
            confidence: also return the per-pixel confidence map ``[H, W]`` of this kind ("max", "margin",
                "entropy"; :mod:`fcnseg.inference.confidence`), from the probabilities at :attr:`temperature`.
        Returns:
            Prediction with uint8 labels ``[H, W]``. Under TTA, the labels are the argmax of the
            variants' mean probabilities.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {list(image.shape)}")
        if confidence is not None:
            check_kind(confidence)
        if self.tta:
            return self._predict_tta(image, probabilities, probabilities_path, on_tile, confidence)
        return self._predict_once(image, probabilities, probabilities_path, on_tile=_TileCount.of(on_tile, None),
                                  confidence=confidence)

    def _plan_for(self, height: int, width: int, probabilities_path, reserved: int) -> TilePlan:
        # Under TTA (``reserved``) each variant's probabilities are kept: budget their softmax as well.
        return self.plan(height, width, probability_band=probabilities_path is not None or reserved > 0, reserved=reserved)

    def _predict_once(self, image: np.ndarray, probabilities: bool, probabilities_path, reserved: int = 0,
                      probability_dtype=np.float16, on_tile: "_TileCount | None" = None,
                      confidence: str | None = None, temperature: float | None = None) -> Prediction:
        height, width = image.shape[:2]
        temperature = self.temperature if temperature is None else temperature
        # a confidence map needs each tile's softmax: budget it as a probability band (the band itself is small)
        plan = self._plan_for(height, width, probabilities_path or (True if confidence else None), reserved)
        if on_tile is not None and on_tile.total is None:
            on_tile.total = plan.num_tiles
        if not plan.whole and self.tile is None:
            log.info("%dx%d image in %s of %d+2x%d px to stay within the memory budget of %s "
                     "(whole it would need %s; a larger --max-memory means fewer, faster tiles)",
                     width, height, plural(plan.num_tiles, "tile"), plan.tile, plan.margin, format_bytes(self.max_memory or 0),
                     format_bytes(self.estimate(_on_grid(height), _on_grid(width)).total))
        labels = np.empty((height, width), dtype=np.uint8 if self.num_classes <= 256 else np.int32)
        in_memory = np.empty((self.num_classes, height, width), dtype=probability_dtype) if probabilities else None
        sure = np.empty((height, width), dtype=np.float32) if confidence else None
        with contextlib.ExitStack() as stack:
            writer = None
            if probabilities_path is not None:
                writer = stack.enter_context(ProbabilityFile.create(probabilities_path, self.num_classes, height, width))
            for row in plan.bands():
                band = None
                if writer is not None:
                    band = np.empty((self.num_classes, row[0].y1 - row[0].y0, width), dtype=np.float16)
                for t in row:
                    self._predict_tile(image, t, labels, in_memory, band, sure, confidence, temperature)
                    if on_tile is not None:
                        on_tile.step()
                if writer is not None:
                    writer.write_band(row[0].y0, band)
        return Prediction(labels, in_memory, plan, self.precision, confidence=sure, confidence_kind=confidence)

    def _predict_tta(self, image: np.ndarray, probabilities: bool, probabilities_path, on_tile=None,
                     confidence: str | None = None) -> Prediction:
        """Each variant predicted (and tiled) on its own, its probabilities restored to the input size, the mean taken."""
        height, width = image.shape[:2]
        reserved = tta_variants.reserved_bytes(self.num_classes, height, width, self.tta)
        count = None
        if on_tile is not None:  # every variant's tiles, counted before the first forward
            total = sum(self._plan_for(*tta_variants.scaled_size(height, width, v.scale), None, reserved).num_tiles
                        for v in self.tta)
            count = _TileCount.of(on_tile, total)
        total = torch.zeros(self.num_classes, height, width)
        plan = None
        for variant in self.tta:
            # float32 probabilities per variant: their mean's argmax then rounds no differently from one forward's
            # at temperature 1: the labels are the argmax of the plain mean; the temperature is applied to the mean
            part = self._predict_once(tta_variants.transform_image(image, variant), True, None, reserved, np.float32,
                                      on_tile=count, temperature=1.0)
            total += tta_variants.restore(torch.from_numpy(part.probabilities), variant, height, width)
            if plan is None or part.plan.num_tiles > plan.num_tiles:
                plan = part.plan
            del part
        mean = total.div_(len(self.tta))
        labels = class_indices(mean, 0).numpy().astype(np.uint8 if self.num_classes <= 256 else np.int32)
        if self.temperature != 1.0:
            mean = with_temperature(mean, self.temperature)
        sure = confidence_from_probabilities(mean, confidence, 0).numpy() if confidence else None
        probs = mean.half().numpy() if probabilities or probabilities_path is not None else None
        if probabilities_path is not None:
            with ProbabilityFile.create(probabilities_path, self.num_classes, height, width) as writer:
                writer.write_band(0, probs)
        return Prediction(labels, probs if probabilities else None, plan, self.precision, self.tta,
                          confidence=sure, confidence_kind=confidence)

    def _predict_tile(self, image: np.ndarray, t: Tile, labels: np.ndarray, in_memory, band, sure=None,
                      kind: str | None = None, temperature: float = 1.0) -> None:
        """Run one tile and write its kept centre into ``labels`` (and the probability and confidence arrays given)."""
        logits = self.runtime(torch.from_numpy(image[t.in_y0 : t.in_y1, t.in_x0 : t.in_x1])[None])[0]  # [C, h, w]
        core = logits[:, t.y0 - t.in_y0 : t.y1 - t.in_y0, t.x0 - t.in_x0 : t.x1 - t.in_x0]
        labels[t.y0 : t.y1, t.x0 : t.x1] = class_indices(core, 0).cpu().numpy()
        if in_memory is not None or band is not None or sure is not None:
            # the temperature scales the probabilities only: the labels above are the logits' argmax
            soft = (core / temperature if temperature != 1.0 else core).softmax(0)
            if sure is not None:
                sure[t.y0 : t.y1, t.x0 : t.x1] = confidence_from_probabilities(soft, kind, 0).cpu().numpy()
            if in_memory is None and band is None:
                return
            prob = soft.cpu().numpy()
            if in_memory is not None:
                in_memory[:, t.y0 : t.y1, t.x0 : t.x1] = prob  # cast to the array's dtype (float16 unless TTA)
            if band is not None:
                band[:, :, t.x0 : t.x1] = prob


def with_temperature(probabilities: torch.Tensor, temperature: float, dim: int = 0) -> torch.Tensor:
    """Probabilities ``p = softmax(z)`` -> ``softmax(z / temperature)`` without the logits: ``p ** (1 / T)``, renormalised.

    Each pixel's values are raised to one power and divided by one sum, so the argmax is kept.
    """
    scaled = probabilities.double().clamp_min(1e-30).log_().div_(temperature)
    return scaled.softmax(dim).to(probabilities.dtype)


class _TileCount:
    """Counts forwards for an ``on_tile(done, total)`` callback across the calls of one prediction."""

    def __init__(self, callback: TileCallback, total: int | None):
        self.callback, self.total, self.done = callback, total, 0

    @classmethod
    def of(cls, callback: TileCallback | None, total: int | None) -> "_TileCount | None":
        return None if callback is None else cls(callback, total)

    def step(self) -> None:
        self.done += 1
        self.callback(self.done, self.total)


def normalize_tile(pixels: np.ndarray, normalization: Normalization, channels_last: bool = False) -> torch.Tensor:
    """RGB uint8 ``[h, w, 3]`` -> normalised float32 ``[1, 3, h, w]``, the same values as ``image_to_tensor``.

    See :func:`~fcnseg.inference.forward.normalize_pixels` (one float copy, in place after it).
    """
    return normalize_pixels(torch.from_numpy(pixels)[None], normalization, channels_last)


__all__ = [
    "DEFAULT_MAX_MEMORY",
    "LAYOUTS",
    "OrtNet",
    "TorchNet",
    "Prediction",
    "Predictor",
    "ProbabilityFile",
    "TileCallback",
    "normalize_tile",
    "select_layout",
]

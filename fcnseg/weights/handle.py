"""The model handle: one carrier of a model's contract, whatever file it came from.

A :class:`LoadedModel` holds the weights (a torch module, or the ONNX Runtime session of an fcnseg
``.onnx`` file), the architecture (:class:`~fcnseg.config.ModelConfig`), what it must be fed (the input
modalities and each one's normalisation), what it gives (class names and colours per head), where it came
from, and how it runs on this machine (:class:`~fcnseg.precision.ExecutionPlan`, resolved once by
:meth:`LoadedModel.prepare`). :func:`fcnseg.weights.checkpoint.load_model` builds it from any file fcnseg
reads; training builds it for the net it trains. Prediction, evaluation, validation, reports, serve,
export and quantization take it, and feed it through :meth:`LoadedModel.forward`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fcnseg.config import ModelConfig
from fcnseg.data.normalization import InputSpec, Normalization
from fcnseg.errors import CheckpointError, ConfigError
from fcnseg.precision import forward_in
from fcnseg.weights.checkpoint_writer import save_checkpoint

log = logging.getLogger(__name__)

IGNORE_COLOUR = (224, 224, 192)  # VOC's border colour, entry 255 of every palette
ENGINES = ("onnxruntime", "openvino")  # what runs an ONNX file
ENGINE_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "torch": "PyTorch"}


def default_class_names(num_classes: int) -> list[str]:
    """Names for a model that records none: VOC's 21 for 21 classes, else ``class_0`` ...; such names match any data."""
    from fcnseg.data.classes import VOC_CLASSES

    if num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return [f"class_{i}" for i in range(num_classes)]


def default_palette() -> np.ndarray:
    """VOC's colour map, uint8 ``[256, 3]``."""
    from fcnseg.data.palette import voc_palette

    return voc_palette(256)


@dataclass
class LoadedModel:
    """A network ready to run, and everything needed to feed it and read it.

    Attributes:
        model: the torch module (eval mode after loading), or None for an ONNX file.
        config: the architecture; for an ONNX file, the one it records.
        class_names: the first head's class names.
        normalization: how the first input modality's stored pixels become the net's input.
        source: "fcnseg", "torchfcn", "caffe", "fcnseg-state-dict", "classifier", "onnx" or "training".
        extra: anything else a checkpoint carried (training state, metrics).
        head_class_names: head name -> class names, every head.
        inputs: the modalities and normalisations of a net reading more than an RGB image (NYUD's), else None.
        palette: uint8 ``[256, 3]`` colours of the first head's classes (the file's, else VOC's).
        path: the file it was loaded from (None when built in memory).
        onnx_info: the metadata of an ONNX file (:class:`~fcnseg.weights.onnx_format.OnnxModelInfo`), else None.
        plan: how it runs here (device, precision, autocast dtype, layout), set by :meth:`prepare`.
        temperature: the calibration temperature (:mod:`fcnseg.calibration`): probabilities are
            ``softmax(logits / temperature)``; 1 = uncalibrated. It never changes the argmax.
        engine: what runs an ONNX file: "onnxruntime" (the default) or "openvino"
            (:func:`fcnseg.inference.runtime_choice.choose_runtime` sets it).
    """

    model: nn.Module | None
    config: ModelConfig
    class_names: list[str]
    normalization: Normalization
    source: str
    extra: dict[str, Any] = field(default_factory=dict)
    head_class_names: dict[str, list[str]] = field(default_factory=dict)
    inputs: InputSpec | None = None
    palette: np.ndarray | None = None
    path: Path | None = None
    onnx_info: Any = None
    plan: Any = None
    temperature: float = 1.0
    engine: str = "onnxruntime"
    _sessions: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        heads = self.config.output_heads()
        given = {**self.head_class_names, heads[0][0]: list(self.class_names)}
        self.head_class_names = {name: list(given.get(name) or default_class_names(count)) for name, count in heads}
        self.class_names = list(self.head_class_names[heads[0][0]])
        where = self.path or "model"
        for name, count in heads:
            names = self.head_class_names[name]
            which = f" of head {name!r}" if len(heads) > 1 else ""
            if len(names) != count:
                raise CheckpointError(f"{where}: {len(names)} class names{which} for {count} outputs")
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise CheckpointError(f"{where}: class names{which} must be distinct; {repeated} more than once")
        self.palette = default_palette() if self.palette is None else _full_palette(self.palette, self.num_classes, where)
        self.temperature = float(self.temperature)
        if not (self.temperature > 0 and np.isfinite(self.temperature)):
            raise CheckpointError(f"{where}: the calibration temperature must be a positive number, found {self.temperature}")

    # --- what it is ------------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def runtime(self) -> str:
        """What runs it: ``"onnxruntime"`` or ``"openvino"`` (:attr:`engine`) for an ONNX file, ``"torch"`` for a module."""
        return self.engine if self.onnx_info is not None else "torch"

    @property
    def precision(self) -> str:
        """The number format it runs in: an ONNX file's own (fp32, int8), else the plan's (fp32 before :meth:`prepare`)."""
        if self.onnx_info is not None:
            return self.onnx_info.precision
        return self.plan.precision if self.plan is not None else "fp32"

    @property
    def input_spec(self) -> InputSpec:
        """Every input modality and its normalisation (an RGB net: ``color`` with :attr:`normalization`)."""
        return self.inputs if self.inputs is not None else InputSpec("color", {"color": self.normalization})

    @property
    def feed_normalization(self) -> Normalization:
        """What a data set must apply to feed :meth:`forward`: the model's normalisation, or raw 0..255 RGB
        for an ONNX file, whose graph normalises itself."""
        if self.onnx_info is not None:
            from fcnseg.weights.onnx_format import RAW_PIXELS

            return RAW_PIXELS
        return self.normalization

    def describe(self) -> str:
        """One line: architecture, classes, file, and how it runs (once prepared)."""
        cfg = self.config
        names = ", ".join(self.class_names[:6]) + (" ..." if self.num_classes > 6 else "")
        text = f"{cfg.arch} ({cfg.backbone}, {self.num_classes} classes: {names}) from {self.path or 'memory'} [{self.source}]"
        if self.onnx_info is not None:
            return text + f", {ENGINE_NAMES[self.engine]} {self.precision}"
        if self.plan is not None:
            return text + f", {self.plan.describe()}"
        return text

    # --- how it runs here -----------------------------------------------------------------------

    def prepare(self, device: str | torch.device = "auto", precision: str = "auto", layout: str = "auto") -> "LoadedModel":
        """Resolve how the torch module runs on this machine (once; logged) and place it; returns self.

        An ONNX file runs on the CPU in its own precision: ``device`` must be the CPU and ``precision``
        ``auto`` or ``fp32``.
        """
        from fcnseg.precision import resolve_execution

        if self.onnx_info is not None:
            if str(device) not in ("auto", "cpu") or precision not in ("auto", "fp32"):
                raise ConfigError(f"{self.path}: an ONNX file runs on the CPU in the precision it was written in "
                                  f"({self.precision}); --device and --precision are for checkpoints")
            self.plan = resolve_execution("cpu", "fp32", "contiguous")
            return self
        self.plan = resolve_execution(device, precision, layout)
        self.model.to(self.plan.device)
        return self

    def session(self, memory_arena: bool = True):
        """The session that runs an ONNX file, made on first use: ONNX Runtime's
        (:class:`~fcnseg.weights.onnx_format.OnnxNet`), one per arena setting (``memory_arena``: see ``OnnxNet``;
        off where a memory budget must hold), or OpenVINO's (:class:`~fcnseg.weights.openvino_net.OpenVinoNet`,
        which keeps no arena) when :attr:`engine` is "openvino"."""
        if self.onnx_info is None:
            raise TypeError("session() is for a model loaded from an .onnx file")
        if self.engine == "openvino":
            memory_arena = "openvino"
        if memory_arena not in self._sessions:
            if self.engine == "openvino":
                from fcnseg.weights.openvino_net import OpenVinoNet

                self._sessions[memory_arena] = OpenVinoNet(self.path)
            else:
                from fcnseg.weights.onnx_format import OnnxNet

                self._sessions[memory_arena] = OnnxNet(self.path, memory_arena=memory_arena)
        return self._sessions[memory_arena]

    def forward(self, x: torch.Tensor):
        """Fed input float32 ``[N, C, H, W]`` (a data set built with :attr:`feed_normalization`) -> float32 logits
        ``[N, classes, H, W]``, or ``{head: logits}`` for several heads; in the plan's device, precision and layout."""
        if self.plan is None:
            self.prepare()
        if self.onnx_info is not None:
            return self.session(memory_arena=True)(x)
        plan = self.plan
        x = x.to(plan.device, non_blocking=True)
        if plan.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return forward_in(self.model, x, plan.autocast_dtype)

    __call__ = forward

    # --- where it meets a data set --------------------------------------------------------------

    def check_data(self, dataset, *, class_map=None, ignore_class_names: bool = False) -> dict:
        """Raise unless ``dataset`` gives what this model reads and scores what it predicts: the same input
        streams and, per head, the same class names in the same order, or a ``class_map`` (data name -> model
        name) that reads the data's labels in the model's terms (see :mod:`fcnseg.data.class_match`).

        Returns:
            ``{head name: ClassMapping}``, how each head's labels are read (identity where the lists agree).
        Raises:
            ConfigError: naming both sides and the remedy.
        """
        from fcnseg.data.class_match import match_classes

        source = str(self.path or "the model")
        streams = [(s.name, s.channels) for s in getattr(dataset, "streams", [])] or None
        ours = self.config.input_streams()
        if streams is not None and [c for _, c in streams] != [c for _, c in ours]:
            raise ConfigError(f"{source} reads {ours} but the data set {dataset!r} gives {streams}; "
                              "build the data set with the model's modalities (fcnseg eval takes them from the model)")
        heads = list(getattr(dataset, "heads", None) or [])
        names = [h.name for h in heads] if heads else [self.config.output_heads()[0][0]]
        if len(names) != len(self.head_class_names):
            raise ConfigError(f"{source} has the heads {list(self.head_class_names)} but the data set {dataset!r} "
                              f"has {names}")
        if len(names) == 1 and class_map is None:
            from fcnseg.data.classes import check_class_count

            check_class_count(dataset, self.num_classes, what=f"the number of classes {source} predicts",
                              fix=f"score a model trained on the data set's {dataset.num_classes} classes")
        data_names = [list(h.class_names) for h in heads] if heads else [list(dataset.class_names)]
        mappings = {}
        for (head, model_names), data in zip(self.head_class_names.items(), data_names):
            mapping = match_classes(model_names, data, model_source=source + (f" (head {head})" if len(names) > 1 else ""),
                                    data_source=_data_source(dataset), class_map=class_map, ignore_names=ignore_class_names)
            if not mapping.identity:
                log.info("%s", mapping.describe())
            mappings[head] = mapping
        return mappings

    # --- writing ------------------------------------------------------------------------------

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        """Write the torch module and its contract as a self-describing fcnseg checkpoint (atomic)."""
        if self.model is None:
            raise ConfigError(f"{self.path}: an ONNX file has no torch weights to save as a checkpoint")
        calibration = {"temperature": self.temperature} if self.temperature != 1.0 else {}
        save_checkpoint(path, self.model, self.config, self.class_names, self.normalization,
                        {**self.extra, **calibration, **(extra or {})},
                        head_class_names=self.head_class_names if len(self.head_class_names) > 1 else None,
                        inputs=self.inputs, palette=self.palette)


def _data_source(dataset) -> str:
    """How messages name a data set: its root folder and split where it has them."""
    root = getattr(dataset, "root", None)
    return f"the data set at {root} ({getattr(dataset, 'split', '')})" if root is not None else repr(dataset)


def _full_palette(palette, num_classes: int, where) -> np.ndarray:
    """A 256-entry palette from the ``[K, 3]`` colours a file records (K >= classes); the rest VOC's."""
    colours = np.asarray(palette)
    if colours.ndim != 2 or colours.shape[1] != 3 or len(colours) < num_classes:
        raise CheckpointError(f"{where}: the palette holds {len(colours)} colours of shape {list(colours.shape[1:])}; "
                              f"expected at least {num_classes} [r, g, b] colours")
    if len(colours) == 256:
        return colours.astype(np.uint8)
    full = default_palette()
    full[: min(len(colours), 255)] = colours[:255].astype(np.uint8)
    full[255] = IGNORE_COLOUR
    return full


__all__ = ["LoadedModel", "default_class_names"]

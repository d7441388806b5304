"""Weights in and out: our self-describing checkpoints, and the loader that dispatches other layouts to their importers.

Each file is read once. Loading never runs code from a file: ``torch.load(weights_only=True)`` only,
and a pickle that needs more is refused. The importers of pytorch-fcn, torchvision-style VGG16 and
Caffe files are pure functions in :mod:`fcnseg.weights`. Writing is atomic (temp file, fsync, rename),
so a crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fcnseg.files import atomic_write
from fcnseg.config import ModelConfig, from_dict
from fcnseg.data.normalization import IMAGENET_RGB, PAPER_BGR, InputSpec, Normalization, normalization_from_dict
from fcnseg.errors import CheckpointError, ConfigError
from fcnseg.models.fcn import FCN, build_model
from fcnseg.models.surgery import transplant_trunk
from fcnseg.weights.imported import ImportedWeights
from fcnseg.weights.pytorch_fcn import TORCHFCN_ARCHES, config_from_state_dict, torchfcn_to_fcnseg
from fcnseg.weights.torch_files import explain_load_failure
from fcnseg.weights.torchvision_vgg import is_torchvision_vgg16, torchvision_vgg16_to_fcnseg

FORMAT = "fcnseg-checkpoint"
FORMAT_VERSION = 1


@dataclass
class LoadedModel:
    """A network ready to run, and what it needs to be fed and read."""

    model: FCN
    config: ModelConfig
    class_names: list[str]  # the first head's
    normalization: Normalization  # of the first input modality (NYUD depth alone: a LogDepthNormalization)
    source: str  # "fcnseg", "torchfcn", "caffe" or "fcnseg-state-dict"
    extra: dict[str, Any] = field(default_factory=dict)  # anything else the checkpoint carried
    # head name -> class names, every head (a single-head net: {"semantic": class_names})
    head_class_names: dict[str, list[str]] = field(default_factory=dict)
    # the modalities and their normalisations of a net reading more than an RGB image (NYUD's), else None
    inputs: InputSpec | None = None

    def __post_init__(self) -> None:
        given = {**self.head_class_names, self.config.output_heads()[0][0]: list(self.class_names)}
        self.head_class_names = {name: list(given.get(name) or default_class_names(count))
                                 for name, count in self.config.output_heads()}


def default_class_names(num_classes: int) -> list[str]:
    from fcnseg.data.classes import VOC_CLASSES

    if num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return [f"class_{i}" for i in range(num_classes)]


# --- writing ---------------------------------------------------------------------------------------


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
) -> None:
    """Write a self-describing checkpoint atomically: ``load_model(path)`` needs nothing else."""
    atomic_save(checkpoint_dict(model, config, class_names, normalization, extra, head_class_names=head_class_names,
                                inputs=inputs), path)


# --- reading ---------------------------------------------------------------------------------------


def _torch_load(path: Path, map_location="cpu") -> Any:
    """``torch.load(weights_only=True)``: one read of the file; a file it cannot load is a CheckpointError.

    torch's loaders fail on a bad file with whatever their parser tripped on (``KeyError: 101`` for text,
    ``OSError: Invalid argument`` for a cut zip archive), so every failure but a missing or unreadable file
    is handed to :func:`explain_load_failure`, which looks at the bytes and says what the file is.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from e
    except (MemoryError, RecursionError):
        raise
    except Exception as e:  # noqa: BLE001 - pickle, zip, EOF, index and key errors of a damaged or foreign file
        # from None: torch's message suggests weights_only=False, which is what must not be done with such a file.
        raise explain_load_failure(path, e) from None


def _checked_checkpoint(obj: Any, path: Path) -> dict[str, Any]:
    """``obj`` if it is one of our checkpoints in a format version this fcnseg reads."""
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        raise CheckpointError(f"{path}: not an fcnseg checkpoint (no '{FORMAT}' header)")
    if obj.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {obj['version']} is newer than this fcnseg reads ({FORMAT_VERSION})"
        )
    for key in ("model_config", "class_names", "normalization", "state_dict"):
        if key not in obj:
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'")
    return obj


def load_checkpoint(path: str | Path, map_location="cpu") -> dict[str, Any]:
    """Read one of our checkpoints as a dict (for resuming training); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    return _checked_checkpoint(_torch_load(path, map_location), path)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def load_state_dict_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with one error naming the file and every mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = [
        f"{k} is {list(state_dict[k].shape)}, expected {list(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s): {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
    if wrong:
        problems.append("shape mismatch: " + "; ".join(wrong[:5]))
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the model: " + " | ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def load_model(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    arch: str | None = None,
    class_names: list[str] | None = None,
) -> LoadedModel:
    """Load an FCN from any supported weights file, in eval mode.

    Accepts our checkpoints, a pytorch-fcn (torchfcn) ``.pth`` (raw state dict or its
    ``{"model_state_dict": ..., "arch": ...}`` wrapper), a raw state dict in our layout, and the
    reference Caffe ``.caffemodel`` files. ``arch`` resolves the one ambiguity of raw weights:
    FCN-8s and FCN-8s at-once have the same layers.

    Returns:
        LoadedModel; ``model(x [N,3,H,W])`` gives logits ``[N,C,H,W]`` for inputs normalised with
        ``.normalization``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    if path.suffix == ".caffemodel":
        return _load_caffemodel(path, map_location, arch, class_names)
    obj = _torch_load(path, map_location)  # the only read of the file
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        ckpt = _checked_checkpoint(obj, path)
        config = from_dict(ModelConfig, ckpt["model_config"], f"{path}: model_config")
        model = build_model(config)
        load_state_dict_strict(model, ckpt["state_dict"], str(path))
        own = ("state_dict", "model_config", "class_names", "normalization", "heads", "inputs")
        extra = {k: v for k, v in ckpt.items() if k not in own}
        inputs = InputSpec.from_dict(ckpt["inputs"]) if ckpt.get("inputs") else None
        loaded = LoadedModel(model, config, list(ckpt["class_names"]), normalization_from_dict(ckpt["normalization"]),
                             "fcnseg", extra, dict(ckpt.get("heads") or {}), inputs)
    elif isinstance(obj, dict) and "model_state_dict" in obj:
        # pytorch-fcn's trainer wrapper; its 'arch' is the class name (e.g. 'FCN8sAtOnce').
        wrapped_arch = TORCHFCN_ARCHES.get(str(obj.get("arch", "")))
        loaded = _from_state_dict(obj["model_state_dict"], path, arch or wrapped_arch, "torchfcn", map_location)
    elif _is_state_dict(obj):
        if is_torchvision_vgg16(obj):
            raise CheckpointError(
                f"{path}: an ImageNet VGG16 classifier, not an FCN; build one from it with "
                f"fcn_from_classifier() or 'fcnseg convert --from-classifier'"
            )
        source = "fcnseg-state-dict" if any(k.startswith("backbone.") for k in obj) else "torchfcn"
        loaded = _from_state_dict(obj, path, arch, source, map_location)
    else:
        raise CheckpointError(f"{path}: not a checkpoint fcnseg knows (found a {type(obj).__name__})")
    if class_names is not None:
        if len(class_names) != loaded.config.num_classes:
            raise CheckpointError(f"{path}: {len(class_names)} class names given for {loaded.config.num_classes} classes")
        loaded.class_names = list(class_names)
        loaded.head_class_names[loaded.config.output_heads()[0][0]] = list(class_names)  # the first head's
    loaded.model.to(map_location).eval()
    return loaded


def _from_state_dict(state_dict, path: Path, arch, source: str, map_location) -> LoadedModel:
    if not _is_state_dict(state_dict):
        raise CheckpointError(f"{path}: 'model_state_dict' is not a dict of tensors")
    ours = torchfcn_to_fcnseg(state_dict) if source == "torchfcn" else dict(state_dict)
    config = config_from_state_dict(ours, str(path), arch, pad=100)
    model = build_model(config)
    load_state_dict_strict(model, ours, str(path))
    # pytorch-fcn and the reference nets feed BGR, 0..255, mean-subtracted images.
    return LoadedModel(model, config, default_class_names(config.num_classes), PAPER_BGR, source)


def _read_caffemodel(path: Path) -> ImportedWeights:
    from fcnseg.weights.caffe import caffe_to_state_dict
    from fcnseg.weights.caffe_protobuf import read_caffemodel

    return caffe_to_state_dict(read_caffemodel(path), path)


def _load_caffemodel(path: Path, map_location, arch, class_names) -> LoadedModel:
    imported = _read_caffemodel(path)
    if imported.config is None:
        raise CheckpointError(
            f"{path}: an ImageNet classifier, not an FCN; build one from it with fcn_from_classifier()"
        )
    config = imported.config
    if arch is not None and arch != config.arch:
        raise CheckpointError(f"{path}: holds an {config.arch} but arch {arch!r} was asked for")
    model = build_model(config)
    load_state_dict_strict(model, imported.state_dict, str(path))
    first = config.output_heads()[0][0]
    names = class_names or imported.head_class_names.get(first) or default_class_names(config.num_classes)
    return LoadedModel(model.to(map_location).eval(), config, list(names), imported.normalization, "caffe",
                       head_class_names=dict(imported.head_class_names), inputs=imported.inputs)


def read_classifier_trunk(path: str | Path) -> tuple[dict[str, torch.Tensor], Normalization]:
    """Trunk weights (``backbone.*``) of an ImageNet VGG16 classifier file, and the normalisation it expects.

    Reads a torchvision-style state dict (``features.N``/``classifier.0/3/6``; RGB ImageNet
    mean/std) or the Caffe ``VGG_ILSVRC_16_layers.caffemodel`` (BGR mean-subtracted 0..255).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: classifier weights file not found")
    if path.suffix == ".caffemodel":
        imported = _read_caffemodel(path)
        if imported.config is not None:
            raise CheckpointError(f"{path}: an {imported.arch} FCN, not an ImageNet classifier; load it with load_model()")
        if imported.backbone != "vgg16":
            raise CheckpointError(f"{path}: a {imported.backbone} classifier; FCNs are built from VGG16 classifiers")
        return imported.state_dict, imported.normalization
    obj = _torch_load(path)
    if isinstance(obj, dict) and "state_dict" in obj and _is_state_dict(obj["state_dict"]):
        obj = obj["state_dict"]
    if not _is_state_dict(obj):
        raise CheckpointError(f"{path}: expected a state dict of a VGG16 classifier, found a {type(obj).__name__}")
    if "features.0.weight" in obj:  # torchvision's layout, whole or not: the importer names what is missing
        try:
            return torchvision_vgg16_to_fcnseg(obj), IMAGENET_RGB
        except KeyError as e:
            raise CheckpointError(f"{path}: VGG16 classifier lacks {e.args[0]}") from e
    if "backbone.conv1_1.weight" in obj:
        return obj, PAPER_BGR
    raise CheckpointError(f"{path}: not a VGG16 classifier layout (expected keys features.N.* and classifier.0/3/6.*)")


def fcn_from_classifier(
    path: str | Path,
    arch: str = "fcn32s",
    num_classes: int = 21,
    class_names: list[str] | None = None,
    learn_upsampling: bool = False,
) -> LoadedModel:
    """Build an FCN from an ImageNet VGG16 classifier file: the paper's net surgery.

    The conv layers are copied, fc6/fc7 transplanted as 7x7 and 1x1 convolutions, the 1000-way
    ImageNet scorer discarded, the new score layers zero-initialised and the upsampling set to
    bilinear (paper section 4). The returned model is in train mode, ready for fine-tuning.
    """
    trunk, normalization = read_classifier_trunk(path)
    config = ModelConfig(arch=arch, backbone="vgg16", num_classes=num_classes, learn_upsampling=learn_upsampling).validate()
    model = build_model(config)
    transplant_trunk(model, trunk, str(path))
    names = class_names or default_class_names(num_classes)
    return LoadedModel(model.train(), config, list(names), normalization, "classifier")

"""Weights in: load_model, the one loader of every model file (ours, pytorch-fcn, Caffe, torchvision, ONNX).

Each file is read once. Loading never runs code from a file: ``torch.load(weights_only=True)`` only,
and a pickle that needs more is refused. The importers of pytorch-fcn, torchvision-style VGG16 and
Caffe files are pure functions in :mod:`fcnseg.weights`. Writing is atomic (temp file, fsync, rename),
so a crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fcnseg.files import plural
from fcnseg.config import RESNET_ARCH, ModelConfig, from_dict
from fcnseg.data.normalization import IMAGENET_RGB, PAPER_BGR, InputSpec, Normalization, normalization_from_dict
from fcnseg.errors import CheckpointError
from fcnseg.models.fcn import FCN, build_model
from fcnseg.models.surgery import transplant_trunk
# Writing lives in checkpoint_writer (the handle saves through it without importing this loader); re-exported.
from fcnseg.weights.checkpoint_writer import FORMAT, FORMAT_VERSION, atomic_save, checkpoint_dict, save_checkpoint  # noqa: F401
from fcnseg.weights.handle import LoadedModel, default_class_names
from fcnseg.weights.onnx_format import is_onnx_file
from fcnseg.weights.imported import ImportedWeights
from fcnseg.weights.pytorch_fcn import TORCHFCN_ARCHES, config_from_state_dict, torchfcn_to_fcnseg
from fcnseg.weights.torch_files import explain_load_failure
from fcnseg.weights.torchvision_resnet import (classifier_trunk, fcn_config, is_torchvision_resnet_classifier,
                                               is_torchvision_resnet_fcn, resnet_depth, with_batch_counts)
from fcnseg.weights.torchvision_vgg import is_torchvision_vgg16, torchvision_vgg16_to_fcnseg

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


def load_start_weights(path: str | Path) -> dict[str, Any]:
    """The weights a run starts from (``train.init_from``), as a checkpoint dict (``state_dict``, ``model_config``,
    ``class_names``, ``normalization``): one of our checkpoints as it is, or any other file :func:`load_model` reads
    (torchvision's ``fcn_resnet50/101_coco-*.pth``, pytorch-fcn, Caffe) converted on the way.

    Raises:
        CheckpointError: naming the file, as :func:`load_model` does (not found, not a layout fcnseg reads).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.suffix != ".caffemodel" and not is_onnx_file(path):
        obj = _torch_load(path)
        if isinstance(obj, dict) and obj.get("format") == FORMAT:
            return _checked_checkpoint(obj, path)
        del obj
    loaded = load_model(path)
    if loaded.model is None:
        raise CheckpointError(f"{path}: an ONNX file holds no trainable weights; start from the checkpoint it was "
                              "exported from")
    return checkpoint_dict(loaded.model, loaded.config, loaded.class_names, loaded.normalization,
                           head_class_names=loaded.head_class_names, inputs=loaded.inputs)


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
        problems.append(f"missing {plural(len(missing), 'key')}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected {plural(len(unexpected), 'key')}: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
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
    """Load a model from any file fcnseg reads, as the one model handle (:class:`~fcnseg.weights.handle.LoadedModel`).

    Accepts an fcnseg ``.onnx`` file (fp32 or int8; run by ONNX Runtime), our checkpoints, a pytorch-fcn (torchfcn) ``.pth`` (raw state dict or its
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
    if is_onnx_file(path):
        return _load_onnx(path, class_names)
    if path.suffix == ".caffemodel":
        loaded = _load_caffemodel(path, map_location, arch, class_names)
        loaded.path = path
        return loaded
    obj = _torch_load(path, map_location)  # the only read of the file
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        ckpt = _checked_checkpoint(obj, path)
        config = from_dict(ModelConfig, ckpt["model_config"], f"{path}: model_config")
        model = build_model(config)
        load_state_dict_strict(model, ckpt["state_dict"], str(path))
        own = ("state_dict", "model_config", "class_names", "normalization", "heads", "inputs", "palette", "temperature")
        extra = {k: v for k, v in ckpt.items() if k not in own}
        inputs = InputSpec.from_dict(ckpt["inputs"]) if ckpt.get("inputs") else None
        palette = np.asarray(ckpt["palette"]) if ckpt.get("palette") is not None else None
        loaded = LoadedModel(model, config, list(ckpt["class_names"]), normalization_from_dict(ckpt["normalization"]),
                             "fcnseg", extra, dict(ckpt.get("heads") or {}), inputs, palette=palette, path=path,
                             temperature=_temperature(ckpt.get("temperature", 1.0), path))
    elif isinstance(obj, dict) and "model_state_dict" in obj:
        # pytorch-fcn's trainer wrapper; its 'arch' is the class name (e.g. 'FCN8sAtOnce').
        wrapped_arch = TORCHFCN_ARCHES.get(str(obj.get("arch", "")))
        loaded = _from_state_dict(obj["model_state_dict"], path, arch or wrapped_arch, "torchfcn", map_location)
    elif _is_state_dict(obj):
        if is_torchvision_vgg16(obj) or is_torchvision_resnet_classifier(obj):
            kind = "VGG16" if is_torchvision_vgg16(obj) else "ResNet"
            raise CheckpointError(
                f"{path}: an ImageNet {kind} classifier, not an FCN; build one from it with "
                f"fcn_from_classifier() or 'fcnseg convert --from-classifier'"
            )
        if is_torchvision_resnet_fcn(obj):
            loaded = _from_torchvision_resnet(obj, path, arch)
        else:
            source = "fcnseg-state-dict" if any(k.startswith("backbone.") for k in obj) else "torchfcn"
            loaded = _from_state_dict(obj, path, arch, source, map_location)
    else:
        raise CheckpointError(f"{path}: not a checkpoint fcnseg knows (found a {type(obj).__name__})")
    loaded.path = path
    if class_names is not None:
        _rename_classes(loaded, class_names)
    loaded.model.to(map_location).eval()
    return loaded


def _temperature(value, path: Path) -> float:
    """A checkpoint's ``temperature`` entry as a float, or a CheckpointError naming the file."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: 'temperature' must be a positive number, found {value!r}") from None


def _rename_classes(loaded: LoadedModel, class_names: list[str]) -> None:
    """Give the first head the names the user gave (a file that records none, or records them wrongly)."""
    if len(class_names) != loaded.config.num_classes:
        raise CheckpointError(f"{loaded.path}: {len(class_names)} class names given for {loaded.config.num_classes} classes")
    loaded.head_class_names[loaded.config.output_heads()[0][0]] = list(class_names)
    loaded.class_names = list(class_names)
    loaded.__post_init__()  # the names checked again (distinct)


def _load_onnx(path: Path, class_names: list[str] | None) -> LoadedModel:
    """An fcnseg ``.onnx`` file as a handle: its recorded contract, the session made on first use."""
    from fcnseg.weights.onnx_format import read_info

    info = read_info(path)
    config = info.model_config()
    loaded = LoadedModel(None, config, list(info.class_names), info.normalization, "onnx", palette=info.palette,
                         path=path, onnx_info=info, temperature=info.temperature)
    if class_names is not None:
        _rename_classes(loaded, class_names)
    return loaded


def _from_torchvision_resnet(state_dict, path: Path, arch) -> LoadedModel:
    """torchvision's ``fcn_resnet50/101_coco-*.pth`` (or a state dict of our ResNet FCN: the same keys)."""
    config = fcn_config(state_dict, str(path))
    if arch is not None and arch != config.arch:
        raise CheckpointError(f"{path}: holds torchvision's {config.backbone} FCN (arch {config.arch!r}) "
                              f"but arch {arch!r} was asked for")
    model = build_model(config)
    load_state_dict_strict(model, with_batch_counts(state_dict), str(path))
    # torchvision's segmentation weights read RGB in 0..1, ImageNet mean/std; 21 VOC classes on the COCO subset.
    return LoadedModel(model, config, default_class_names(config.num_classes), IMAGENET_RGB, "torchvision")


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
    """Trunk weights (``backbone.*``) of an ImageNet VGG16 or ResNet-50/101 classifier file, and the normalisation it expects.

    Reads a torchvision-style VGG16 state dict (``features.N``/``classifier.0/3/6``; RGB ImageNet
    mean/std), the Caffe ``VGG_ILSVRC_16_layers.caffemodel`` (BGR mean-subtracted 0..255), or a torchvision
    ResNet-50/101 (``resnet50-*.pth``: ``conv1``, ``layer1..4``, ``fc``; RGB ImageNet mean/std; ``fc`` dropped).
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
    if is_torchvision_resnet_classifier(obj):
        return classifier_trunk(obj, str(path))[1], IMAGENET_RGB
    if "features.0.weight" in obj:  # torchvision's layout, whole or not: the importer names what is missing
        try:
            return torchvision_vgg16_to_fcnseg(obj), IMAGENET_RGB
        except KeyError as e:
            raise CheckpointError(f"{path}: VGG16 classifier lacks {e.args[0]}") from e
    if "backbone.conv1_1.weight" in obj:
        return obj, PAPER_BGR
    raise CheckpointError(f"{path}: not a VGG16 or ResNet classifier layout (expected keys features.N.* and "
                          "classifier.0/3/6.*, or conv1.*, layer1..4.* and fc.*)")


def fcn_from_classifier(
    path: str | Path,
    arch: str | None = None,
    num_classes: int = 21,
    class_names: list[str] | None = None,
    learn_upsampling: bool = False,
    aux: bool = False,
) -> LoadedModel:
    """Build an FCN from an ImageNet VGG16 or ResNet-50/101 classifier file: the paper's net surgery.

    VGG16: the conv layers are copied, fc6/fc7 transplanted as 7x7 and 1x1 convolutions, the 1000-way
    ImageNet scorer discarded, the new score layers zero-initialised and the upsampling set to
    bilinear (paper section 4); ``arch`` defaults to fcn32s. ResNet (``resnet50-*.pth``, ``resnet101-*.pth``):
    torchvision's FCN (arch ``fcn``, the only one) on the classifier's trunk, ``fc`` dropped, a fresh FCNHead
    (and with ``aux`` the auxiliary head) as torchvision initialises it. The returned model is in train mode,
    ready for fine-tuning.
    """
    trunk, normalization = read_classifier_trunk(path)
    if "backbone.layer1.0.conv1.weight" in trunk:
        depth = resnet_depth(trunk, str(path))
        config = ModelConfig(arch=arch or RESNET_ARCH, backbone=depth, num_classes=num_classes, aux=aux,
                             learn_upsampling=learn_upsampling).validate(f"{path}: {depth} classifier")
        model = build_model(config)
        load_state_dict_strict(model.backbone, {k[len("backbone."):]: v for k, v in trunk.items()}, str(path))
    else:
        config = ModelConfig(arch=arch or "fcn32s", backbone="vgg16", num_classes=num_classes,
                             learn_upsampling=learn_upsampling, aux=aux).validate()
        model = build_model(config)
        transplant_trunk(model, trunk, str(path))
    names = class_names or default_class_names(num_classes)
    return LoadedModel(model.train(), config, list(names), normalization, "classifier")

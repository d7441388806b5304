"""Where a run's weights start: from scratch, an ImageNet VGG16 or ResNet classifier, a coarser FCN or a ResNet FCN to
fine-tune, single-stream FCNs (one per stream of a late-fusion net), or the checkpoint it resumes; and whether the
BatchNorm statistics of trained weights are kept.

Each start says which input normalisation its weights imply; :func:`resolve_normalization` turns
that and ``data.normalization`` into the one the run feeds.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fcnseg.weights.checkpoint import load_checkpoint, load_start_weights, load_state_dict_strict, read_classifier_trunk
from fcnseg.config import FREEZE_BATCH_NORM_BELOW, RESNET_ARCH, RESNET_BACKBONES, DataConfig, ModelConfig, RunConfig, from_dict
from fcnseg.data import detect_kind, get_normalization
from fcnseg.data.class_match import ClassMapping, match_classes, read_class_map
from fcnseg.data.normalization import IMAGENET_RGB, PAPER_BGR, Normalization, normalization_from_dict
from fcnseg.errors import CheckpointError, ConfigError, DataError
from fcnseg.models import build_model
from fcnseg.models.batchnorm import has_batch_norm
from fcnseg.models.heads import net_heads
from fcnseg.models.surgery import transplant, transplant_trunk

log = logging.getLogger(__name__)


@dataclass
class InitializedModel:
    """A freshly built FCN with its starting weights in place."""

    model: nn.Module
    normalization: Normalization | None  # the one the weights were trained with; None from scratch
    description: str  # one line for the log: where the weights came from
    # Where the score layers came from an FCN (train.init_from): its file and its classes in label order,
    # and its class-indexed head tensors (score layers [C, ...], upsampling [C, C, k, k]) with the values
    # this net's own would start from, so that :func:`fit_classes` can put each class's row in its place.
    source: str = ""
    class_names: list[str] | None = None
    source_head: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    fresh_head: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)


def initialize_model(
    config: RunConfig, resume_checkpoint: dict[str, Any] | None = None, resume_source: str | Path = "checkpoint"
) -> InitializedModel:
    """Build ``config.model`` and load its starting weights.

    Args:
        config: the run settings; ``train.classifier_weights`` (net surgery, paper section 4; every trunk
            of the net gets the classifier's, conv1_1 widened for more channels; a ResNet classifier for a
            ResNet FCN), ``train.init_from`` (staged training, section 4.2; a ResNet FCN to fine-tune: our
            checkpoint or torchvision's file) or ``train.init_streams_from`` (late fusion from single-stream
            nets, nyud-fcn32s-color-hha) choose the start, else scratch.
        resume_checkpoint: a ``last.pt`` already read (:func:`fcnseg.training.state.read_resume`);
            its weights win over every other start, and its model must be the one ``config`` asks for.
        resume_source: the file it came from, for messages.
    Raises:
        ConfigError: the resumed model differs from the config's, or a classifier for a non-VGG16/ResNet trunk.
        CheckpointError: an ``init_from`` checkpoint shares no layer, its trunk does not fit, or it is a ResNet
            where the run builds a VGG-family net (or the other way round).
    """
    model_config = config.model
    if resume_checkpoint is not None:
        return _resumed(model_config, resume_checkpoint, resume_source)
    t = config.train
    if t.classifier_weights:
        return _from_classifier(model_config, t.classifier_weights)
    if t.init_from:
        return _from_coarser(model_config, t.init_from)
    if t.init_streams_from:
        return _from_streams(model_config, t.init_streams_from)
    return InitializedModel(build_model(model_config), None, "weights initialised from scratch")


def take_backbone_from_weights(config: RunConfig) -> RunConfig:
    """``config`` building the ResNet FCN its ``train.init_from`` file holds, where no setting named a backbone or an
    arch (``backbone_from_weights``): ``fcnseg train --init-from fcn_resnet50_coco.pth`` fine-tunes a ResNet-50
    rather than refusing it for the default VGG16. Logged in one line; any other start returns ``config`` as it is.

    Raises:
        CheckpointError: the file cannot be read (naming it).
    """
    if not config.backbone_from_weights or not config.train.init_from or config.model.is_resnet:
        return config
    theirs = load_start_weights(config.train.init_from)["model_config"]
    if theirs.get("backbone") not in RESNET_BACKBONES:
        return config
    model = dataclasses.replace(config.model, backbone=theirs["backbone"], arch=RESNET_ARCH).validate(
        f"{config.train.init_from}: model")
    log.info("model.backbone %s (arch %s), from the --init-from file %s (no config file or flag set them)",
             model.backbone, model.arch, config.train.init_from)
    return dataclasses.replace(config, model=model)


def _resumed(model_config: ModelConfig, checkpoint: dict[str, Any], source: str | Path) -> InitializedModel:
    stored = from_dict(ModelConfig, checkpoint["model_config"], f"{source}: model_config")
    if stored != model_config:
        raise ConfigError(
            f"{source}: the checkpoint's model is {stored} but the config asks for {model_config}; "
            f"resume with the run's own config (fcnseg train --resume {source})"
        )
    model = build_model(model_config)
    model.load_state_dict(checkpoint["state_dict"])
    return InitializedModel(model, normalization_from_dict(checkpoint["normalization"]), f"weights from {source}")


def _from_classifier(model_config: ModelConfig, path: str) -> InitializedModel:
    if model_config.is_resnet:
        return _resnet_from_classifier(model_config, path)
    if model_config.backbone != "vgg16":
        raise ConfigError(f"classifier_weights {path}: only a VGG16 or ResNet-50/101 trunk can start from it, "
                          f"but model.backbone is {model_config.backbone!r}")
    model = build_model(model_config)
    trunk, normalization = read_classifier_trunk(path)
    if any(k.startswith("backbone.layer1.") for k in trunk):
        raise CheckpointError(f"{path}: a ResNet classifier; model.backbone is {model_config.backbone!r}: "
                              f"train with --backbone {' or '.join(RESNET_BACKBONES)}")
    transplant_trunk(model, trunk, path)
    return InitializedModel(model, normalization,
                            f"trunk initialised from the classifier {path}; score layers zero, upsampling bilinear")


def _resnet_from_classifier(model_config: ModelConfig, path: str) -> InitializedModel:
    """A ResNet FCN whose trunk is an ImageNet ResNet classifier's (``fc`` dropped); the head as torchvision inits it."""
    model = build_model(model_config)
    trunk, normalization = read_classifier_trunk(path)
    if not any(k.startswith("backbone.layer1.") for k in trunk):
        raise CheckpointError(f"{path}: a VGG16 classifier; model.backbone is {model_config.backbone!r}: "
                              "train with --backbone vgg16")
    load_state_dict_strict(model.backbone, {k.removeprefix("backbone."): v for k, v in trunk.items()}, path)
    return InitializedModel(model, normalization, f"{model_config.backbone} trunk initialised from the classifier "
                            f"{path}; head (classifier.*{', aux_classifier.*' if model_config.aux else ''}) initialised "
                            f"as torchvision does for {model_config.num_classes} classes")


def _from_coarser(model_config: ModelConfig, path: str) -> InitializedModel:
    model = build_model(model_config)
    checkpoint = load_start_weights(path)
    theirs = checkpoint["model_config"]
    if (theirs.get("backbone") in RESNET_BACKBONES) != model_config.is_resnet or (
            model_config.is_resnet and theirs.get("backbone") != model_config.backbone):
        raise CheckpointError(f"{path}: holds a {theirs.get('backbone')} FCN (arch {theirs.get('arch')}), but this run "
                              f"builds a {model_config.backbone} one (arch {model_config.arch}); train with --backbone "
                              f"{theirs.get('backbone')}" + ("" if theirs.get("backbone") in RESNET_BACKBONES
                                                              else f" --arch {theirs.get('arch')}"))
    keys = class_indexed_keys(model)
    fresh_head = {k: v.detach().clone() for k, v in model.state_dict().items() if k in keys}
    source_head = {k: v for k, v in checkpoint["state_dict"].items() if k in keys}
    copied = transplant(model, checkpoint["state_dict"])
    if not copied:
        raise CheckpointError(f"{path}: no layer of it fits a {model_config.arch} on {model_config.backbone}")
    new = [k for k in model.state_dict() if k not in copied]
    trunk_left = [k for k in new if k.startswith("backbone.")]
    if trunk_left:  # staged training continues the whole trunk; a partial copy is a different net
        theirs = checkpoint["model_config"]
        raise CheckpointError(
            f"{path}: its trunk ({theirs.get('backbone')}, batch_norm {theirs.get('batch_norm', False)}) "
            f"does not fit this {model_config.backbone} trunk (batch_norm {model_config.batch_norm}); "
            f"missing or differently shaped: {', '.join(trunk_left[:4])}{' ...' if len(trunk_left) > 4 else ''}"
        )
    if model_config.is_resnet:
        description = _resnet_start_description(path, theirs, model_config, copied, new)
    else:
        description = (f"initialised {len(copied)} tensors from {path} (a {theirs.get('arch')}); "
                       f"new layers keep their zero/bilinear init: {', '.join(new) or 'none'}")
    return InitializedModel(model, normalization_from_dict(checkpoint["normalization"]), description, source=str(path),
                            class_names=list(checkpoint.get("class_names") or []) or None,
                            source_head=source_head, fresh_head=fresh_head)


def _resnet_start_description(path: str, theirs: dict, model_config: ModelConfig, copied: list[str],
                              new: list[str]) -> str:
    """One line: what of a ResNet FCN came from ``path`` (trunk, head's 3x3 conv and BatchNorm, class scores) and
    what starts fresh (the class scores where the class count differs; an auxiliary head the file lacks)."""
    trunk = sum(k.startswith("backbone.") for k in copied)
    head = sorted({k.rsplit(".", 1)[0] for k in copied if not k.startswith("backbone.")})
    fresh = sorted({k.rsplit(".", 1)[0] for k in new})
    classes = theirs.get("num_classes")
    why = (f" for the data set's {model_config.num_classes} classes (the file has {classes}; rows of classes of the "
           "same name are copied under --class-map)" if classes != model_config.num_classes else "")
    unused = "aux_classifier" if theirs.get("aux") and not model_config.aux else ""
    return (f"{model_config.backbone} FCN initialised from {path}: trunk ({trunk} tensors) and "
            f"{', '.join(head) or 'no head layer'} copied; "
            f"{('re-initialised' + why + ': ' + ', '.join(fresh)) if fresh else 'nothing re-initialised'}"
            + (f"; its {unused} not used (model.aux is false)" if unused else ""))


def class_indexed_keys(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """State-dict key -> the dimensions indexed by class, for the head layers of a one-head, one-stream net.

    Score layers (``score_fr``, ``score_pool4``, ``score_pool3``): weight ``[C, in, 1, 1]`` and bias ``[C]``,
    dimension 0. Upsampling (``upscore*``): weight ``[C, C, k, k]``, dimensions 0 and 1. A ResNet FCN: its final 1x1
    scores ``classifier.4`` (and ``aux_classifier.4``), dimension 0. Empty for nets of several heads or streams
    (their classes are not remapped).
    """
    if getattr(getattr(model, "config", None), "is_resnet", False):
        heads = ["classifier"] + (["aux_classifier"] if model.config.aux else [])
        return {f"{head}.4.{part}": (0,) for head in heads for part in ("weight", "bias")}
    heads = getattr(model, "heads", ())
    if len(heads) != 1 or len(heads[0].stream_scores) != 1:
        return {}
    head = heads[0]
    keys: dict[str, tuple[int, ...]] = {}
    for layer in head.score_layers:
        keys[f"{layer}.weight"] = (0,)
        keys[f"{layer}.bias"] = (0,)
    for layer in head.upsampling_layers:
        keys[f"{layer}.weight"] = (0, 1)
    return keys


def fit_classes(initialized: InitializedModel, data_names: list[str], data_source: str, *,
                class_map: str | dict | None = None, ignore_names: bool = False) -> ClassMapping | None:
    """Check the classes of the FCN the score layers start from against the training data's, by name.

    Same names in the same order: nothing to do. A class map (``train.class_map``) puts each data class's
    score-layer rows (and upsampling kernels) where the data set has the class: data class ``i`` starts from
    the checkpoint's class ``data_to_model[i]``, exactly; a data class the checkpoint lacks starts fresh (zero
    scores, bilinear upsampling). Another class count without a class map: the score layers start fresh, as
    before (fine-tuning to other classes). ``ignore_names``: rows copied by index, with a warning.

    Args:
        initialized: from :func:`initialize_model`; changed in place (its model's head tensors).
        data_names: the training data set's classes in label order.
        data_source: where they came from (the class file or data root), for messages.
    Returns:
        the ClassMapping used, or None when the start carried no classes (scratch, classifier, resume, streams).
    Raises:
        ConfigError: the checkpoint has the data set's class count but other names or another order, and
            neither a class map nor ``ignore_names`` was given (both lists side by side, the remedies);
            a class map for a net whose classes cannot be remapped (several heads or streams).
    """
    if initialized.class_names is None:
        if class_map:
            raise ConfigError("train.class_map maps the classes of an --init-from checkpoint to the data set's; "
                              "this run does not start from one")
        return None
    model_names, source = initialized.class_names, f"the --init-from checkpoint {initialized.source}"
    if isinstance(class_map, (str, Path)) and class_map:
        class_map = read_class_map(class_map)
    class_map = class_map or None
    if class_map is None and len(model_names) != len(data_names):
        log.info("%s has %d classes, the data set %d: its score layers are not used", source, len(model_names),
                 len(data_names))
        return None
    mapping = match_classes(model_names, data_names, model_source=source, data_source=data_source,
                            class_map=class_map, ignore_names=ignore_names)
    if mapping.identity:
        return mapping
    if not initialized.source_head:
        raise ConfigError(f"train.class_map: {source} is a net of several heads or streams; its classes cannot be "
                          "remapped")
    _remap_head(initialized, mapping)
    log.info("score layers from %s: %s", initialized.source, mapping.describe())
    return mapping


def _remap_head(initialized: InitializedModel, mapping: ClassMapping) -> None:
    """Data class ``i``'s rows of every class-indexed head tensor <- the checkpoint's class ``data_to_model[i]``."""
    keys = class_indexed_keys(initialized.model)
    state = initialized.model.state_dict()
    pairs = [(i, m) for i, m in enumerate(mapping.data_to_model) if m is not None]
    ours = torch.tensor([i for i, _ in pairs], dtype=torch.long)
    theirs = torch.tensor([m for _, m in pairs], dtype=torch.long)
    with torch.no_grad():
        for key, dims in keys.items():
            if key not in initialized.source_head:
                continue  # a layer the coarser net lacks keeps its own start
            source, target = initialized.source_head[key], initialized.fresh_head[key].clone()
            if dims == (0,):
                target[ours] = source[theirs].to(target.dtype)
            else:  # [C, C, k, k]: from class m(j) to class m(i)
                target[ours[:, None], ours[None, :]] = source[theirs[:, None], theirs[None, :]].to(target.dtype)
            state[key].copy_(target)


def _from_streams(model_config: ModelConfig, paths: dict[str, str]) -> InitializedModel:
    """Each trunk of a late-fusion net, and its ``score_fr``, from a single-stream checkpoint of the stream
    (nyud-fcn32s-color-hha/solve.py: ``surgery.transplant(net, color_net, suffix='color')``, then 'hha')."""
    model = build_model(model_config)
    streams = [name for name, _ in model.streams]
    if len(streams) < 2:
        raise ConfigError("train.init_streams_from starts the trunks of a late-fusion net (two model.streams); "
                          "this model has one stream; use train.init_from")
    if sorted(paths) != sorted(streams):
        raise ConfigError(f"train.init_streams_from names the streams {sorted(paths)}; the model's are {streams}")
    normalization = None
    for index, stream in enumerate(streams):
        path = paths[stream]
        checkpoint = load_checkpoint(path)
        theirs = from_dict(ModelConfig, checkpoint["model_config"], f"{path}: model_config")
        if len(theirs.input_streams()) != 1:
            raise CheckpointError(f"{path}: a net of the streams {theirs.input_streams()}; each stream starts from a "
                                  "single-stream net")
        their_heads = {h.name: h for h in net_heads(theirs.arch, [n for n, _ in theirs.output_heads()])}
        renamed = {f"{model.trunk_prefix(stream)}.{k.removeprefix('backbone.')}": v
                   for k, v in checkpoint["state_dict"].items() if k.startswith("backbone.")}
        for head in model.heads:
            if head.name not in their_heads:
                raise CheckpointError(f"{path}: has no head {head.name!r} (its heads: {list(their_heads)})")
            for part in ("weight", "bias"):
                renamed[f"{head.stream_scores[index]}.{part}"] = checkpoint["state_dict"][f"{their_heads[head.name].score_fr}.{part}"]
        copied = set(transplant(model, renamed))
        left = sorted(set(renamed) - copied)
        wanted = [k for k in model.state_dict() if k.startswith(f"{model.trunk_prefix(stream)}.")]
        left += [k for k in wanted if k not in renamed]
        if left:
            raise CheckpointError(f"{path}: does not fit the {stream} stream of this {model_config.backbone} net "
                                  f"(batch_norm {model_config.batch_norm}); missing or differently shaped: "
                                  f"{', '.join(left[:4])}{' ...' if len(left) > 4 else ''}")
        if normalization is None:
            normalization = normalization_from_dict(checkpoint["normalization"])
    described = ", ".join(f"{s} from {paths[s]}" for s in streams)
    return InitializedModel(model, normalization, f"streams initialised from single-stream nets: {described}")


# Data sets whose reference data layer subtracts its own mean pixel (nyud_layers.py, siftflow_layers.py).
OWN_MEAN_KINDS = ("nyud", "siftflow")


def _data_kind(data: DataConfig) -> str:
    if data.dataset in ("auto", "synthetic") and data.root:
        try:
            return detect_kind(data.root)
        except DataError:
            return data.dataset  # opening the data set reports the folder
    return data.dataset


def resolve_normalization(config: RunConfig, weights_normalization: Normalization | None) -> Normalization | None:
    """``auto``: the weights' own normalisation, else paper BGR for VGG16/AlexNet, ImageNet RGB for the small and the
    ResNet nets.

    NYUD and SIFT Flow keep their own mean pixel (returns None: the data set's default), as the reference
    trains on them from the Caffe VGG16, unless the weights expect another scale than BGR 0..255.
    """
    name = config.data.normalization
    if name != "auto":
        return get_normalization(name)
    if _data_kind(config.data) in OWN_MEAN_KINDS and (
        not isinstance(weights_normalization, Normalization)  # none, or a depth map's
        or (weights_normalization.bgr and weights_normalization.value_scale == 1.0
                                          and weights_normalization.std == (1.0, 1.0, 1.0))
    ):
        return None
    if weights_normalization is not None:
        return weights_normalization
    return IMAGENET_RGB if config.model.backbone == "small" or config.model.is_resnet else PAPER_BGR


@dataclass
class BatchNormChoice:
    """Whether a run's BatchNorm layers keep their statistics (:func:`batch_norm_statistics`), and the log line why."""

    freeze: bool
    message: str  # "" for a net without BatchNorm


def batch_norm_statistics(config: RunConfig, model: nn.Module, world_size: int = 1) -> BatchNormChoice:
    """Decide ``train.freeze_batch_norm`` for ``model``: on, off, or auto.

    auto freezes the statistics (:func:`fcnseg.models.batchnorm.freeze_batch_norm_statistics`) where the weights are
    trained (``init_from`` or ``classifier_weights``) and a BatchNorm sees fewer than ``FREEZE_BATCH_NORM_BELOW``
    images at a time (``batch_size`` x ``world_size``: under DDP the statistics are the whole batch's). Their running
    mean and variance were estimated over many large batches; re-estimating them from 1 to 7 crops replaces them
    with noise, and the mode the net is evaluated in drifts from the one it trains in. From scratch there are no
    statistics worth keeping, so auto trains them (the small-cpu preset's BatchNorm, at batch 8).
    """
    if not has_batch_norm(model):
        return BatchNormChoice(False, "")
    t = config.train
    batch = t.batch_size * world_size
    trained = bool(t.init_from or t.classifier_weights)
    if t.freeze_batch_norm != "auto":
        freeze = t.freeze_batch_norm == "on"
        return BatchNormChoice(freeze, f"BatchNorm statistics {'frozen' if freeze else 'trained'} "
                                       f"(train.freeze_batch_norm {t.freeze_batch_norm})")
    freeze = trained and batch < FREEZE_BATCH_NORM_BELOW
    if freeze:
        why = (f"the weights are trained and a batch of {batch} image{'s' if batch != 1 else ''} (under "
               f"{FREEZE_BATCH_NORM_BELOW}) would re-estimate them from noise; --freeze-batch-norm off trains them")
    elif trained:
        why = f"a batch of {batch} images re-estimates them; --freeze-batch-norm on keeps the trained ones"
    else:
        why = "the weights start from scratch, so there are no statistics to keep"
    return BatchNormChoice(freeze, f"BatchNorm statistics {'frozen (eval mode; scale and shift still learn)' if freeze else 'trained'}: {why}")

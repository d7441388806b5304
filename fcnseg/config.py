"""Typed settings: dataclasses whose defaults reproduce the paper, and strict loading from files and dicts."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fcnseg.errors import ConfigError
from fcnseg.precision import LAYOUTS, LEGACY_LAYOUTS, LEGACY_PRECISIONS, PRECISIONS

T = TypeVar("T")

ARCHES = ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce")
BACKBONES = ("vgg16", "alexnet", "small")
# train.compile: whether torch.compile of the step pays is decided in fcnseg.training.compile.
COMPILE_SETTINGS = ("auto", "on", "off")
# YAML 1.1 reads a bare on / off as booleans.
LEGACY_COMPILE = {True: "on", False: "off"}


def check_compile_setting(value, source: str = "train.compile") -> str:
    """``value`` as one of :data:`COMPILE_SETTINGS` (YAML's booleans read as on / off); a ConfigError otherwise."""
    if isinstance(value, bool):
        value = LEGACY_COMPILE[value]
    if value not in COMPILE_SETTINGS:
        raise ConfigError(f"{source} {value!r} is not one of {', '.join(COMPILE_SETTINGS)}")
    return value


# torchvision's fcn_resnet50/101: a dilated ResNet (output stride 8), FCNHead and bilinear upsampling
# (fcnseg.models.resnet). Its one architecture is "fcn"; the skip architectures above are VGG-family only.
RESNET_BACKBONES = ("resnet50", "resnet101")
RESNET_ARCH = "fcn"
FREEZE_BATCH_NORM = ("auto", "on", "off")  # train.freeze_batch_norm
FREEZE_BATCH_NORM_BELOW = 8  # images per BatchNorm batch under which auto freezes the statistics of trained weights
PADDINGS = ("paper", "same")  # fcnseg.models.backbones.PADDINGS says what each builds


@dataclass
class ModelConfig:
    """Everything needed to rebuild a network; stored in every checkpoint."""

    arch: str = "fcn8s"  # fcn32s | fcn16s | fcn8s | fcn8s-atonce; fcn for the ResNet backbones
    backbone: str = "vgg16"  # vgg16 | alexnet | small | resnet50 | resnet101
    num_classes: int = 21  # PASCAL VOC: 20 classes + background
    pad: int = 100  # zero padding of the first convolution, pixels (reference nets: 100); padding "paper" only; not read by the ResNet FCNs
    # paper: the reference geometry (conv1_1 padded by ``pad``, fc6 unpadded). same: every convolution padded
    # by half its kernel, no large pad (a 128-px crop is a 128-px forward, not 328); the crops follow from
    # the layers either way. Deviation: "same" is not the paper's; the small-cpu preset uses it.
    padding: str = "paper"  # paper | same
    # The reference nets fix every deconvolution to bilinear interpolation (lr_mult 0);
    # the paper (section 4.2) also reports learning the 2x ones. Either is a flag away.
    learn_upsampling: bool = False
    dropout: float = 0.5  # after fc6 and fc7, as in VGG16 and the reference nets (ResNet FCNs: torchvision's 0.1 in the head)
    # Not in the paper: BatchNorm after every trunk convolution, for the small net trained from scratch.
    # VGG16 and AlexNet keep the reference layers, so that their ImageNet and FCN weight files load.
    batch_norm: bool = False
    # The input's channel groups, [name, channels] each, one trunk per group. [] = one 3-channel "color"
    # stream (every RGB net). One group of 4 is early fusion (nyud-fcn32s-color-d: B, G, R, log depth
    # into a widened conv1_1); two groups are late fusion (nyud-fcn32s-color-hha: two trunks whose
    # score_fr maps are averaged before the one upsampling; fcn32s only, as the reference).
    streams: list = dataclasses.field(default_factory=list)
    # The outputs, [name, num_classes] each, in the order of a mask's label maps. [] = one head of
    # num_classes (every single-output net). Several heads share the trunk (SIFT Flow: semantic 33,
    # geometric 3), the model then returns {name: logits}; num_classes must equal the first head's.
    heads: list = dataclasses.field(default_factory=list)
    # ResNet backbones only: keep torchvision's auxiliary FCNHead on layer3 (its training loss; inference
    # ignores it). torchvision's fcn_resnet*_coco files carry it.
    aux: bool = False

    @property
    def is_resnet(self) -> bool:
        """Whether this is a torchvision-style ResNet FCN (fcnseg.models.resnet) rather than a VGG-family FCN."""
        return self.backbone in RESNET_BACKBONES

    def input_streams(self) -> list[tuple[str, int]]:
        """``[(name, channels)]`` of the input's channel groups, the default filled in."""
        return [(str(n), int(c)) for n, c in self.streams] or [(DEFAULT_STREAM, 3)]

    def output_heads(self) -> list[tuple[str, int]]:
        """``[(name, num_classes)]`` of the outputs, the default filled in."""
        return [(str(n), int(c)) for n, c in self.heads] or [(DEFAULT_HEAD, self.num_classes)]

    @property
    def in_channels(self) -> int:
        """Channels of the model's input (all streams together)."""
        return sum(c for _, c in self.input_streams())

    def validate(self, source: str = "model config") -> "ModelConfig":
        if self.is_resnet:
            return self._validate_resnet(source)
        if self.aux:
            raise ConfigError(f"{source}: aux (the auxiliary head on layer3) exists for the ResNet backbones "
                              f"({', '.join(RESNET_BACKBONES)}) only, not {self.backbone!r}")
        if self.arch not in ARCHES:
            raise ConfigError(f"{source}: arch {self.arch!r} is not one of {', '.join(ARCHES)}")
        if self.backbone not in BACKBONES:
            raise ConfigError(f"{source}: backbone {self.backbone!r} is not one of "
                              f"{', '.join(BACKBONES + RESNET_BACKBONES)}")
        if self.backbone == "alexnet" and self.arch != "fcn32s":
            raise ConfigError(
                f"{source}: the AlexNet backbone has no pool3/pool4 skips; only arch 'fcn32s' exists for it "
                f"(got {self.arch!r})"
            )
        if self.batch_norm and self.backbone != "small":
            raise ConfigError(
                f"{source}: batch_norm is available for the small backbone only; {self.backbone} keeps the "
                "reference layers so that its pretrained weights load"
            )
        if self.num_classes < 1:
            raise ConfigError(f"{source}: num_classes must be >= 1, got {self.num_classes}")
        if self.pad < 0:
            raise ConfigError(f"{source}: pad must be >= 0, got {self.pad}")
        if self.padding not in PADDINGS:
            raise ConfigError(f"{source}: padding {self.padding!r} is not one of {', '.join(PADDINGS)}")
        if self.padding == "same" and self.pad != ModelConfig.pad:
            raise ConfigError(
                f"{source}: pad {self.pad} is conv1_1's padding under padding 'paper'; with padding 'same' every "
                f"convolution pads by half its kernel, so leave pad at {ModelConfig.pad} or set padding: paper"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{source}: dropout must be in [0, 1), got {self.dropout}")
        self.streams = _named_counts(self.streams, "streams", "channels", source)
        self.heads = _named_counts(self.heads, "heads", "num_classes", source)
        if self.heads and self.heads[0][1] != self.num_classes:
            raise ConfigError(f"{source}: num_classes is {self.num_classes} but the first head {self.heads[0][0]!r} "
                              f"has {self.heads[0][1]} classes; they must agree")
        if len(self.input_streams()) > 1:
            if self.arch != "fcn32s":
                raise ConfigError(f"{source}: late fusion of {len(self.streams)} streams exists for arch 'fcn32s' only "
                                  f"(nyud-fcn32s-color-hha fuses the streams' score_fr), got {self.arch!r}")
            bad = [n for n, _ in self.streams if not n.isidentifier()]
            if bad:
                raise ConfigError(f"{source}: stream names of a late-fusion net name its layers (conv1_1color); "
                                  f"expected identifiers, found {bad}")
        return self


    def _validate_resnet(self, source: str) -> "ModelConfig":
        """A ResNet FCN has one architecture, one RGB input and one head; the VGG-only settings must be left alone."""
        if self.arch != RESNET_ARCH:
            raise ConfigError(f"{source}: backbone {self.backbone} builds torchvision's FCN (arch {RESNET_ARCH!r}); "
                              f"the skip architectures {', '.join(ARCHES)} are for vgg16, alexnet and small "
                              f"(got arch {self.arch!r})")
        if self.num_classes < 1:
            raise ConfigError(f"{source}: num_classes must be >= 1, got {self.num_classes}")
        vgg_only = {"batch_norm": False, "learn_upsampling": False, "padding": "paper"}
        changed = [name for name, default in vgg_only.items() if getattr(self, name) != default]
        if changed:
            raise ConfigError(f"{source}: {', '.join(changed)} set for backbone {self.backbone}, which has BatchNorm "
                              "built in, pads every convolution and upsamples bilinearly; leave them at their defaults")
        self.streams = _named_counts(self.streams, "streams", "channels", source)
        self.heads = _named_counts(self.heads, "heads", "num_classes", source)
        if self.streams or self.heads:
            raise ConfigError(f"{source}: backbone {self.backbone} reads one RGB image and has one head; "
                              f"found streams {self.streams} and heads {self.heads}")
        return self


DEFAULT_STREAM = "color"  # the one stream of an RGB net (fcnseg.data.items: every data set's default)
DEFAULT_HEAD = "semantic"  # the one head of a single-output net (fcnseg.data.items.SEMANTIC)


def _named_counts(entries: Any, field: str, what: str, source: str) -> list[list]:
    """``entries`` as ``[[name, count], ...]`` with unique names and counts >= 1, or a ConfigError naming ``source``."""
    if not isinstance(entries, (list, tuple)):
        raise ConfigError(f"{source}: {field} must be a list of [name, {what}] pairs, found {entries!r}")
    out = []
    for entry in entries:
        ok = isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str) and entry[0]
        ok = ok and isinstance(entry[1], int) and not isinstance(entry[1], bool) and entry[1] >= 1
        if not ok:
            raise ConfigError(f"{source}: {field}: expected [name, {what} >= 1], found {entry!r}")
        out.append([entry[0], int(entry[1])])
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: {field}: names must be unique, found {names}")
    return out


def from_dict(cls: type[T], values: dict[str, Any], source: str) -> T:
    """Build dataclass ``cls`` from ``values``; an unknown key or a wrong type is a ConfigError naming ``source``."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, found {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown {'key' if len(unknown) == 1 else 'keys'} {', '.join(unknown)}; known keys: {', '.join(fields)}")
    kwargs = {}
    for name, value in values.items():
        types = fields[name].metadata.get("types")
        if types is not None:  # a field that takes one of several types (a word or a list)
            if not isinstance(value, types):
                raise ConfigError(f"{source}: {name}: expected {' or '.join(t.__name__ for t in types)}, found {value!r}")
            kwargs[name] = value
            continue
        default = getattr(cls(), name) if _has_default(fields[name]) else None
        kwargs[name] = _coerce(value, default, f"{source}: {name}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    return validate(source) if validate else obj


def _has_default(field: dataclasses.Field) -> bool:
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Check ``value`` against the type of the field's default; ints are accepted for floats."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, found {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(value)
    if not isinstance(value, type(default)):
        raise ConfigError(f"{where}: expected {type(default).__name__}, found {value!r}")
    return value


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON settings file into a dict; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - both parsers raise their own error types
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    return data


# --- data and training settings ----------------------------------------------------------------------

NORMALIZATIONS = ("auto", "paper_bgr", "imagenet_rgb", "nyud_bgr", "siftflow_bgr")
OPTIMIZERS = ("sgd", "adamw")
LR_POLICIES = ("fixed", "poly", "step")
LOSSES = ("cross_entropy", "focal", "dice", "lovasz")  # fcnseg.losses; two may be joined by '+'


@dataclass
class DataConfig:
    """Where the images come from and how training crops are made.

    Defaults follow the paper (section 4.3): whole images, random mirroring only.
    """

    dataset: str = "voc"  # voc | sbd | folder | synthetic | nyud | siftflow | pascal_context | auto (guess from root)
    root: str = ""  # data set folder, e.g. data/VOCdevkit/VOC2012; "" with dataset synthetic = generated in memory
    train_split: str = "train"
    val_split: str = "val"
    sbd_root: str = ""  # optional SBD folder, for VOC splits such as seg11valid
    voc_root: str = ""  # PASCAL-Context: the VOC2010 images, when they are not under root
    # NYUD's inputs: color | hha | depth | color+depth (4 channels, early fusion) | color+hha (two streams,
    # late fusion); "" = color. Only for the nyud data set.
    modalities: str = ""
    # Validation from another data set (the paper trains on SBD and validates on VOC seg11valid); "" = as above.
    val_dataset: str = ""
    val_root: str = ""
    # auto: the normalisation of the weights training starts from (classifier or checkpoint), else
    # paper_bgr for VGG16/AlexNet and imagenet_rgb (unit variance) for the small net trained from scratch;
    # NYUD and SIFT Flow subtract their own mean pixel (nyud_bgr, siftflow_bgr) unless the weights
    # expect another scale than BGR 0..255 (the reference data layers).
    normalization: str = "auto"  # auto | paper_bgr | imagenet_rgb | nyud_bgr | siftflow_bgr
    mirror: bool = True  # random left-right flips (paper section 4.3)
    scale_min: float = 1.0  # random rescaling range, factor; 1.0-1.0 = off (the paper does not rescale)
    scale_max: float = 1.0
    crop_size: int = 0  # random square crop, pixels; 0 = whole images (the paper found cropping did not help)
    num_workers: int = 2  # DataLoader worker processes per training process
    # Decoded training images (and masks) held in memory as uint8, up to this many MiB (4 bytes a pixel;
    # VOC's 1464 train images take ~1.1 GB); the rest are decoded on each use. 0 = none. Changes no value.
    cache_mb: int = 1024
    val_max_images: int = 0  # validate on the first N images only; 0 = all
    # The built-in synthetic set (fcnseg.data.synthetic) when dataset is synthetic and root is "":
    synthetic_style: str = "shapes"  # one of fcnseg.data.kinds.SYNTHETIC_STYLES
    synthetic_train_images: int = 160
    synthetic_val_images: int = 40
    synthetic_seed: int = 0
    synthetic_size: int = 0  # square image side, pixels; 0 = random sizes (97..250 per side)

    def validate(self, source: str = "data config") -> "DataConfig":
        # the option lists live with the data sets; imported here, not at the top, so that models/ (which
        # imports this module) imports nothing of fcnseg.data
        from fcnseg.data.kinds import AUTO, DATASET_KINDS, NYUD_MODALITIES, SYNTHETIC_STYLES

        datasets = (*DATASET_KINDS, AUTO)
        for name in ("dataset", "val_dataset"):
            value = getattr(self, name)
            if value not in datasets and not (name == "val_dataset" and value == ""):
                raise ConfigError(f"{source}: {name} {value!r} is not one of {', '.join(datasets)}")
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(f"{source}: normalization {self.normalization!r} is not one of {', '.join(NORMALIZATIONS)}")
        if not 0 < self.scale_min <= self.scale_max:
            raise ConfigError(f"{source}: need 0 < scale_min <= scale_max, got {self.scale_min} and {self.scale_max}")
        for name in ("crop_size", "num_workers", "cache_mb", "val_max_images", "synthetic_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{source}: {name} must be >= 0, got {getattr(self, name)}")
        if self.modalities and self.modalities not in NYUD_MODALITIES:
            raise ConfigError(f"{source}: modalities {self.modalities!r} is not one of {', '.join(NYUD_MODALITIES)}")
        if self.modalities and self.dataset not in ("nyud", "auto"):
            raise ConfigError(f"{source}: modalities are NYUD's inputs; dataset {self.dataset!r} has one RGB input")
        if self.dataset != "synthetic" and not self.root:
            raise ConfigError(f"{source}: dataset {self.dataset!r} needs a root folder (data.root, or --data-root)")
        return self


@dataclass
class TrainConfig:
    """The optimisation recipe and the run's bookkeeping.

    Defaults are the paper's CVPR recipe for FCN-VGG16 (section 4.3): SGD, momentum 0.9, a
    minibatch of 20 images (20 single-image passes accumulated, as Caffe's ``iter_size``), fixed
    learning rate 1e-4, weight decay 5e-4, biases at twice the learning rate and without decay,
    and a loss normalised by the number of labelled pixels.
    """

    out_dir: str = "runs/train"  # checkpoints, logs, metrics and pictures go here
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 1e-4  # base learning rate
    momentum: float = 0.9  # SGD momentum (AdamW: beta1)
    weight_decay: float = 5e-4
    bias_lr_mult: float = 2.0  # biases learn at lr * this (reference nets: lr_mult 2)
    bias_decay_mult: float = 0.0  # and decay at weight_decay * this (reference nets: decay_mult 0)
    # true: loss = mean over labelled pixels; false: their sum (the reference "heavy learning" nets,
    # which compensate with a tiny learning rate and momentum 0.99).
    normalize_loss: bool = True
    # cross_entropy (the paper's) | focal | dice | lovasz, or two joined by '+' (their sum), e.g. cross_entropy+lovasz
    loss: str = "cross_entropy"
    # none | auto (median frequency balancing from the training set's class pixel counts) | [w_0, ..., w_{C-1}];
    # weights the per-pixel terms (cross-entropy, focal)
    class_weights: Any = dataclasses.field(default="none", metadata={"types": (str, list)})
    focal_gamma: float = 2.0  # focal loss: (1 - p)^gamma; 0 is cross-entropy
    # A ResNet FCN with model.aux: loss = main + aux_weight x the auxiliary head's (torchvision's reference: 0.5);
    # 0 keeps the auxiliary head as it starts, untrained
    aux_weight: float = 0.5
    batch_size: int = 1  # images per forward pass per process
    iter_size: int = 20  # forward/backward passes accumulated per update (global batch = batch_size * iter_size * processes)
    max_iter: int = 100000  # parameter updates (unused with a time_budget)
    # Train for this much time instead of max_iter updates: "300s", "5m", "1.5h" ("" = off). The poly schedule
    # then runs over time (lr factor from time spent / budget); the time is that of the updates and their
    # data, not of validations and checkpoints; a resumed run continues the remaining budget.
    time_budget: str = ""
    lr_policy: str = "fixed"  # fixed | poly | step
    lr_power: float = 0.9  # poly: lr * (1 - iter / max_iter) ** power
    lr_step: int = 0  # step: multiply the lr by lr_gamma every lr_step updates
    lr_gamma: float = 0.1
    warmup_iter: int = 0  # linear warm-up from 0 over this many updates
    grad_clip: float = 0.0  # clip the global gradient norm to this; 0 = off
    val_every: int = 4000  # validate every N updates (and at the end); 0 = only at the end
    # Also validate once this much training time has passed since the last validation: "30s", "2m"
    # ("" = off), so that a slow machine's curves get points too. Counted as time_budget counts.
    val_every_time: str = ""
    # Stop early once target_validations validations in a row reach this mean IU (a fraction; 0 = off).
    target_mean_iu: float = 0.0
    target_validations: int = 2
    checkpoint_every: int = 1000  # write checkpoints/last.pt every N updates (and at the end)
    log_every: int = 20  # log a line every N updates
    per_class_curves: bool = False  # also per_class_curves.png: each class's validation IU over the run
    num_panels: int = 4  # validation images drawn as image | ground truth | prediction
    # At the end, fit the calibration temperature on the validation split (fcnseg.calibration) and store it in
    # checkpoints/last.pt and best.pt: probabilities and confidence maps then match how often the model is right.
    calibrate: bool = True
    seed: int = 0
    deterministic: bool = False  # deterministic algorithms (slower); with it, a resumed run repeats the same losses
    device: str = "auto"  # auto (cuda if present) | cpu | cuda | cuda:N
    # auto: fp16 autocast on CUDA, bf16 on CPUs with native bf16, else fp32 (fcnseg.precision) | fp32 | bf16 | fp16
    precision: str = "auto"
    # Memory layout: auto (per CPU kind and precision, as measured: fcnseg.precision.resolve_execution)
    # | channels_last (NHWC) | contiguous (NCHW). Earlier configs' channels_last true/false are read as these.
    layout: str = "auto"
    # torch.compile of the training step: auto (only where a measurement on this kind of CPU found it faster,
    # and the run is long enough to earn its compile back: fcnseg.training.compile) | on | off
    compile: str = "auto"
    # checkpoint of a coarser FCN to start from (16s from 32s, 8s from 16s), or of a ResNet FCN to fine-tune (ours,
    # or any file load_model reads: torchvision's fcn_resnet50/101_coco)
    init_from: str = ""
    classifier_weights: str = ""  # ImageNet VGG16 (net surgery, paper section 4) or ResNet-50/101 classifier to start from
    # How the classes of the init_from checkpoint are read in the data set's (docs/data.md, "Class names"):
    # a class map file ("data name -> model name" per line) that reorders or renames them, or
    # ignore_class_names to copy the score layers by index whatever the names say.
    class_map: str = ""
    ignore_class_names: bool = False
    # A BatchNorm net (ResNet FCNs, the small net with batch_norm) started from trained weights: whether its BatchNorm
    # layers keep the statistics they came with (eval mode while training; their scale and shift still learn).
    # auto: frozen where the run starts from trained weights (init_from, classifier_weights) and the batch a BatchNorm
    # sees (batch_size x processes) is under FREEZE_BATCH_NORM_BELOW images, whose statistics are too noisy to
    # replace ImageNet's or COCO's (torchvision's reference recipe trains them at 32 images); on | off.
    freeze_batch_norm: str = "auto"
    # A late-fusion net's streams from single-stream checkpoints, {stream: checkpoint}: each trunk and
    # score_fr from its own net (nyud-fcn32s-color-hha/solve.py starts from the color and the HHA FCN-32s).
    init_streams_from: dict = dataclasses.field(default_factory=dict)
    # A net with several heads trains on the sum of their losses, head i weighted by head_weights[i];
    # [] = 1 each (siftflow-fcn*: two SoftmaxWithLoss layers of loss weight 1).
    head_weights: list = dataclasses.field(default_factory=list)

    def validate(self, source: str = "train config") -> "TrainConfig":
        choices = {"optimizer": OPTIMIZERS, "lr_policy": LR_POLICIES, "precision": PRECISIONS, "layout": LAYOUTS,
                   "freeze_batch_norm": FREEZE_BATCH_NORM}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{source}: {name} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        self.compile = check_compile_setting(self.compile, f"{source}: compile")
        for name in ("batch_size", "iter_size", "max_iter", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{source}: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "bias_lr_mult", "bias_decay_mult", "grad_clip", "momentum"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{source}: {name} must be >= 0, got {getattr(self, name)}")
        for name in ("val_every", "checkpoint_every", "warmup_iter", "num_panels", "lr_step"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{source}: {name} must be >= 0, got {getattr(self, name)}")
        if self.lr_policy == "step" and self.lr_step < 1:
            raise ConfigError(f"{source}: lr_policy 'step' needs lr_step >= 1")
        parts = self.loss.split("+")
        if not 1 <= len(parts) <= 2 or any(p not in LOSSES for p in parts):
            raise ConfigError(f"{source}: loss {self.loss!r} is not one of {', '.join(LOSSES)} or two of them joined by '+'")
        weights = self.class_weights
        if isinstance(weights, str) and weights not in ("none", "auto"):
            raise ConfigError(f"{source}: class_weights {weights!r} is not none, auto or a list of numbers")
        if isinstance(weights, list) and not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights
        ):
            raise ConfigError(f"{source}: class_weights must be non-negative numbers, one per class; found {weights!r}")
        if self.focal_gamma < 0:
            raise ConfigError(f"{source}: focal_gamma must be >= 0, got {self.focal_gamma}")
        if self.aux_weight < 0:
            raise ConfigError(f"{source}: aux_weight must be >= 0, got {self.aux_weight}")
        if self.init_from and self.classifier_weights:
            raise ConfigError(f"{source}: give init_from (an FCN checkpoint) or classifier_weights, not both")
        if self.init_streams_from and (self.init_from or self.classifier_weights):
            raise ConfigError(f"{source}: give init_streams_from, init_from or classifier_weights, one of them")
        if not all(isinstance(k, str) and isinstance(v, str) and v for k, v in self.init_streams_from.items()):
            raise ConfigError(f"{source}: init_streams_from maps stream names to checkpoint files, found "
                              f"{self.init_streams_from!r}")
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in self.head_weights):
            raise ConfigError(f"{source}: head_weights must be numbers >= 0, one per head; found {self.head_weights!r}")
        self.head_weights = [float(w) for w in self.head_weights]
        parse_duration(self.time_budget, f"{source}: time_budget")
        parse_duration(self.val_every_time, f"{source}: val_every_time")
        if not 0.0 <= self.target_mean_iu <= 1.0:
            raise ConfigError(f"{source}: target_mean_iu is a fraction in [0, 1] (0.9 = 90% mean IU; 0 = off), "
                              f"got {self.target_mean_iu}")
        if self.target_validations < 1:
            raise ConfigError(f"{source}: target_validations must be >= 1, got {self.target_validations}")
        return self

    @property
    def val_every_seconds(self) -> float | None:
        """``val_every_time`` in seconds, or None when validations follow the update count only."""
        return parse_duration(self.val_every_time, "train.val_every_time")

    @property
    def time_budget_seconds(self) -> float | None:
        """The time budget in seconds, or None when the run counts updates (``max_iter``)."""
        return parse_duration(self.time_budget, "train.time_budget")


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, where: str = "duration") -> float | None:
    """``"90s"``, ``"5m"``, ``"1.5h"`` (or a bare number of seconds) -> seconds; ``""`` -> None.

    Raises:
        ConfigError: not a positive number with one of the units s, m, h (naming ``where``).
    """
    text = text.strip().lower()
    if not text:
        return None
    number, unit = (text[:-1], text[-1]) if text[-1] in _DURATION_UNITS else (text, "s")
    try:
        seconds = float(number) * _DURATION_UNITS[unit]
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"{where}: expected a positive duration such as 90s, 5m or 1.5h, found {text!r}")
    return seconds


# Named recipes. A preset fills settings below the config file and the flags, section by section.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The CVPR paper (section 4.3) for FCN-VGG16: the TrainConfig defaults, spelled out.
    "paper-cvpr": {
        "model": {"backbone": "vgg16", "pad": 100, "learn_upsampling": False, "dropout": 0.5},
        "train": {
            "optimizer": "sgd", "lr": 1e-4, "momentum": 0.9, "weight_decay": 5e-4, "bias_lr_mult": 2.0,
            "bias_decay_mult": 0.0, "normalize_loss": True, "batch_size": 1, "iter_size": 20, "lr_policy": "fixed",
        },
        "data": {"mirror": True, "crop_size": 0, "scale_min": 1.0, "scale_max": 1.0},
    },
    # The released reference solvers (voc-fcn32s/solver.prototxt): "heavy learning", an unnormalised
    # loss summed over pixels, batch 1, momentum 0.99, lr 1e-10 (their 16s and 8s stages use 1e-12 and 1e-14).
    "paper-heavy": {
        "model": {"backbone": "vgg16", "pad": 100, "learn_upsampling": False, "dropout": 0.5},
        "train": {
            "optimizer": "sgd", "lr": 1e-10, "momentum": 0.99, "weight_decay": 5e-4, "bias_lr_mult": 2.0,
            "bias_decay_mult": 0.0, "normalize_loss": False, "batch_size": 1, "iter_size": 1, "lr_policy": "fixed",
            "max_iter": 100000,
        },
        "data": {"mirror": True, "crop_size": 0, "scale_min": 1.0, "scale_max": 1.0},
    },
    # Deviation: a modern recipe for the small CPU net trained from scratch (no ImageNet weights), where the
    # paper's SGD at 1e-4 barely moves. BatchNorm in the trunk: without it the net never left the
    # all-background answer on the outline-classed synthetic shapes. Fixed bilinear upsampling: learning
    # it under AdamW only drifted it. lr 4e-3, chosen on "blobs" with 2 minutes of training each (1e-3: 57.4%,
    # 2e-3: 68.9%, 4e-3: 84.4% mean IU; docs/training.md), the "same" trunk making ~1100 updates of it.
    # Checked on real images (MNI brain slices to tune, DSB nuclei held out; docs/training.md): lr 1e-2, batch 4
    # and fp32 ended within 1.2 points of these values, at 1.7-1.8x a plain FCN's mean IU in the same CPU time.
    "small-cpu": {
        "model": {"backbone": "small", "padding": "same", "dropout": 0.1, "learn_upsampling": False, "batch_norm": True},
        "train": {
            "optimizer": "adamw", "lr": 4e-3, "momentum": 0.9, "weight_decay": 1e-4, "bias_lr_mult": 1.0,
            "bias_decay_mult": 0.0, "normalize_loss": True, "batch_size": 8, "iter_size": 1, "lr_policy": "poly",
            "lr_power": 0.9, "warmup_iter": 50, "max_iter": 2000, "val_every": 250, "checkpoint_every": 250,
            "grad_clip": 5.0,
        },
        "data": {"mirror": True, "crop_size": 128, "scale_min": 0.75, "scale_max": 1.25, "normalization": "imagenet_rgb"},
    },
}
SECTIONS = ("model", "data", "train")


@dataclass
class RunConfig:
    """A whole training run: model, data and training settings, and the preset they started from."""

    preset: str = ""  # one of PRESETS, or "" for the dataclass defaults
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    # True when no layer of the settings (preset, stored run, file, flags) gave model.num_classes or model.heads:
    # the run takes the count from its data set's classes (fcnseg.training.datasets.take_class_count).
    # Not a setting: never written out, set by resolve_run_config.
    num_classes_from_data: bool = dataclasses.field(default=False, compare=False)
    # True when no layer of the settings gave model.backbone or model.arch: a run whose train.init_from holds a ResNet
    # FCN builds that ResNet (fcnseg.training.initialization.take_backbone_from_weights). Not a setting either.
    backbone_from_weights: bool = dataclasses.field(default=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON friendly); ``RunConfig.from_dict(cfg.to_dict())`` rebuilds it."""
        values = dataclasses.asdict(self)
        values.pop("num_classes_from_data")
        values.pop("backbone_from_weights")
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str) -> "RunConfig":
        """Build from ``{"preset": ..., "model": {...}, "data": {...}, "train": {...}}`` (sections optional)."""
        values = upgrade_legacy_keys(values, source)
        check_run_dict(values, source)
        config = cls(
            preset=values.get("preset") or "",
            model=from_dict(ModelConfig, values.get("model", {}), f"{source}: model"),
            data=from_dict(DataConfig, values.get("data", {}), f"{source}: data"),
            train=from_dict(TrainConfig, values.get("train", {}), f"{source}: train"),
        )
        heads = [name for name, _ in config.model.output_heads()]
        if config.train.head_weights and len(config.train.head_weights) != len(heads):
            raise ConfigError(f"{source}: train.head_weights has {len(config.train.head_weights)} weights but the "
                              f"model has the {len(heads)} heads {heads}")
        if len(heads) > 1 and config.train.class_weights != "none":
            raise ConfigError(f"{source}: train.class_weights weighs the classes of one head; the model has the "
                              f"heads {heads}: leave class_weights at none (head_weights weighs the heads)")
        return config


# The model fields every run config stored whole (config.yaml, a checkpoint's run_config) had before
# ``padding`` existed: such a model section was built with the paper geometry, whatever its preset says now.
_MODEL_FIELDS_BEFORE_PADDING = frozenset({"arch", "backbone", "num_classes", "pad", "learn_upsampling", "dropout",
                                          "batch_norm"})


def upgrade_legacy_keys(values: Any, source: str = "settings") -> Any:
    """Settings written by earlier versions, in today's words: ``train.amp`` (auto | fast | off | bf16 | fp16)
    becomes ``train.precision`` (off -> fp32, fast -> auto); ``train.channels_last`` (true | false | auto)
    becomes ``train.layout`` (channels_last | contiguous | auto); ``train.compile`` true / false (YAML's reading
    of a bare on / off) becomes on / off; a stored model section without ``padding``
    gets ``padding: paper``, the geometry it was built with (the small-cpu preset now says "same").
    Returns a new dict; other values unchanged.

    Raises:
        ConfigError: a ``train.channels_last`` that is none of true, false and auto."""
    if not isinstance(values, dict):
        return values
    model = values.get("model")
    if isinstance(model, dict) and "padding" not in model and _MODEL_FIELDS_BEFORE_PADDING <= set(model):
        values = {**values, "model": {**model, "padding": "paper"}}
    if isinstance(values.get("train"), dict) and isinstance(values["train"].get("compile"), bool):
        # YAML reads a bare ``compile: on`` / ``off`` as true / false
        values = {**values, "train": {**values["train"], "compile": LEGACY_COMPILE[values["train"]["compile"]]}}
    if not isinstance(values.get("train"), dict) or not {"amp", "channels_last"} & set(values["train"]):
        return values
    train = dict(values["train"])
    if "amp" in train:
        amp = train.pop("amp")
        train.setdefault("precision", LEGACY_PRECISIONS.get(amp, amp))
    if "channels_last" in train:
        legacy = train.pop("channels_last")
        if not isinstance(legacy, (bool, str)) or legacy not in LEGACY_LAYOUTS:
            raise ConfigError(f"{source}: train.channels_last {legacy!r} is not true, false or auto "
                              f"(it is now train.layout: {', '.join(LAYOUTS)})")
        train.setdefault("layout", LEGACY_LAYOUTS[legacy])
    return {**values, "train": train}


def check_run_dict(values: Any, source: str) -> None:
    """Raise ConfigError naming ``source`` for an unknown section, preset, or key inside a section."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, found {type(values).__name__}")
    unknown = sorted(set(values) - {"preset", *SECTIONS})
    if unknown:
        raise ConfigError(f"{source}: unknown {'key' if len(unknown) == 1 else 'keys'} {', '.join(unknown)}; expected preset, {', '.join(SECTIONS)}")
    preset = values.get("preset") or ""
    if preset and preset not in PRESETS:
        raise ConfigError(f"{source}: unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    classes = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
    for section, cls in classes.items():
        part = values.get(section, {})
        if not isinstance(part, dict):
            raise ConfigError(f"{source}: section '{section}' must be a mapping, found {type(part).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(part) - known)
        if bad:
            raise ConfigError(f"{source}: unknown {'key' if len(bad) == 1 else 'keys'} {', '.join(f'{section}.{k}' for k in bad)}; known {section} keys: {', '.join(sorted(known))}")


def merge_settings(*layers: dict[str, Any]) -> dict[str, Any]:
    """Merge nested run-setting dicts; later layers win key by key inside each section."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key in SECTIONS:
                merged.setdefault(key, {}).update(value or {})
            else:
                merged[key] = value
    return merged


def resolve_run_config(
    file: str | Path | None = None, overrides: dict[str, Any] | None = None, base: dict[str, Any] | None = None
) -> RunConfig:
    """Resolve a run's settings: defaults < preset < ``base`` < config ``file`` < ``overrides`` (the flags).

    Where no layer gives ``model.num_classes`` (or ``model.heads``), ``num_classes_from_data`` is set: the run
    takes its class count from the data set instead of the default 21.

    Args:
        file: YAML or JSON config file, or None.
        overrides: nested dict from the command line, e.g. ``{"train": {"lr": 1e-3}}``.
        base: settings below the file (e.g. the stored config of a run being resumed).
    Returns:
        The validated RunConfig. Unknown keys raise ConfigError naming the file (or "command line") and key.
    """
    layers: list[tuple[dict[str, Any], str]] = []
    if base:
        layers.append((base, "stored run config"))
    if file is not None:
        layers.append((load_file(file), str(file)))
    if overrides:
        layers.append((overrides, "command line"))
    layers = [(upgrade_legacy_keys(values, source), source) for values, source in layers]
    for values, source in layers:
        check_run_dict(values, source)
    preset = ""
    for values, _ in layers:
        preset = values.get("preset") or preset
    merged = merge_settings(PRESETS.get(preset, {}), *(values for values, _ in layers))
    merged["preset"] = preset
    model = merged.get("model") or {}
    if model.get("backbone") in RESNET_BACKBONES and "arch" not in model:
        # a ResNet FCN has one architecture; the default fcn8s is the VGG family's
        merged["model"] = {**model, "arch": RESNET_ARCH}
    source = " + ".join(s for _, s in layers) or "defaults"
    config = RunConfig.from_dict(merged, source)
    given = [PRESETS.get(preset, {}), *(values for values, _ in layers)]
    config.num_classes_from_data = not any({"num_classes", "heads"} & set(values.get("model") or {}) for values in given)
    config.backbone_from_weights = not any({"backbone", "arch"} & set(values.get("model") or {}) for values in given)
    return config

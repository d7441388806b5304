"""Typed settings: dataclasses whose defaults reproduce the paper, and strict loading from files and dicts."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fcnseg.errors import ConfigError

T = TypeVar("T")

ARCHES = ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce")
BACKBONES = ("vgg16", "alexnet", "small")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a network; stored in every checkpoint."""

    arch: str = "fcn8s"  # fcn32s | fcn16s | fcn8s | fcn8s-atonce
    backbone: str = "vgg16"  # vgg16 | alexnet | small
    num_classes: int = 21  # PASCAL VOC: 20 classes + background
    pad: int = 100  # zero padding of the first convolution, pixels (reference nets: 100)
    # The reference nets fix every deconvolution to bilinear interpolation (lr_mult 0);
    # the paper (section 4.2) also reports learning the 2x ones. Either is a flag away.
    learn_upsampling: bool = False
    dropout: float = 0.5  # after fc6 and fc7, as in VGG16 and the reference nets

    def validate(self, source: str = "model config") -> "ModelConfig":
        if self.arch not in ARCHES:
            raise ConfigError(f"{source}: arch {self.arch!r} is not one of {', '.join(ARCHES)}")
        if self.backbone not in BACKBONES:
            raise ConfigError(f"{source}: backbone {self.backbone!r} is not one of {', '.join(BACKBONES)}")
        if self.backbone == "alexnet" and self.arch != "fcn32s":
            raise ConfigError(
                f"{source}: the AlexNet backbone has no pool3/pool4 skips; only arch 'fcn32s' exists for it "
                f"(got {self.arch!r})"
            )
        if self.num_classes < 1:
            raise ConfigError(f"{source}: num_classes must be >= 1, got {self.num_classes}")
        if self.pad < 0:
            raise ConfigError(f"{source}: pad must be >= 0, got {self.pad}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{source}: dropout must be in [0, 1), got {self.dropout}")
        return self


def from_dict(cls: type[T], values: dict[str, Any], source: str) -> T:
    """Build dataclass ``cls`` from ``values``; an unknown key or a wrong type is a ConfigError naming ``source``."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, found {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(fields)}")
    kwargs = {}
    for name, value in values.items():
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

"""Where a model meets data: class names compared by name, not only by count."""

from __future__ import annotations

from fcnseg.errors import ConfigError


def match_classes(model_names, data_names, *, model_source: str, data_source: str, class_map=None,
                  ignore_names: bool = False):
    """Raise unless the two class lists are equal."""
    if list(model_names) != list(data_names) and not ignore_names:
        raise ConfigError(f"{model_source} predicts {list(model_names)} but {data_source} has {list(data_names)}")
    return None


def read_class_map(path) -> dict[str, str]:
    """``data name -> model name`` per line."""
    pairs = {}
    for line in open(path, encoding="utf-8"):
        if "->" in line:
            a, b = line.split("->", 1)
            pairs[a.strip()] = b.strip()
    return pairs

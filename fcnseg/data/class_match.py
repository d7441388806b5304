"""Class names where a model meets data: compare a model's class list with a data set's (or a folder's, or another
model's) by name, and say how to read one in the other's terms, or stop and show both lists side by side.

The rule (docs/data.md, "Class names"): identical lists fit; anything else (another order, other names, another
count) is an error unless the user gives a class map (``--class-map FILE``) or says to compare counts only
(``--ignore-class-names``). Generic names (``class_0``, ``class_1``, ... of a model that was never told its names)
fit any list of the same count, with a warning.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fcnseg.data.classes import IGNORE_INDEX
from fcnseg.files import read_text
from fcnseg.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ARROW = "->"
PREDICTION_CLASS_FILE = "classes.txt"  # beside a prediction folder's label maps: the predicting model's classes
REMEDY = (
    "remedies: --class-map FILE, one 'data name -> model name' per line (e.g. 'aeroplane -> airplane'; it reorders "
    "or renames; a data class mapped to nothing ('bridge ->') or absent from the model is scored as ignore), or "
    "--ignore-class-names (compare the counts only and match classes by index, at your own risk)"
)
_GENERIC = re.compile(r"class[_ ](\d+)")


@dataclass(frozen=True)
class ClassMapping:
    """How to read a data set's labels in a model's terms.

    Attributes:
        model_names, data_names: the two class lists, in label order (whitespace stripped).
        data_to_model: for each data class index, the model class index it is, or None (scored as ignore);
            None for the whole field when no remapping is needed (same lists, generic names, or ignored names).
        ignored_names: the user said ``--ignore-class-names`` (classes matched by index).
        model_source, data_source: where each list came from, for messages.
    """

    model_names: tuple[str, ...]
    data_names: tuple[str, ...]
    data_to_model: tuple[int | None, ...] | None
    ignored_names: bool = False
    model_source: str = "the model"
    data_source: str = "the data"

    @property
    def identity(self) -> bool:
        """True when data label ``i`` is model class ``i`` for every label."""
        return self.data_to_model is None

    def lookup_table(self) -> np.ndarray:
        """int64 ``[256]``: data label value -> model label value (unmapped classes and 255 -> 255)."""
        table = np.full(256, IGNORE_INDEX, dtype=np.int64)
        if self.data_to_model is None:
            table[: len(self.data_names)] = np.arange(len(self.data_names))
        else:
            for data_index, model_index in enumerate(self.data_to_model):
                if model_index is not None:
                    table[data_index] = model_index
        return table

    def remap_mask(self, mask):
        """Data label ids -> model ids (numpy array or torch tensor ``[H, W]`` or ``[N, H, W]``, any int dtype).

        Data classes without a model class and the ignore label become ``IGNORE_INDEX`` (255), and so do values
        outside ``0..255``: check the data's label range before remapping. Returns the same kind of array, int64
        (``mask`` itself when no remapping is needed).
        """
        if self.data_to_model is None:
            return mask
        table = self.lookup_table()
        if hasattr(mask, "numpy") and not isinstance(mask, np.ndarray):  # a torch tensor
            import torch

            return torch.as_tensor(table, device=mask.device)[mask.long().clamp(0, 255)]
        return table[np.clip(np.asarray(mask).astype(np.int64), 0, 255)]

    def unmapped_data_names(self) -> list[str]:
        """The data classes scored as ignore (mapped to nothing, or absent from the model)."""
        if self.data_to_model is None:
            return []
        return [name for name, m in zip(self.data_names, self.data_to_model) if m is None]

    def describe(self) -> str:
        """One line for the log: how the data's classes are read."""
        if self.ignored_names:
            return (f"class names not compared (--ignore-class-names): {len(self.data_names)} classes of "
                    f"{self.data_source} read by index as those of {self.model_source}")
        if self.data_to_model is None:
            return f"the {len(self.model_names)} classes of {self.data_source} are those of {self.model_source}"
        moved = [f"{d} -> {self.model_names[m]}" for d, m in zip(self.data_names, self.data_to_model)
                 if m is not None and (self.data_names.index(d) != m or self.model_names[m] != d)]
        ignored = self.unmapped_data_names()
        text = f"classes of {self.data_source} read in the terms of {self.model_source} by the class map"
        if moved:
            text += f"; moved or renamed: {', '.join(moved)}"
        if ignored:
            text += f"; scored as ignore: {', '.join(ignored)}"
        return text


def is_generic(names) -> bool:
    """True for ``class_0, class_1, ...`` (or ``class 0, ...``): the names of a model or folder never told its names."""
    for index, name in enumerate(names):
        found = _GENERIC.fullmatch(name)
        if found is None or int(found.group(1)) != index:
            return False
    return len(names) > 0


def match_classes(model_names, data_names, *, model_source: str, data_source: str,
                  class_map: dict[str, str | None] | None = None, ignore_names: bool = False) -> ClassMapping:
    """Compare a model's classes with a data set's by name; return how to read the data in the model's terms.

    Args:
        model_names: the model's (or the prediction folder's, or the reference checkpoint's) classes in label order.
        data_names: the data set's (or the ground truth's, or the other model's) classes in label order.
        model_source, data_source: where each came from (a file path), named by messages.
        class_map: data name -> model name, or None (the data class is scored as ignore); data classes it
            does not list keep their name. From :func:`read_class_map`.
        ignore_names: compare the counts only and match by index (logged as a warning).
    Returns:
        ClassMapping; ``data_to_model`` None when the lists are identical or either is generic.
    Raises:
        ConfigError: the lists differ (order, names or count) without a class map or ``ignore_names``; a list
            holds a name twice; the class map names a data class the data does not have or a model class the
            model does not have; ``ignore_names`` with different counts. The message shows both lists side
            by side and the remedies.
    """
    model = tuple(str(n).strip() for n in model_names)
    data = tuple(str(n).strip() for n in data_names)
    for names, source in ((model, model_source), (data, data_source)):
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"{source} lists the class{'es' if len(twice) > 1 else ''} {', '.join(map(repr, twice))} "
                              "more than once; each class name must be unique")
    common = dict(model_names=model, data_names=data, model_source=model_source, data_source=data_source)
    if class_map is not None:
        return ClassMapping(data_to_model=_mapped(model, data, class_map, model_source, data_source), **common)
    if model == data:
        return ClassMapping(data_to_model=None, **common)
    if ignore_names:
        if len(model) != len(data):
            raise ConfigError(f"--ignore-class-names compares the counts only, and they differ: {model_source} has "
                              f"{len(model)} classes, {data_source} {len(data)}\n{side_by_side(model, data)}")
        log.warning("class names not compared (--ignore-class-names): %s and %s matched by index; they differ:\n%s",
                    model_source, data_source, side_by_side(model, data))
        return ClassMapping(data_to_model=None, ignored_names=True, **common)
    generic = [source for names, source in ((model, model_source), (data, data_source)) if is_generic(names)]
    if generic and len(model) == len(data):
        other = data_source if generic[0] == model_source else model_source
        log.warning("%s has no class names (only generic ones: class_0, class_1, ...), so its classes cannot be "
                    "checked against %s's; they are matched by index", generic[0], other)
        return ClassMapping(data_to_model=None, **common)
    raise ConfigError(mismatch_message(model, data, model_source, data_source))


def mismatch_message(model: tuple[str, ...], data: tuple[str, ...], model_source: str, data_source: str) -> str:
    """The error for two class lists that differ: what differs, both lists side by side, the remedies."""
    if len(model) != len(data):
        what = f"{model_source} has {len(model)} classes but {data_source} has {len(data)}"
    elif sorted(model) == sorted(data):
        what = f"{model_source} and {data_source} have the same {len(model)} class names in another order"
    else:
        only_model = [n for n in model if n not in data]
        only_data = [n for n in data if n not in model]
        what = (f"{model_source} and {data_source} name their classes differently "
                f"(only the model's: {', '.join(only_model)}; only the data's: {', '.join(only_data)})")
    return f"class names differ: {what}; nothing was scored or trained by index\n{side_by_side(model, data)}\n{REMEDY}"


def side_by_side(model, data) -> str:
    """Both class lists as a table: index, model name, data name, ``<- differs`` where they differ."""
    model, data = list(model), list(data)
    width = max([len("model")] + [len(n) for n in model])
    data_width = max([len("data")] + [len(n) for n in data])
    lines = [f"  {'index':>5}  {'model':<{width}}  data"]
    for index in range(max(len(model), len(data))):
        m = model[index] if index < len(model) else "-"
        d = data[index] if index < len(data) else "-"
        mark = "" if m == d else "  <- differs"
        lines.append(f"  {index:>5}  {m:<{width}}  {d:<{data_width}}{mark}".rstrip())
    return "\n".join(lines)


def _mapped(model: tuple[str, ...], data: tuple[str, ...], class_map: dict[str, str | None], model_source: str,
            data_source: str) -> tuple[int | None, ...] | None:
    """data index -> model index under ``class_map`` (unlisted data names keep their name); None for the identity."""
    unknown = [name for name in class_map if name not in data]
    if unknown:
        raise ConfigError(f"the class map names the data class{'es' if len(unknown) > 1 else ''} "
                          f"{', '.join(map(repr, unknown))}, which {data_source} does not have "
                          f"(its classes: {', '.join(data)})")
    absent = [target for target in class_map.values() if target is not None and target not in model]
    if absent:
        raise ConfigError(f"the class map maps to {', '.join(map(repr, absent))}, which {model_source} does not have "
                          f"(its classes: {', '.join(model)})")
    index = {name: i for i, name in enumerate(model)}
    data_to_model = tuple(index.get(class_map.get(name, name)) if class_map.get(name, name) is not None else None
                          for name in data)
    return None if data_to_model == tuple(range(len(model))) else data_to_model


def read_class_map(path: str | Path) -> dict[str, str | None]:
    """Read a class map: one ``data name -> model name`` per line; ``data name ->`` maps the class to nothing.

    Blank lines and lines starting with ``#`` are skipped; names are stripped and may hold spaces.

    Returns:
        dict data name -> model name, or None (scored as ignore).
    Raises:
        DataError: the file cannot be read, a line has no ``->`` or no data name, or a data name is listed twice
            (the message names the file and line).
    """
    path = Path(path)
    lines = read_text(path, what="class map").splitlines()
    mapping: dict[str, str | None] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        source, arrow, target = line.partition(ARROW)
        source, target = " ".join(source.split()), " ".join(target.split())
        if not arrow or not source:
            raise DataError(f"line {number} {line!r}: expected 'data name -> model name' (or 'data name ->' to "
                            "score the class as ignore)", path=path)
        if source in mapping:
            raise DataError(f"line {number}: the data class {source!r} is mapped twice", path=path)
        mapping[source] = target or None
    if not mapping:
        raise DataError("the class map maps no class; expected lines 'data name -> model name'", path=path)
    return mapping

"""Class names and colours: the 21 PASCAL VOC classes, the small class file of a generic data set, and the per-class pixel counter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fcnseg.errors import ConfigError, DataError
from fcnseg.files import atomic_write_text, read_text

IGNORE_INDEX = 255  # VOC marks object borders and "difficult" pixels with 255; never scored, never trained on

# PASCAL VOC 2012 segmentation classes, in label order (index 0 is background).
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


@dataclass(frozen=True)
class ClassInfo:
    """Class names in label order, with one RGB colour per class when the class file gives them."""

    names: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class ClassSource:
    """Where a data set's classes came from, for messages that have to say why it has that many.

    ``file`` is the class file read, if any; ``missing_file`` the class file that was looked for and
    not found when defaults were assumed instead (VOC's 21 classes for a VOC-layout tree without
    ``classes.txt``); ``description`` says it in words.
    """

    description: str
    file: Path | None = None
    missing_file: Path | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> "ClassSource":
        return cls(f"the class file {path}", file=Path(path))

    @classmethod
    def assumed(cls, what: str, missing_file: str | Path) -> "ClassSource":
        """``what`` (e.g. ``the 21 PASCAL VOC classes``) taken for want of ``missing_file``."""
        missing_file = Path(missing_file)
        return cls(f"{what} assumed: no {missing_file.name} in {missing_file.parent}", missing_file=missing_file)


def check_class_count(dataset, num_classes: int, what: str = "model.num_classes", fix: str | None = None) -> None:
    """Raise unless ``dataset`` has ``num_classes`` classes, saying where the data set's classes came from.

    Args:
        dataset: any fcnseg data set (``num_classes``, ``class_names``; ``class_source`` and ``root`` if it has them).
        num_classes: the count it must have (a model's, a setting's).
        what: the setting or thing that holds ``num_classes``, as the message names it.
        fix: what else the user can do; default ``set {what}: {the data set's count}``.
    Raises:
        ConfigError: the counts differ. When the classes were assumed for want of a class file the message
            says so and names that file as the way to give the data set its own classes.
    """
    found = dataset.num_classes
    if found == num_classes:
        return
    names = list(dataset.class_names)
    shown = ", ".join(names[:6]) + (", ..." if found > 6 else "")
    root = getattr(dataset, "root", None)
    where = f"the data set at {root}" if root is not None else "the data set"
    source: ClassSource | None = getattr(dataset, "class_source", None)
    fix = fix or f"set {what}: {found}"
    message = f"{what} is {num_classes} but {where} has {found} classes ({shown})"
    if source is not None and source.missing_file is not None:
        raise ConfigError(
            f"{message}, {source.description}; if the data set has classes of its own, list its {num_classes} "
            f"classes in {source.missing_file}, one name per line in label order; otherwise {fix}"
        )
    if source is not None:
        message += f", from {source.description}"
    raise ConfigError(f"{message}; {fix}")


def parse_class_line(line: str) -> tuple[str, tuple[int, int, int] | None]:
    """One class-file line -> ``(name, colour or None)``.

    The colour is exactly the last three whitespace-separated tokens when each is an integer 0..255 and a
    name precedes them; otherwise the whole line is the name. So ``digit 0``, ``traffic light`` and
    ``type 2 diabetes`` are names, and ``traffic light 250 170 30`` is a name and a colour. Runs of
    spaces inside a name read as one space.
    """
    tokens = line.split()
    if len(tokens) >= 4 and all(_is_byte(t) for t in tokens[-3:]):
        r, g, b = (int(t) for t in tokens[-3:])
        return " ".join(tokens[:-3]), (r, g, b)
    return " ".join(tokens), None


def read_class_file(path: str | Path) -> ClassInfo:
    """Read a class file: one class per line in label order, ``name`` or ``name R G B``.

    Blank lines and lines starting with ``#`` are skipped. A name may contain spaces and digits; a line's
    colour is its last three tokens when each is an integer 0..255 (see :func:`parse_class_line`). Either
    every class has a colour or none has.

    Raises:
        DataError: the file is missing or empty, has a duplicate name, mixes lines with and without
            colours, or has more than 255 classes (255 is the ignore label).
    """
    path = Path(path)
    lines = read_text(path, what="class file").splitlines()
    names: list[str] = []
    colours: list[tuple[int, int, int] | None] = []
    numbers: list[int] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, colour = parse_class_line(line)
        if name in names:
            raise DataError(f"{path}:{number}: class {name!r} is listed twice")
        names.append(name)
        colours.append(colour)
        numbers.append(number)
    if not names:
        raise DataError(f"class file {path} lists no classes; expected one name per line")
    if len(names) > IGNORE_INDEX:
        raise DataError(f"class file {path} lists {len(names)} classes; at most {IGNORE_INDEX} fit below the ignore label")
    with_colour = sum(c is not None for c in colours)
    if 0 < with_colour < len(names):
        first = next(i for i, c in enumerate(colours) if c is None)
        raise DataError(
            f"class file {path}: {with_colour} of {len(names)} classes have a colour; expected all or none "
            f"(line {numbers[first]} {lines[numbers[first] - 1].strip()!r} has none; a colour is the line's "
            "last three numbers, each 0..255)"
        )
    return ClassInfo(tuple(names), tuple(colours) if with_colour else None)  # type: ignore[arg-type]


def write_class_file(path: str | Path, info: ClassInfo) -> None:
    """Write ``info`` (atomically) in the format :func:`read_class_file` reads, so that it reads back equal.

    Raises:
        DataError: a name would not read back as itself: empty, with a line break, starting with ``#``,
            with runs of spaces, or (without colours) ending in three numbers 0..255, which would read as
            a colour. Nothing is written then.
    """
    path = Path(path)
    lines = ["# one class per line in label order: name [R G B]"]
    for i, name in enumerate(info.names):
        line = name if info.colours is None else "{} {} {} {}".format(name, *info.colours[i])
        problem = _unwritable(name, line)
        if problem:
            raise DataError(f"class {i} {name!r} cannot be written to a class file: {problem}", path=path)
        lines.append(line)
    atomic_write_text("\n".join(lines) + "\n", path)


def _unwritable(name: str, line: str) -> str | None:
    """Why ``line`` (``name`` with its colour, if any) would not read back as ``name``; None if it would."""
    if not name.strip():
        return "the name is empty"
    if "\n" in name or "\r" in name:
        return "the name holds a line break"
    if name.strip().startswith("#"):
        return "the name starts with '#', which marks a comment line"
    read_name, _ = parse_class_line(line)
    if read_name == name:
        return None
    if read_name != " ".join(name.split()):
        return f"it reads back as a name and a colour ({read_name!r} and the last three numbers)"
    return f"it reads back as {read_name!r}"


def _is_byte(token: str) -> bool:
    """True for a token that is an integer 0..255 (a colour component)."""
    return token.isascii() and token.isdigit() and int(token) <= 255


def class_pixel_counts(labels, num_classes: int) -> np.ndarray:
    """int64 ``[num_classes]``: how many pixels of a label map (array ``[H, W]``, any int dtype) hold each class.

    Values outside ``0..num_classes-1`` (the ignore label 255) are not counted. The one per-class
    pixel counter: anything that counts pixels per class (prediction statistics, class areas) uses it.
    """
    flat = np.asarray(labels).ravel()
    flat = flat[(flat >= 0) & (flat < num_classes)] if flat.size and (flat.min() < 0 or flat.max() >= num_classes) else flat
    return np.bincount(flat.astype(np.int64, copy=False), minlength=num_classes)[:num_classes].astype(np.int64)

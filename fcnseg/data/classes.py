"""Class names and colours: the 21 PASCAL VOC classes and the small class file of a generic data set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fcnseg.errors import DataError

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


def read_class_file(path: str | Path) -> ClassInfo:
    """Read a class file: one class per line in label order, ``name`` or ``name R G B``.

    Blank lines and lines starting with ``#`` are skipped. A name may contain spaces (``potted plant``);
    the colour, if any, is the last three integers of the line (0..255). Either every class has a
    colour or none has.

    Raises:
        DataError: the file is missing, empty, has a malformed colour, a duplicate name, mixes
            lines with and without colours, or has more than 255 classes (255 is the ignore label).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"class file {path} cannot be read: {e}") from e
    names: list[str] = []
    colours: list[tuple[int, int, int] | None] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = line.split()
        colour = None
        if len(tokens) >= 4 and all(_is_int(t) for t in tokens[-3:]):
            colour = tuple(int(t) for t in tokens[-3:])
            if not all(0 <= c <= 255 for c in colour):
                raise DataError(f"{path}:{number}: colour {colour} has values outside 0..255")
            tokens = tokens[:-3]
        elif any(_is_int(t) for t in tokens[1:]):
            raise DataError(f"{path}:{number}: expected 'name' or 'name R G B', found {line!r}")
        name = " ".join(tokens)
        if name in names:
            raise DataError(f"{path}:{number}: class {name!r} is listed twice")
        names.append(name)
        colours.append(colour)
    if not names:
        raise DataError(f"class file {path} lists no classes; expected one name per line")
    if len(names) > IGNORE_INDEX:
        raise DataError(f"class file {path} lists {len(names)} classes; at most {IGNORE_INDEX} fit below the ignore label")
    with_colour = sum(c is not None for c in colours)
    if 0 < with_colour < len(names):
        raise DataError(
            f"class file {path}: {with_colour} of {len(names)} classes have a colour; expected all or none"
        )
    return ClassInfo(tuple(names), tuple(colours) if with_colour else None)  # type: ignore[arg-type]


def write_class_file(path: str | Path, info: ClassInfo) -> None:
    """Write ``info`` in the format :func:`read_class_file` reads."""
    lines = ["# one class per line in label order: name [R G B]"]
    for i, name in enumerate(info.names):
        if info.colours is not None:
            r, g, b = info.colours[i]
            lines.append(f"{name} {r} {g} {b}")
        else:
            lines.append(name)
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True

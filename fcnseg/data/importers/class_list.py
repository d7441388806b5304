"""The class list of an import: label names cleaned for the class file, background first, a colour for each."""

from __future__ import annotations

from collections.abc import Sequence

from fcnseg.data.classes import IGNORE_INDEX, ClassInfo
from fcnseg.data.palette import voc_palette
from fcnseg.errors import DataError

BACKGROUND = "background"
# Label names that mean label 0 in every format (labelme's labels.txt spells it _background_).
BACKGROUND_NAMES = ("background", "_background_")
# Label names that mean the ignore label 255 (labelme2voc's convention).
IGNORE_NAMES = ("__ignore__",)


def clean_name(name: object, where: str) -> str:
    """A label name as the class file stores it: runs of white space become one space.

    Raises:
        DataError: the name is not a string, is empty, or starts with ``#`` (a comment in the class file).
    """
    if not isinstance(name, str):
        raise DataError(f"{where}: label name {name!r} is not a string")
    cleaned = " ".join(name.split())
    if not cleaned:
        raise DataError(f"{where}: a label name is empty; expected a name such as 'cat'")
    if cleaned.startswith("#"):
        raise DataError(f"{where}: label name {name!r} starts with '#', which the class file reads as a comment")
    return cleaned


def special_label(name: str) -> int | None:
    """0 for a background name, 255 for an ignore name, None for a class of its own."""
    if name in BACKGROUND_NAMES:
        return 0
    if name in IGNORE_NAMES:
        return IGNORE_INDEX
    return None


def class_info(
    names: Sequence[str], colours: Sequence[tuple[int, int, int]] | None = None, *, where: str
) -> ClassInfo:
    """``ClassInfo`` for classes ``names`` (label order; ``names[0]`` is the background).

    Every class gets a colour (the VOC palette's by default) so that the class file's lines read back
    whatever the name holds (a name ending in numbers is safe only when a colour follows it).

    Raises:
        DataError: a name is listed twice, or there are more than 255 classes.
    """
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise DataError(f"{where}: class {name!r} is listed twice (labels {seen[name]} and {i}); expected unique names")
        seen[name] = i
    if len(names) > IGNORE_INDEX:
        raise DataError(f"{where}: {len(names)} classes; at most {IGNORE_INDEX} fit below the ignore label {IGNORE_INDEX}")
    if colours is None:
        palette = voc_palette(256)
        colours = [tuple(int(v) for v in palette[i]) for i in range(len(names))]
    return ClassInfo(tuple(names), tuple(tuple(int(v) for v in c) for c in colours))  # type: ignore[arg-type]

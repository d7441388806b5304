"""The class list of an import: label names cleaned for the class file, in the one class order, a colour for each.

The class order of every importer (COCO, labelme, CVAT), whatever the tool, the category ids or the
order labels first appear in: background is 0, then the category names sorted alphabetically,
case-insensitively, ties broken by the exact string (``Cat`` before ``cat``). A class file
(``--classes``) imposes its own order instead; every category found must be in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from fcnseg.data.classes import IGNORE_INDEX, ClassInfo, read_class_file
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


def class_order(name: str) -> tuple[str, str]:
    """Sort key of the class order: alphabetical, case-insensitive, ties by the exact string."""
    return name.casefold(), name


def import_classes(
    names: Iterable[str],
    class_file: Path | None = None,
    *,
    where: str,
    colours: Mapping[str, tuple[int, int, int]] | None = None,
) -> tuple[ClassInfo, dict[str, int]]:
    """The classes of an import and ``label name -> class index``, by the one class order.

    Args:
        names: the category names found in the export (cleaned; background and ignore names allowed).
        class_file: a class file (fcnseg's, or labelme's labels.txt with ``__ignore__`` and
            ``_background_``) fixing the order; ``background`` is put first if its first class is not a
            background name. Its classes absent from the annotations are kept.
        where: the export, for messages.
        colours: name -> colour the export gives (CVAT's labelmap; ``background`` for label 0), used
            when every class has one and the class file gives none; else the VOC palette.
    Returns:
        ``(ClassInfo, index)``: ``index`` maps every found name, the background names (0) and the
        ignore names (255) to a label.
    Raises:
        DataError: a found category is not in the class file (all such names listed), or the class
            list is not valid (a name twice, more than 255 classes).
    """
    found = {name for name in names if special_label(name) is None}
    file_colours = None
    if class_file is None:
        ordered = [BACKGROUND] + sorted(found, key=class_order)
    else:
        info = read_class_file(class_file)
        rows = [(name, info.colours[i] if info.colours else None) for i, name in enumerate(info.names) if name not in IGNORE_NAMES]
        if not rows or rows[0][0] not in BACKGROUND_NAMES:
            rows.insert(0, (BACKGROUND, (0, 0, 0)))
        ordered = [BACKGROUND] + [name for name, _ in rows[1:]]
        unknown = sorted(found - set(ordered), key=class_order)
        if unknown:
            listed = ", ".join(repr(name) for name in unknown)
            raise DataError(f"{len(unknown)} categor{'y' if len(unknown) == 1 else 'ies'} of {where} not in the class "
                            f"file: {listed}; add {'it' if len(unknown) == 1 else 'them'} to the class file (one name a line) "
                            "or leave --classes out", path=class_file)
        file_colours = [colour for _, colour in rows] if info.colours else None
    if file_colours is None and colours is not None and all(name in colours for name in ordered):
        file_colours = [colours[name] for name in ordered]
    index = {name: 0 for name in BACKGROUND_NAMES}
    index.update({name: IGNORE_INDEX for name in IGNORE_NAMES})
    index.update({name: i for i, name in enumerate(ordered) if i > 0})
    return class_info(ordered, file_colours, where=str(class_file or where)), index


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

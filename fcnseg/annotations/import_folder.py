"""The folder an import writes: images/ (original bytes where possible), masks/ (palette PNGs), classes.txt, split files."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from fcnseg.data.classes import ClassInfo, write_class_file
from fcnseg.data.palette import palette_for, write_mask_png
from fcnseg.errors import DataError
from fcnseg.files import atomic_write, atomic_write_bytes, atomic_write_text
from fcnseg.images import IMAGE_SUFFIXES, read_image, save_rgb

IMAGE_DIR, MASK_DIR, CLASS_FILE = "images", "masks", "classes.txt"
TRAIN, VAL = "train", "val"
STAGING_SUFFIX = ".importing"  # .<out name>.<random>.importing: an unfinished import's folder beside OUT

# Leading bytes of the image files an embedded image (labelme imageData) may hold -> the suffix it is written with.
MAGIC_SUFFIXES = (
    (b"\xff\xd8\xff", ".jpg"),
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"BM", ".bmp"),
    (b"GIF87a", ".gif"),
    (b"GIF89a", ".gif"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
)


def safe_name(stem: str) -> str:
    """The name an item is written under: white space becomes ``_`` (split files hold one name a line,
    read up to the first space) and a leading ``.`` becomes ``_`` (hidden files are not listed)."""
    name = "_".join(stem.split()) or "_"
    return "_" + name[1:] if name.startswith(".") else name


def check_out(out: Path) -> None:
    """Refuse an output folder that holds anything: an import never mixes with, or replaces, a user's files.

    Raises:
        DataError: ``out`` exists and is not an empty folder.
    """
    if out.exists():
        if not out.is_dir():
            raise DataError("exists and is not a folder; expected a new or empty output folder", path=out)
        if any(out.iterdir()):
            raise DataError("is not empty; expected a new or empty output folder (choose another, or remove this "
                            "one yourself to import again: an import never overwrites files)", path=out)


def staging_folder(out: Path) -> Path:
    """A new hidden folder beside ``out`` (``.<name>.<random>.importing``) holding images/ and masks/, where
    an import writes everything before :func:`publish` renames it to ``out``.

    Beside ``out`` so that the rename stays on one file system; with the permissions of a new folder
    (the umask's), not ``mkdtemp``'s owner-only ones.

    Raises:
        DataError: the folder cannot be created there (no such place, no permission).
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=STAGING_SUFFIX, dir=out.parent))
    except OSError as e:
        raise DataError(f"cannot write beside it in {out.parent} ({e.strerror or e}); expected a folder "
                        "that can be created", path=out) from e
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    (staging / IMAGE_DIR).mkdir()
    (staging / MASK_DIR).mkdir()
    return staging


def publish(staging: Path, out: Path) -> None:
    """Rename the finished ``staging`` folder to ``out`` (replacing ``out`` only if it is an empty folder).

    Raises:
        DataError: ``out`` gained files while the import ran (``staging`` is left for the caller to remove).
    """
    check_out(out)
    try:
        if out.is_dir():
            out.rmdir()
        os.rename(staging, out)
    except OSError as e:
        raise DataError(f"cannot be created from the finished import ({e.strerror or e}); expected a new or "
                        "empty output folder", path=out) from e


def copy_image(source: Path, out: Path, name: str) -> Path:
    """Write the image file ``source`` as ``out/images/<name><suffix>`` and return that path.

    The original bytes are copied (no re-encoding; the folder data set applies EXIF orientation
    when it reads them, as the import did to size the mask). A file whose suffix the folder data
    set does not list (``IMAGE_SUFFIXES``) is decoded and written as PNG instead.
    """
    suffix = source.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        target = out / IMAGE_DIR / f"{name}{suffix}"
        atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
    else:
        target = out / IMAGE_DIR / f"{name}.png"
        save_rgb(read_image(source), target)
    return target


def write_image_bytes(data: bytes, out: Path, name: str) -> Path:
    """Write embedded image bytes as ``out/images/<name><suffix>``, the suffix from the bytes' file signature.

    Raises:
        DataError: the bytes are not a JPEG, PNG, BMP, GIF, TIFF or WebP file.
    """
    suffix = next((s for magic, s in MAGIC_SUFFIXES if data.startswith(magic)), None)
    if suffix is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        suffix = ".webp"
    if suffix is None:
        raise DataError(f"embedded image data ({len(data)} bytes) is not a JPEG, PNG, BMP, GIF, TIFF or WebP file")
    target = out / IMAGE_DIR / f"{name}{suffix}"
    atomic_write_bytes(data, target)
    return target


def write_mask(mask: np.ndarray, out: Path, name: str, classes: ClassInfo) -> Path:
    """Write a label map (uint8 ``[H, W]``) as the palette PNG ``out/masks/<name>.png`` in the classes' colours."""
    target = out / MASK_DIR / f"{name}.png"
    write_mask_png(mask, target, palette_for(classes))
    return target


def write_classes(out: Path, classes: ClassInfo) -> Path:
    target = out / CLASS_FILE
    atomic_write(target, lambda tmp: write_class_file(tmp, classes))
    return target


def choose_split(names: list[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Split ``names`` into ``train`` and ``val`` (each sorted); the same names, fraction and seed give the same split.

    ``round(val_fraction * n)`` names go to val, at least one when ``val_fraction > 0`` and at least
    one stays in train; with ``val_fraction == 0`` (or a single name) there is no val split.
    """
    ordered = sorted(names)
    count = round(val_fraction * len(ordered))
    if val_fraction > 0 and len(ordered) >= 2:
        count = min(max(count, 1), len(ordered) - 1)
    else:
        count = 0
    order = np.random.default_rng(seed).permutation(len(ordered))
    val = {ordered[i] for i in order[:count]}
    split = {TRAIN: [n for n in ordered if n not in val]}
    if val:
        split[VAL] = [n for n in ordered if n in val]
    return split


def write_splits(out: Path, splits: dict[str, list[str]]) -> None:
    """Write ``out/<split>.txt``, one name a line, for the folder data set's ``split``."""
    for split, names in splits.items():
        atomic_write_text("".join(f"{n}\n" for n in names), out / f"{split}.txt")

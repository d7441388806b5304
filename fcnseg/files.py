"""Files written so that a reader never sees half of one, JSON that strict readers accept, and sizes in bytes.

Every file fcnseg writes goes through :func:`atomic_write` or :func:`atomic_open`: a temp file beside
the target, then a rename. Temp files are hidden (``.<stem>.<random>.tmp<suffix>``), keep the
target's suffix for writers that pick the format from it (Pillow, ``np.save``), get the permissions
of any other new file (the umask's), and are recognisable as leftovers by :data:`TEMP_GLOB`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from fcnseg.errors import ConfigError, DataError

TEMP_GLOB = ".*.tmp*"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _new_temp(path: Path) -> Path:
    """A temp file beside ``path`` with the mode a plain ``open(path, "w")`` would give it.

    ``mkstemp`` creates files 0600 so that nobody else can read them; for results that would keep
    a run's outputs from the other users of a shared machine.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return Path(tmp)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None], durable: bool = False) -> None:
    """Call ``write(tmp)`` on a temp file beside ``path``, then rename it over ``path``.

    A crash or interrupt mid-write leaves ``path`` as it was (or absent) and no temp file behind
    (a SIGKILL can leave one, which :func:`sweep_temp_files` removes), so a job that finds ``path``
    knows it is complete. ``durable`` also fsyncs the file and the folder, so that the rename
    survives a power cut (for checkpoints).
    """
    path = Path(path)
    tmp = _new_temp(path)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_folder(path.parent)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", durable: bool = False) -> Iterator[IO]:
    """``with atomic_open(path) as f: ...``: stream into a temp file, renamed over ``path`` on success.

    For outputs too large to build in memory first (ONNX graphs, probability arrays written band by
    band). ``mode`` is ``"wb"`` (seekable, for writers that fill a file out of order) or ``"w"``.
    An exception inside the block removes the temp file and leaves ``path`` as it was.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes new files only (mode 'wb' or 'w'), not {mode!r}")
    path = Path(path)
    tmp = _new_temp(path)
    try:
        with open(tmp, "r+b" if mode == "wb" else "w", encoding=None if mode == "wb" else "utf-8") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_folder(path.parent)


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(text: str, path: str | Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def sweep_temp_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Remove the temp files a killed writer left in ``folder`` (and below, if ``recursive``); returns them.

    Call it only where no other process is writing, e.g. when a run (re)starts in its own folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(TEMP_GLOB) if recursive else folder.glob(TEMP_GLOB)
    removed = [p for p in found if p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


# --- text in -----------------------------------------------------------------------------------------

UTF8_BOM = b"\xef\xbb\xbf"


def read_text(path: str | Path, what: str = "text file") -> str:
    """The text of a UTF-8 file (a leading UTF-8 byte-order mark dropped): the one reader of the text
    files users give (class files, split lists, labelmaps, label lists, annotation JSON).

    Args:
        path: the file.
        what: what the file is, for messages (``"class file"``, ``"split file"``).
    Raises:
        DataError: the file is missing or unreadable, or not UTF-8; the message names the file, the line
            and byte offset of the first bad byte and the remedy (save it as UTF-8).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise DataError(f"{what} not found", path=path) from e
    except IsADirectoryError as e:
        raise DataError(f"is a folder; expected a {what}", path=path) from e
    except OSError as e:
        raise DataError(f"{what} cannot be read ({e.strerror or e})", path=path) from e
    start = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = start + e.start
        line = data.count(b"\n", 0, offset) + 1
        raise DataError(
            f"{what} is not UTF-8 text: byte 0x{data[offset]:02x} at byte offset {offset} (line {line}) "
            f"cannot be decoded; expected UTF-8 (with or without a byte-order mark): save the file as UTF-8",
            path=path,
        ) from e


# --- outputs checked before the work ---------------------------------------------------------------


def check_output_path(path: str | Path, kind: str = "file", flag: str = "output") -> Path:
    """Raise a ConfigError now, before any work, if ``path`` could not be written when the work is done.

    Args:
        path: the output a command will write: a file (``kind="file"``, replaced atomically if it exists)
            or a folder (``kind="folder"``, created with its parents if missing).
        flag: how the user named it (``"-o"``, ``"--report"``), for the message.

    Refused: a folder named as a file or a file named as a folder, a path under a regular file, and a path
    whose nearest existing folder this process may not write (``os.access``). Returns ``path`` as a Path.
    """
    if kind not in ("file", "folder"):
        raise ValueError(f"kind must be 'file' or 'folder', not {kind!r}")
    path = Path(path)
    if kind == "file" and path.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder, expected a file name; name a file, e.g. {path / 'out'}")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: is an existing file, expected a folder; name a new or existing folder "
                          "(the file is left as it is)")
    existing = (path if kind == "folder" else path.parent).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the nearest ancestor that exists: where the first mkdir or write happens
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path}: {existing} is a file, not a folder, so nothing can be written under it; "
                          "choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: the folder {existing} is not writable by this user; choose another path "
                          "or make the folder writable")
    return path


# --- JSON --------------------------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """A copy that strict JSON accepts: NaN and infinities become None; tuples, arrays and tensors become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and hasattr(value, "ndim"):  # numpy and torch arrays and scalars
        return json_safe(value.tolist())
    return value


def to_json(obj: Any) -> str:
    """Strict, indented JSON text (NaN -> null) ending in a newline."""
    return json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n"


def write_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as strict JSON (NaN -> null), atomically."""
    atomic_write_text(to_json(obj), path)


# --- words and sizes ------------------------------------------------------------------------------


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 image``, ``2 images``, ``0 images``; ``nouns`` for irregular forms (``plural(n, "image has", "images have")``)."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


def format_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # unreachable: the loop returns at TiB


def parse_bytes(text: str) -> int:
    """``'4GiB'``, ``'512M'``, ``'2.5G'``, ``'1000000'`` -> bytes (K/M/G/T are powers of 1024)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(I?B)?\s*", str(text).upper())
    if not match:
        raise ValueError(f"cannot read {text!r} as a size; expected e.g. 4GiB, 512MiB, 2G or a number of bytes")
    scale = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[match.group(2)]
    return int(float(match.group(1)) * scale)

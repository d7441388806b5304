"""Write files so that a reader never sees half of one: a temp file beside the target, then a rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

# Temp files are named ".<stem>.<random>.tmp<suffix>": hidden, recognisable as leftovers by TEMP_GLOB,
# and keeping the target's suffix for writers that pick the format from it (Pillow, np.save).
TEMP_GLOB = ".*.tmp*"


def atomic_write(path: str | Path, write: Callable[[Path], None], durable: bool = False) -> None:
    """Call ``write(tmp)`` on a temp file beside ``path``, then rename it over ``path``.

    A crash or interrupt mid-write leaves ``path`` as it was (or absent) and no temp file behind,
    so a job that finds ``path`` knows it is complete. ``durable`` also fsyncs the file and the
    folder, so that the rename survives a power cut (for checkpoints).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        try:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(text: str, path: str | Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

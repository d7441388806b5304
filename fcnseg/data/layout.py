"""Where a data set's files are: the folder a user names, the tree inside it that marks a layout, and split lists."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fcnseg.errors import DataError
from fcnseg.files import read_text


def require_folder(path: str | Path) -> Path:
    """``path`` as a Path if it is an existing folder.

    Raises:
        DataError: ``"PATH: no such folder"`` or ``"PATH: not a folder"`` (a file), so that a mistyped data
            set root is one line naming it rather than an OSError from a listing.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError("not a folder" if path.exists() else "no such folder", path=path)
    return path


def read_split_file(path: str | Path) -> list[str]:
    """Names listed one per line (blank lines skipped; only the first column is used)."""
    text = read_text(path, what="split file")
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def available_splits(folder: Path) -> list[str]:
    """The split names a folder offers: the stems of its ``*.txt`` files, sorted."""
    return sorted(p.stem for p in folder.glob("*.txt"))


@dataclass(frozen=True)
class TreeLayout:
    """How to recognise a layout's root from the folder a user names.

    ``subfolders`` are tried in order (``""`` is the folder itself); the first that holds every one of
    ``markers`` is the root (a marker ending in ``/`` must be a folder, any other a file). ``title`` and
    ``expected`` make the error when none does: ``"ROOT is not a <title> tree: expected <expected>"``.
    """

    title: str
    subfolders: tuple[str, ...]
    markers: tuple[str, ...]
    expected: str

    def holds(self, folder: Path) -> bool:
        """Whether ``folder`` holds every marker."""
        return all((folder / m).is_dir() if m.endswith("/") else (folder / m).is_file() for m in self.markers)

    def locate(self, root: str | Path) -> Path | None:
        """The first of ``root``'s candidate subfolders that holds the markers, or None."""
        root = Path(root)
        return next((root / sub for sub in self.subfolders if self.holds(root / sub)), None)

    def find(self, root: str | Path) -> Path:
        """:meth:`locate`, or a DataError naming ``root`` and what the layout needs.

        Raises:
            DataError: ``root`` is missing, not a folder, or holds no such tree.
        """
        root = require_folder(root)
        found = self.locate(root)
        if found is None:
            raise DataError(f"{root} is not a {self.title} tree: expected {self.expected}")
        return found

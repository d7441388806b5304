"""The one reader of label maps stored as a 2-D array under a key of a MATLAB file (NYUD, SIFT Flow, PASCAL-Context)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from fcnseg.errors import DataError


def read_mat_label_map(path: str | Path, key: str) -> np.ndarray:
    """The ``[H, W]`` array stored under ``key`` in the ``.mat`` file ``path``, as stored (the caller maps labels).

    Raises:
        DataError: the file cannot be read as a MATLAB file, lacks ``key`` (the keys found are named), or
            its array is not two-dimensional.
    """
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises ValueError, OSError or its own MatReadError for a bad file
        raise DataError(f"cannot be read as a MATLAB file ({type(e).__name__}: {e})", path=path) from e
    if key not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"expected the key {key!r} holding the label map, found keys {found}", path=path)
    labels = np.asarray(mat[key])
    if labels.ndim != 2:
        raise DataError(f"{key!r} has shape {labels.shape}; expected H x W", path=path)
    return labels

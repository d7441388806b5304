"""Real labelled images that come with installed packages, written as fcnseg folder data sets (nothing is downloaded).

* ``brain``: the MNI ICBM152 2009a T1 template that nilearn ships (``nilearn/datasets/data``), sliced into
  2-D images; labels from its grey- and white-matter probability maps (a class where its map is >= 50% and
  above the other's; elsewhere background). Training: axial slices; validation: coronal slices, an
  orientation training never sees. Licence: the ICBM152 templates' (free use with their copyright notice,
  Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute).
* ``nuclei``: the fluorescence microscopy image and its nucleus mask from the 2018 Data Science Bowl that
  stardist ships (``stardist.data.test_image_nuclei_2d(return_mask=True)``, Caicedo et al., Nature Methods
  2019; the DSB stage-1 data are CC0), 512x512, cut into 16 tiles of 128x128: 12 to train on, the 4 on the
  diagonal held out. Labels: background and nucleus (the instance ids merged), small objects on ~80% background.

    python benchmarks/real_data.py data/real      # writes data/real/brain and data/real/nuclei
"""

from __future__ import annotations

import argparse
import glob
import os
from pathlib import Path

import numpy as np
from PIL import Image

SETS = ("brain", "nuclei")
CLASSES = {"brain": ["background", "grey matter", "white matter"], "nuclei": ["background", "nucleus"]}


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Scale ``image`` (any dtype) to 0..255 over its own range."""
    image = image.astype(np.float64)
    low, high = float(image.min()), float(image.max())
    return np.round(255 * (image - low) / max(high - low, 1e-9)).astype(np.uint8)


def brain_slices() -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """{"train": axial slices, "val": coronal slices}, each (uint8 [H, W] image, uint8 [H, W] labels 0..2)."""
    import nibabel

    import nilearn

    folder = Path(nilearn.__file__).parent / "datasets" / "data"

    def volume(kind: str) -> np.ndarray:
        (path,) = glob.glob(str(folder / f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"))
        return np.asarray(nibabel.load(path).get_fdata())  # [197, 233, 189]: x, y, z

    t1, grey, white = volume("t1"), volume("gm"), volume("wm")
    labels = np.zeros(t1.shape, np.uint8)
    labels[(grey >= 128) & (grey >= white)] = 1
    labels[(white >= 128) & (white > grey)] = 2
    image = _to_uint8(t1)
    # Axial slices (fixed z) for training, coronal (fixed y) for validation, each rotated so the head is upright.
    train = [(np.rot90(image[:, :, z]), np.rot90(labels[:, :, z])) for z in range(30, 160, 3)]
    val = [(np.rot90(image[:, y, :]), np.rot90(labels[:, y, :])) for y in range(40, 200, 10)]
    return {"train": train, "val": val}


def nuclei_tiles() -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """{"train": 12 tiles, "val": the 4 diagonal tiles} of stardist's 2-D nucleus image, 128x128 each."""
    from stardist.data import test_image_nuclei_2d

    image, mask = test_image_nuclei_2d(return_mask=True)  # uint16 [512, 512] each; mask: instance ids
    image, labels = _to_uint8(image), (mask > 0).astype(np.uint8)
    splits: dict[str, list] = {"train": [], "val": []}
    for row in range(4):
        for col in range(4):
            tile = (slice(128 * row, 128 * (row + 1)), slice(128 * col, 128 * (col + 1)))
            splits["val" if row == col else "train"].append((image[tile], labels[tile]))
    return splits


def write_set(name: str, root: Path) -> Path:
    """Write set ``name`` under ``root / name`` in the folder layout (``classes.txt``, ``train/images``,
    ``train/masks``, ``val/...``), grey images as RGB PNGs; kept as it is when already there."""
    out = root / name
    if (out / "classes.txt").exists():
        return out
    splits = brain_slices() if name == "brain" else nuclei_tiles()
    for split, pairs in splits.items():
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "masks").mkdir(parents=True, exist_ok=True)
        for index, (image, labels) in enumerate(pairs):
            stem = f"{name}-{split}-{index:03d}"
            Image.fromarray(np.ascontiguousarray(np.stack([image] * 3, axis=-1))).save(out / split / "images" / f"{stem}.png")
            Image.fromarray(np.ascontiguousarray(labels)).save(out / split / "masks" / f"{stem}.png")
    tmp = out / "classes.txt.tmp"
    tmp.write_text("".join(f"{c}\n" for c in CLASSES[name]))
    os.replace(tmp, out / "classes.txt")  # written last: its presence means the set is whole
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, nargs="?", default=Path("data/real"))
    args = p.parse_args()
    for name in SETS:
        print(write_set(name, args.root))


if __name__ == "__main__":
    main()

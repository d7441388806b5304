"""NYUDv2, the 40-class task of Gupta et al. (paper section 5): colour, HHA and depth PNGs, .mat label maps, split lists.

The layout and preprocessing are those of the reference data layer (fcn.berkeleyvision.org ``nyud_layers.py``):
``ROOT/{train,val,test}.txt`` ids, ``data/images/img_<id>.png``, ``data/hha/img_<id>.png``, ``data/depth/img_<id>.png``,
``segmentation/img_<id>.mat`` (key ``segmentation``, 0 = void, 1..40 the classes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fcnseg.data.base import FileDataset, RawItem
from fcnseg.data.classes import IGNORE_INDEX, ClassInfo
from fcnseg.data.items import InputStream
from fcnseg.data.kinds import NYUD_MODALITIES
from fcnseg.data.layout import TreeLayout, read_split_file
from fcnseg.data.mat_labels import read_mat_label_map
from fcnseg.data.normalization import (
    NYUD_BGR,
    NYUD_HHA,
    NYUD_LOG_DEPTH,
    InputSpec,
    LogDepthNormalization,
    Normalization,
)
from fcnseg.data.scan import Sample
from fcnseg.errors import DataError
from fcnseg.images import DEFAULT_MAX_PIXELS, open_image

# The 40 classes in model output order (reference data/nyud/classes.txt; label k+1 in the .mat files is class k).
NYUD_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat",
    "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel", "shower curtain", "box", "whiteboard",
    "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)  # fmt: skip

# modality -> (folder under ROOT, channels it contributes)
MODALITY_FILES = {"color": ("data/images", 3), "hha": ("data/hha", 3), "depth": ("data/depth", 1)}

# The `modalities` option -> (modalities read, in channel order; streams the channels form).
# One stream is a single trunk (color+depth: early fusion, a 4-channel conv1_1 as nyud-fcn32s-color-d);
# two streams are two trunks whose scores are fused (color+hha: late fusion, as nyud-fcn32s-color-hha).
MODALITY_OPTIONS = {  # keys: fcnseg.data.kinds.NYUD_MODALITIES, in its order
    "color": (("color",), (InputStream("color", 3),)),
    "hha": (("hha",), (InputStream("hha", 3),)),
    "depth": (("depth",), (InputStream("depth", 1),)),
    "color+depth": (("color", "depth"), (InputStream("color+depth", 4),)),
    "color+hha": (("color", "hha"), (InputStream("color", 3), InputStream("hha", 3))),
}

LABEL_KEY = "segmentation"
TRAINVAL = "trainval"  # the reference trains on trainval; read from trainval.txt, else train.txt + val.txt


NYUD_TREE = TreeLayout(
    "NYUDv2",
    ("", "nyud"),
    ("segmentation/", "data/"),
    "data/images/, data/hha/ or data/depth/, segmentation/ and <split>.txt",
)


def find_nyud_root(root: str | Path) -> Path:
    """``root`` if it holds ``segmentation/`` and ``data/``, else ``root/nyud``."""
    return NYUD_TREE.find(root)


def nyud_file(root: Path, modality: str, name: str) -> Path:
    """Where the reference keeps modality ``modality`` of item ``name``: ``ROOT/data/<folder>/img_<name>.png``."""
    return root / MODALITY_FILES[modality][0] / f"img_{name}.png"


def nyud_label_file(root: Path, name: str) -> Path:
    return root / "segmentation" / f"img_{name}.mat"


def map_nyud_labels(stored: np.ndarray) -> np.ndarray:
    """Stored labels (0 = void, 1..40) -> int64 class indices 0..39 with void 255, as the reference's ``label - 1`` on uint8.

    Other stored values become ``value - 1`` and are reported by the scan as out of range.
    """
    stored = np.asarray(stored).astype(np.int64)
    return np.where(stored == 0, IGNORE_INDEX, stored - 1)


def read_nyud_mat(path: str | Path) -> np.ndarray:
    """Read ``segmentation/img_<id>.mat`` (key ``segmentation``, ``[H, W]``) -> int64 ``[H, W]``, 0..39 and 255."""
    return map_nyud_labels(read_mat_label_map(path, LABEL_KEY))


def read_depth(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A depth map as stored, float32 ``[H, W]`` (NYUD: 16-bit PNG, millimetres).

    Not :func:`fcnseg.images.read_image`, which turns 16-bit greys into 8-bit RGB for viewing: depth needs its values.
    Opened through :func:`fcnseg.images.open_image`, so the same pixel limit applies: a file whose header claims
    more than ``max_pixels`` pixels (``None`` or 0: no limit) is refused before it is decoded.

    Raises:
        DataError: an unreadable, empty or multi-channel file; ImageTooLargeError (a DataError) past the limit.
    """
    path = Path(path)
    try:
        with open_image(path, max_pixels) as image:
            image.load()
            depth = np.asarray(image)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError) as e:
        if path.is_file() and path.stat().st_size == 0:
            raise DataError("empty file (0 bytes)", path=path) from e
        raise DataError(f"cannot read the depth map ({type(e).__name__}: {e})", path=path) from e
    if depth.ndim != 2:
        raise DataError(f"depth map has shape {depth.shape}; expected one channel (a 16-bit grey PNG)", path=path)
    return depth.astype(np.float32)


def depth_picture(depth: np.ndarray) -> np.ndarray:
    """A depth map drawn as RGB uint8 ``[H, W, 3]`` (near = bright), for panels of a depth-only data set."""
    top = float(depth.max(initial=0.0)) or 1.0
    grey = np.clip(255.0 * (1.0 - depth / top), 0, 255).round().astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


class NYUDDataset(FileDataset):
    """NYUDv2, 40 classes, with the reference's inputs and preprocessing.

    Args:
        root: the NYUD folder (``root/nyud`` is accepted too).
        split: a ``<split>.txt`` at the root (``train``, ``val``, ``test``), or ``trainval``
            (``trainval.txt``, else ``train.txt`` + ``val.txt``).
        modalities: ``color``, ``hha``, ``depth``, ``color+depth`` (4-channel early fusion) or
            ``color+hha`` (6 channels, two streams for late fusion): :data:`fcnseg.data.kinds.NYUD_MODALITIES`.
        normalization: the colour normalisation (default ``nyud_bgr``: RGB -> BGR minus NYUD's mean
            ``(116.190, 97.203, 92.318)``); ``hha_normalization`` (default: minus ``(132.431, 94.076,
            118.477)``, file channel order) and ``depth_normalization`` (default ``log(depth) - 7.844``)
            the others. :meth:`use_inputs` replaces them after construction.
        transform, scan, scan_workers: as in :class:`fcnseg.data.base.FileDataset`.

    Items: ``(image float32 [C, H, W], mask int64 [H, W])`` with the channels of ``modalities`` in
    order (C = 3 color, 3 hha, 1 depth, 4 color+depth = B, G, R, log depth; 6 color+hha = B, G, R,
    then the three HHA channels); ``streams`` says how they split into trunks, ``heads`` is one
    ``semantic`` head of the 40 classes, and ``normalization`` is the first modality's
    (``input_normalizations`` has each).
    """

    kind = "nyud"
    tree = NYUD_TREE
    default_normalization = NYUD_BGR
    image_by_stem = False
    class_table = ClassInfo(NYUD_CLASSES)
    read_mask = staticmethod(read_nyud_mat)

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        modalities: str = "color",
        hha_normalization: Normalization = NYUD_HHA,
        depth_normalization: LogDepthNormalization = NYUD_LOG_DEPTH,
        **common,
    ) -> None:
        if modalities not in MODALITY_OPTIONS:
            raise DataError(f"unknown NYUD modalities {modalities!r}; expected one of {list(NYUD_MODALITIES)}")
        self.modalities = modalities
        self.modality_names, self.input_streams = MODALITY_OPTIONS[modalities]
        self.input_normalizations = {"color": NYUD_BGR, "hha": hha_normalization, "depth": depth_normalization}
        super().__init__(root, split, **common)

    def use_inputs(self, normalization: Normalization | None = None, inputs: InputSpec | None = None):
        """As :meth:`fcnseg.data.base.SegmentationDataset.use_inputs`, per modality: ``inputs`` sets each
        modality's normalisation it names, ``normalization`` the colour one; ``normalization`` becomes the
        first modality's.

        Raises:
            DataError: ``inputs`` reads other modalities than this data set was opened with.
        """
        if inputs is not None:
            if inputs.modalities != self.modalities:
                raise DataError(
                    f"NYUD data set at {self.root} serves the modalities {self.modalities!r} but the model reads "
                    f"{inputs.modalities!r}; open it with modalities={inputs.modalities!r}"
                )
            self.input_normalizations.update(inputs.normalizations)
        if normalization is not None:
            self.input_normalizations["color"] = normalization
        self.normalization = self.input_normalizations[self.modality_names[0]]
        return self

    @property
    def input_spec(self) -> InputSpec:
        """The modalities read and each one's normalisation (what a checkpoint stores to be fed alike)."""
        return InputSpec(self.modalities, {m: self.input_normalizations[m] for m in self.modality_names})

    @property
    def in_channels(self) -> int:
        """Channels of an item's image (3, 1, 4 or 6)."""
        return sum(s.channels for s in self.input_streams)

    def split_names(self) -> list[str]:
        """``trainval`` falls back to ``train.txt`` + ``val.txt`` when the root has no ``trainval.txt``."""
        if self.split == TRAINVAL and not (self.root / f"{TRAINVAL}.txt").is_file():
            if (self.root / "train.txt").is_file() and (self.root / "val.txt").is_file():
                return read_split_file(self.root / "train.txt") + read_split_file(self.root / "val.txt")
        return super().split_names()

    def sample(self, name: str, images: dict[str, Path]) -> Sample:
        first, *others = (nyud_file(self.root, m, name) for m in self.modality_names)
        return Sample(name, first, nyud_label_file(self.root, name), extra_images=tuple(others))

    def read_size(self, path: Path) -> tuple[int, int]:
        if path.parent == self.root / MODALITY_FILES["depth"][0]:
            return tuple(read_depth(path).shape)
        return super().read_size(path)

    def load_raw(self, index: int) -> RawItem:
        sample = self.samples[index]
        paths = dict(zip(self.modality_names, (sample.image_path, *sample.extra_images)))
        inputs = {m: read_depth(p) if m == "depth" else self.read_image(p) for m, p in paths.items()}
        height, width = inputs[self.modality_names[0]].shape[:2]
        for modality, array in inputs.items():
            if array.shape[:2] != (height, width):
                raise DataError(
                    f"is {array.shape[1]}x{array.shape[0]} but {sample.image_path} is {width}x{height}", path=paths[modality]
                )
        picture = inputs["color"] if "color" in inputs else inputs.get("hha")
        if picture is None:
            picture = depth_picture(inputs["depth"])
        return RawItem(sample.name, picture, self.read_masks(sample, (height, width)), inputs)

    def image_tensor(self, raw: RawItem) -> torch.Tensor:
        parts = []
        for modality in self.modality_names:
            norm = self.input_normalizations[modality]
            if modality == "depth":
                parts.append(norm.depth_to_tensor(raw.inputs[modality]))  # [1, H, W]
            else:
                parts.append(norm.image_to_tensor(raw.inputs[modality]))  # [3, H, W]
        return torch.cat(parts)  # [C, H, W]

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, modalities={self.modalities!r})"


def nyud_options(spec: InputSpec) -> dict:
    """The :class:`NYUDDataset` keyword arguments that read the inputs ``spec`` describes (a checkpoint's)."""
    keys = {"color": "normalization", "hha": "hha_normalization", "depth": "depth_normalization"}
    return {"modalities": spec.modalities, **{keys[m]: n for m, n in spec.normalizations.items() if m in keys}}

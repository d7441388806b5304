"""Training items served from decoded uint8 images kept in memory (within a byte budget) and augmented in uint8.

Decoding a JPEG and its label PNG costs more than the small net's update on a crop of it, every
epoch again; held as uint8 the decoded set costs 4 bytes a pixel (image and mask) and is decoded once.
Caching changes no value and no random draw: an item is the same whether it came from memory or disk.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import Dataset

from fcnseg.data.base import RawItem, SegmentationDataset
from fcnseg.data.items import InputStream
from fcnseg.files import format_bytes

log = logging.getLogger(__name__)


def serves_rgb(dataset) -> bool:
    """Whether ``dataset``'s model input is its stored RGB picture normalised (one 3-channel colour stream,
    and no ``image_tensor`` of its own), so that the uint8 pipeline computes exactly what it serves."""
    own = getattr(type(dataset), "image_tensor", SegmentationDataset.image_tensor)
    return list(dataset.streams) == [InputStream("color", 3)] and own is SegmentationDataset.image_tensor


def raw_bytes(raw: RawItem) -> int:
    return raw.image.nbytes + raw.mask.nbytes


def compact_mask(mask: np.ndarray) -> np.ndarray:
    """A label map as uint8 where its values fit (class indices and 255), else unchanged (int64)."""
    if mask.size and 0 <= mask.min() and mask.max() <= 255:
        return mask.astype(np.uint8)
    return mask


class CachedItems(Dataset):
    """``(image float32 [3, H, W], mask int64 [H, W] or [K, H, W])`` from ``dataset``'s stored items, through
    ``transform`` applied to the uint8 image ``[3, h, w]`` (a view of the stored ``[h, w, 3]``) and the mask.

    ``transform`` must end in :class:`fcnseg.data.transforms.Normalize` (``train_transform(...,
    normalization=...)``). :meth:`fill` decodes items in index order while they fit ``budget_bytes``; the
    others are read from disk on every use, as are all with a budget of 0. Call it before a DataLoader
    starts its workers, so that they share the decoded images instead of each decoding its own. Every
    other attribute (``class_names``, ``heads``, ``palette``...) is the data set's.
    """

    def __init__(self, dataset, transform, budget_bytes: int = 0) -> None:
        assert serves_rgb(dataset), "the uint8 pipeline needs a data set that serves its RGB picture"
        self.dataset = dataset
        self.transform = transform
        self.budget_bytes = budget_bytes
        self.cached: dict[int, RawItem] = {}
        self.cached_bytes = 0

    def fill(self) -> int:
        """Decode items ``0, 1, ...`` into memory until the next would pass the budget; returns how many are held."""
        for index in range(len(self.dataset)):
            if index in self.cached:
                continue
            try:
                raw = self.dataset.load_raw(index)
            except Exception:  # noqa: BLE001 - left to the substituting read of __getitem__, which logs it
                continue
            raw = RawItem(raw.name, raw.image, compact_mask(raw.mask))
            if self.cached_bytes + raw_bytes(raw) > self.budget_bytes:
                break
            self.cached[index] = raw
            self.cached_bytes += raw_bytes(raw)
        held = len(self.cached)
        if self.budget_bytes:
            log.info("holding %d of %d training items in memory, decoded (%s of the %s data.cache_mb allows)",
                     held, len(self.dataset), format_bytes(self.cached_bytes), format_bytes(self.budget_bytes))
        return held

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.cached.get(index)
        if raw is None:
            raw = getattr(self.dataset, "load_usable_raw", self.dataset.load_raw)(index)
        image = torch.from_numpy(raw.image).permute(2, 0, 1)  # uint8 [3, h, w], a view: nothing copied
        return self.transform(image, torch.from_numpy(raw.mask))

    def __getattr__(self, name: str):
        if name in ("dataset", "__setstate__"):  # not yet set (unpickling in a spawned worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"CachedItems({self.dataset!r}, {len(self.cached)} held)"

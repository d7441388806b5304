"""The data order and the random states of a run: seeded items, an epoch sampler that can skip, RNG snapshots.

An item's augmentation depends only on the seed, the epoch and its index, and a checkpoint holds
every process's random states, so that a resumed run sees what the uninterrupted one would have.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from fcnseg.config import TrainConfig
from fcnseg.data import IGNORE_INDEX, PadCollate

log = logging.getLogger(__name__)


class SeededItems(Dataset):
    """Serves ``dataset[key % len]`` with the torch RNG seeded from ``(seed, key)`` for its augmentation.

    Keys come from :class:`EpochSampler` (``epoch * len + index``), so an item's random mirror, scale
    and crop depend only on the seed, the epoch and the index: not on worker count, not on the
    process count, and not on whether the run was interrupted and resumed. The caller's RNG state
    is left untouched.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int):
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only (the transforms draw from it): torch.manual_seed would also re-seed
            # every GPU's generator, which fork_rng(devices=[]) does not restore, and it formats a stack
            # trace per call for the lazy device seeding (a millisecond an item).
            torch.default_generator.manual_seed((self.seed * 1_000_003 + key) % (2**63 - 1))
            return self.dataset[key % len(self.dataset)]


class EpochSampler(DistributedSampler):
    """DistributedSampler that yields ``epoch * len + index`` keys and can skip the items already seen.

    With one process it gives the same permutation a two-process run splits between its ranks
    (rank r takes every world-th item), so a global batch holds the same images either way.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.skip = 0  # items of this epoch already consumed (set on resume)

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        keys = [self.epoch * n + i for i in super().__iter__()]
        return iter(keys[self.skip :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


def training_loader(
    dataset: Dataset, config: TrainConfig, num_workers: int, world_size: int, rank: int, pin_memory: bool = False
) -> tuple[DataLoader, EpochSampler]:
    """This process's share of the shuffled training set, ``batch_size`` padded items at a time.

    Returns the loader and its sampler (which :func:`training_batches` positions in the data order).
    """
    sampler = EpochSampler(dataset, world_size, rank, shuffle=True, seed=config.seed)
    loader = DataLoader(
        SeededItems(dataset, config.seed),
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=PadCollate(IGNORE_INDEX),
        drop_last=sampler.num_samples >= config.batch_size,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(config.seed),  # keeps the global RNG (dropout) untouched
        # Workers that live through the run: starting them again every epoch cost more than the epoch's
        # decoding on a small cached set. The sampler still runs here, so the data order is unchanged.
        persistent_workers=num_workers > 0,
    )
    if sampler.num_samples < config.batch_size:
        log.warning("each process sees %d training images per epoch, fewer than batch_size %d",
                    sampler.num_samples, config.batch_size)
    return loader, sampler


class DataPosition(Protocol):
    """Where a run stands in its data order (:class:`fcnseg.training.state.RunState` is one)."""

    epoch: int
    batch_in_epoch: int


def training_batches(
    loader: DataLoader, sampler: EpochSampler, position: DataPosition
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(images [N,3,H,W], masks [N,H,W])`` without end, from ``position`` on, advancing it as they go."""
    while True:
        sampler.set_epoch(position.epoch)
        sampler.skip = position.batch_in_epoch * loader.batch_size
        for images, masks in loader:
            position.batch_in_epoch += 1
            yield images, masks
        position.epoch += 1
        position.batch_in_epoch = 0


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    """Deterministic algorithms (a resumed run repeats the same losses), or cuDNN's autotuner on CUDA."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def rng_state() -> dict[str, Any]:
    """This process's random states as tensors and plain values (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "state": list(py_state), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` took."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

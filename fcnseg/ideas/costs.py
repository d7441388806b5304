"""Measuring a computation: wall time (median of repeats), FLOPs and peak live tensor memory.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products);
peak memory is an exact account of the bytes of every tensor storage created while the computation
runs and still alive (inputs made inside it included, weights excluded), like tracemalloc for
tensors (:class:`fcnseg.inference.memory.TensorMemoryTracker`, the one tracker). Both are counted
on the ``meta`` device, so they cost nothing for any image size.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fcnseg.inference.memory import TensorMemoryTracker  # the one live-storage ledger; re-exported for ideas/


@dataclass
class Cost:
    """Cost of one computation."""

    seconds: float | None  # median wall time; None when not timed
    flops: int  # multiply-adds count as 2 FLOPs
    peak_bytes: int  # peak live tensor memory (activations and inputs, weights excluded)


def on_meta(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters live on the meta device (shapes only, no storage)."""
    return copy.deepcopy(module).to("meta")


def count(fn: Callable[[], object]) -> tuple[int, int]:
    """``(flops, peak_bytes)`` of ``fn()`` (run it on meta tensors to make it free)."""
    with torch.no_grad():
        with FlopCounterMode(display=False) as flop_counter:
            with TensorMemoryTracker() as memory:
                result = fn()
            del result
    return int(flop_counter.get_total_flops()), int(memory.peak)


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int = 3, warmup: int = 1) -> dict[str, list[float]]:
    """Wall times of each function over ``repeats`` rounds, the functions interleaved within a round
    so that machine load hits them alike; ``warmup`` untimed rounds first (oneDNN primitives, casts)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.no_grad():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return times


def time_calls(fns: dict[str, Callable[[], object]], repeats: int = 3, warmup: int = 1) -> dict[str, float]:
    """Median wall time of each function (see :func:`time_interleaved`)."""
    return {name: statistics.median(ts) for name, ts in time_interleaved(fns, repeats, warmup).items()}


def human_flops(n: float) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} FLOP"

"""The training step's paths on this CPU, images/s against the plain fp32 contiguous step: layout, format and
``torch.compile``, for the small FCN-8s and VGG16 FCN-8s.

    python benchmarks/train_paths.py [--nets small,vgg16] [--rounds 4] [--vgg-rounds 2] [--no-compile]

Paths: fp32 contiguous (the baseline), fp32 channels_last, and where the CPU runs bf16 natively (AMX,
AVX-512 BF16) bf16 autocast in both layouts; then ``torch.compile`` of the model (inductor, fixed shapes)
on the baseline and on the fastest eager path. Each is one training update as ``fcnseg train`` takes it
(:func:`fcnseg.training.loop.train_step`, via ``benchmarks/training.py``'s ``make_step``): the small net as
the small-cpu preset trains it (128x128 crops, batch 8, "same" trunk), VGG16 FCN-8s as the paper's (pad
100, 224x224, batch 1). The paths are interleaved within each round (A B C A B C ...) and the median
taken, so that a loaded machine hits them alike. A compiled path's first update (the compile) is timed
apart; the break-even run length (compile seconds over seconds saved per update) is printed, which is what
``train.compile: auto`` weighs (:mod:`fcnseg.training.compile`). Random weights and inputs (timing does
not depend on their values). Prints a markdown table naming the CPU, its flags and its kind.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from training import make_step  # noqa: E402  (benchmarks/training.py: one training update)

from fcnseg.precision import cpu_kind, resolve_execution  # noqa: E402

LABELS = {"small": "small FCN-8s", "vgg16": "VGG16 FCN-8s"}
SHAPES = {"small": (8, 128, "same"), "vgg16": (1, 224, "paper")}  # batch, crop side, trunk padding


def eager_modes() -> list[str]:
    """make_step's mode words for the eager paths this CPU has natively."""
    modes = ["fp32", "channels_last"]
    if cpu_kind().native_bf16:
        modes += ["bf16", "bf16+channels_last"]
    return modes


def time_paths(name: str, modes: list[str], rounds: int, steps: int) -> dict:
    """Median seconds per update of each mode (interleaved per round), and each mode's first-update seconds."""
    batch, size, padding = SHAPES[name]
    steppers = {mode: make_step(name, batch, size, mode, padding=padding)[0] for mode in modes}
    first = {}
    for mode, step in steppers.items():  # warm-up; for a compiled path the first update compiles
        start = time.perf_counter()
        step()
        first[mode] = time.perf_counter() - start
        print(f"  {name} {mode}: first update {first[mode]:.1f} s", flush=True)
        step()
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode, step in steppers.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            seconds[mode].append((time.perf_counter() - start) / steps)
    return {"median": {m: statistics.median(v) for m, v in seconds.items()}, "first": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nets", default="small,vgg16")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds for the small net")
    parser.add_argument("--steps", type=int, default=3, help="updates per path per round (small net)")
    parser.add_argument("--vgg-rounds", type=int, default=2, help="interleaved rounds for VGG16 (1 update each)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile paths")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kind = cpu_kind()
    flags = ", ".join(sorted(kind.flags)) or "none of the relevant ones"
    cpu = (f"CPU: {kind.model}, {torch.get_num_threads()} threads; flags: {flags}; kind `{kind.name}`"
           f"{f' (capped by {kind.cap})' if kind.cap else ''}; torch {torch.__version__}")
    print(cpu, f"; load average {'/'.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    plan = resolve_execution("cpu", purpose="training")
    rows = []
    for name in filter(None, args.nets.split(",")):
        modes = eager_modes()
        if not args.no_compile:
            best_eager = "bf16+channels_last" if "bf16+channels_last" in modes else "channels_last"
            modes += ["compile", f"{best_eager}+compile"]
        rounds, steps = (args.vgg_rounds, 1) if name == "vgg16" else (args.rounds, args.steps)
        try:
            result = time_paths(name, modes, rounds, steps)
        except Exception as e:  # noqa: BLE001 - inductor failures: report and measure eager alone
            print(f"  {name}: a compiled path failed ({type(e).__name__}: {str(e)[:200]}); eager paths only", flush=True)
            result = time_paths(name, eager_modes(), rounds, steps)
        base = result["median"]["fp32"]
        batch, size, _ = SHAPES[name]
        for mode, seconds in result["median"].items():
            compiled = mode.endswith("compile")
            eager = result["median"].get(mode.removesuffix("+compile").removesuffix("compile") or "fp32", base)
            saved = eager - seconds
            cost = result["first"][mode] - seconds
            even = f"{cost / saved:.0f} updates ({cost / saved * eager / 60:.1f} min)" if compiled and saved > 0 else (
                "never" if compiled else "")
            rows.append(f"| {LABELS[name]} | {batch}x{size}x{size} | {mode} | {batch / seconds:.2f} | {base / seconds:.2f}x | "
                        f"{f'{cost:.0f} s' if compiled else ''} | {even} |")
            print(rows[-1], flush=True)
    print(f"\n{cpu}; load average at the end {'/'.join(f'{v:.1f}' for v in os.getloadavg())}\n")
    print("| net | batch | path | images/s | vs fp32 contiguous | compile (first update less one) | compile pays after |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nresolver, training: {plan.describe()}")


if __name__ == "__main__":
    main()

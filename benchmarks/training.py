"""Training throughput (images/s) on the CPU: fp32 eager vs channels_last vs torch.compile vs bf16 autocast, 1 vs 2 DDP processes.

Times full training updates (fcnseg.training.loop.train_step, the step `fcnseg train` takes:
forward, pixel-wise loss normalised over all processes, backward, SGD step) of the small FCN-8s and
of VGG16 FCN-8s on random 320x320 inputs, so data loading is left out. Modes are interleaved over
several rounds and the best round is kept, so that a busy machine skews every mode alike; ratios
are to fp32 eager of the same run. The "compile" mode wraps the model in ``torch.compile`` (inductor,
fixed shapes); its first update, which compiles, is printed apart, since inside a minutes-long time
budget the compile is paid once per run. It runs in a child process: where inductor's generated code
crashes the interpreter (seen with PyTorch 2.13 on AVX-512 CPUs) the row says so and the others stand.

    python benchmarks/training.py                     # small net and VGG16
    python benchmarks/training.py --models small      # skip VGG16 (minutes per mode on 2 cores)
    python benchmarks/training.py --no-ddp --rounds 2
    python benchmarks/training.py --models small --size 128 --batch 8 --padding same --no-ddp   # the small-cpu preset

On a CPU without native bf16 (no AMX / AVX512-BF16) the bf16 modes are emulated, hundreds of times
slower than fp32, and are skipped unless --bf16 asks for them.
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import time

import torch
import torch.multiprocessing as mp

from fcnseg.config import ModelConfig, TrainConfig
from fcnseg.models import build_model
from fcnseg.models.batchnorm import synchronise_batch_norm
from fcnseg.precision import cpu_has_native_bf16, resolve_execution
from fcnseg.training.loop import train_step
from fcnseg.training.optim import build_optimizer

MODES = ("fp32", "channels_last", "compile", "bf16", "bf16+channels_last")


def make_step(backbone: str, batch: int, size: int, mode: str, seed: int = 0, padding: str = "paper"):
    """A closure that runs one training update (the step `fcnseg train` takes); returns (step, model)."""
    torch.manual_seed(seed)
    # The small net as the small-cpu preset trains it (BatchNorm trunk); VGG16 as the paper's.
    model = build_model(ModelConfig(arch="fcn8s", backbone=backbone, num_classes=21, batch_norm=backbone == "small",
                                    padding=padding))
    recipe = TrainConfig(lr=1e-4 if backbone == "vgg16" else 1e-3, batch_size=batch, iter_size=1,
                         layout="channels_last" if "channels_last" in mode else "contiguous")
    optimizer = build_optimizer(model, recipe)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    images = torch.randn(batch, 3, size, size)
    masks = torch.randint(0, 21, (batch, size, size))
    plan = resolve_execution("cpu", "bf16" if mode.startswith("bf16") else "fp32", recipe.layout, purpose="training")
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    batches = itertools.repeat((images, masks))

    compiled = torch.compile(model) if "compile" in mode else model

    def step(net=compiled):
        train_step(net, optimizer, scaler, batches, recipe, 0, plan)

    return step, model


def time_steps(step, warmup: int, steps: int, first: list | None = None) -> float:
    """Seconds per update after ``warmup`` updates; the first update's seconds are appended to ``first``."""
    for i in range(warmup):
        start = time.perf_counter()
        step()
        if i == 0 and first is not None:
            first.append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def _isolated_worker(queue, backbone: str, batch: int, size: int, mode: str, padding: str, warmup: int, steps: int,
                     threads: int) -> None:
    torch.set_num_threads(threads)
    step, _ = make_step(backbone, batch, size, mode, padding=padding)
    first: list = []
    queue.put((time_steps(step, warmup, steps, first), first[0] if first else 0.0))


def isolated_seconds(backbone: str, batch: int, size: int, mode: str, padding: str, warmup: int, steps: int,
                     first: list) -> float:
    """time_steps in a spawned process; inf (and a message) if the process dies."""
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    child = ctx.Process(target=_isolated_worker, args=(queue, backbone, batch, size, mode, padding, warmup, steps,
                                                        torch.get_num_threads()))
    child.start()
    child.join()
    if child.exitcode != 0 or queue.empty():
        print(f"{backbone} {mode}: the process died (exit code {child.exitcode})")
        return float("inf")
    seconds, first_seconds = queue.get()
    first.append(first_seconds)
    return seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, backbone: str, batch: int, size: int, warmup: int, steps: int, queue,
                padding: str = "paper"):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        step, model = make_step(backbone, batch, size, "fp32", seed=0, padding=padding)
        synchronise_batch_norm(model)  # as fcnseg train does under torchrun
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        seconds = time_steps(lambda: step(ddp), warmup, steps)
        total = torch.tensor([seconds])
        dist.all_reduce(total, op=dist.ReduceOp.MAX)  # a step is done when the slowest process is
        if rank == 0:
            queue.put(total.item())
    finally:
        dist.destroy_process_group()


def ddp_seconds(world: int, backbone: str, batch: int, size: int, warmup: int, steps: int, padding: str = "paper") -> float:
    """Seconds per update with ``world`` gloo processes, each ``batch`` images (global batch world*batch)."""
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.spawn(_ddp_worker, args=(world, _free_port(), backbone, batch, size, warmup, steps, queue, padding), nprocs=world)
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="small,vgg16", help="comma list of: small, vgg16")
    parser.add_argument("--size", type=int, default=320, help="input side, pixels")
    parser.add_argument("--batch", type=int, default=2, help="global batch (images per update)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the best is kept")
    parser.add_argument("--steps", type=int, default=3, help="timed updates per round")
    parser.add_argument("--no-ddp", action="store_true", help="skip the 1 vs 2 process comparison")
    parser.add_argument("--bf16", action="store_true", help="time the bf16 modes even where bf16 is emulated")
    parser.add_argument("--padding", choices=["paper", "same"], default="paper",
                        help="the trunk's geometry: paper (conv1_1 pad 100) or same (the small-cpu preset's)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = [m for m in MODES if args.bf16 or cpu_has_native_bf16() or not m.startswith("bf16")]
    if len(modes) < len(MODES):
        print("this CPU has no native bf16 (AMX / AVX512-BF16): bf16 modes skipped (--bf16 to time them anyway)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cores} cores, "
          f"input {args.size}x{args.size}, padding {args.padding}, global batch {args.batch}; best of {args.rounds} rounds "
          f"x {args.steps} updates; load average {'/'.join(f'{v:.1f}' for v in os.getloadavg())}\n")
    rows = []
    for backbone in [m.strip() for m in args.models.split(",") if m.strip()]:
        best = {mode: float("inf") for mode in modes}
        first = {mode: [] for mode in modes}
        ddp_best = {1: float("inf"), 2: float("inf")}
        warmup = 1 if backbone == "vgg16" else 2
        for _ in range(args.rounds):
            for mode in modes:  # one model at a time: four VGG16s with optimiser state would not fit in memory
                if mode == "compile":
                    seconds = isolated_seconds(backbone, args.batch, args.size, mode, args.padding, warmup, args.steps,
                                               first[mode])
                else:
                    step, _ = make_step(backbone, args.batch, args.size, mode, padding=args.padding)
                    seconds = time_steps(step, warmup, args.steps, first[mode])
                    del step
                best[mode] = min(best[mode], seconds)
            if not args.no_ddp and args.batch % 2 == 0:
                ddp_best[1] = min(ddp_best[1], best["fp32"])  # one process, all cores, the whole batch
                ddp_best[2] = min(ddp_best[2], ddp_seconds(2, backbone, args.batch // 2, args.size, warmup, args.steps,
                                                            args.padding))
        for mode in modes:
            if best[mode] == float("inf"):
                rows.append((backbone, mode + " (crashed)", 0.0, 0.0, None))
                continue
            rows.append((backbone, mode, args.batch / best[mode], best["fp32"] / best[mode], max(first[mode])))
        if ddp_best[2] < float("inf"):
            rows.append((backbone, "DDP 2 proc (fp32)", args.batch / ddp_best[2], ddp_best[1] / ddp_best[2], None))
    print(f"{'model':<8} {'mode':<20} {'images/s':>9} {'vs fp32':>8} {'first update s':>15}")
    for backbone, mode, speed, ratio, first_seconds in rows:
        shown = "" if first_seconds is None else f"{first_seconds:.1f}"
        print(f"{backbone:<8} {mode:<20} {speed:>9.2f} {ratio:>7.2f}x {shown:>15}")


if __name__ == "__main__":
    main()

"""Inference speed of FCN-32s/16s/8s VGG16 at 500x500 and the small net: fp32 eager vs the Predictor's fast path.

Prints, in one run: a large matmul's GFLOP/s in fp32 and bf16 (the machine's ceiling), then per model
latency (min/median), images/s, GFLOPs per image and achieved GFLOP/s as a fraction of that matmul,
the Predictor's fp32 overhead over a plain eager forward, the fast path's speed-up, peak memory of one
forward (measured in a subprocess, next to the memory model's estimate), and the argmax agreement of
the fast path with fp32 on trained weights.

    python benchmarks/inference.py [--small-checkpoint runs/demo/checkpoints/best.pt]
                                   [--vgg-checkpoint runs/bench/vgg16-fcn8s/checkpoints/best.pt]

Agreement needs trained weights (random or zero-initialised score layers make it meaningless): the
demo's small FCN-8s, and a VGG16 FCN-8s trained briefly on the synthetic set (see docs/inference.md for
the command). Rows without trained weights say so. Latency rows use random weights (speed does not
depend on them). Timings interleave the variants so that machine load hits them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fcnseg.weights.checkpoint import load_model
from fcnseg.config import ModelConfig
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.data.synthetic import generate_sample
from fcnseg.precision import cpu_has_native_bf16
from fcnseg.ideas.costs import count, on_meta, time_interleaved
from fcnseg.files import format_bytes
from fcnseg.models import build_model
from fcnseg.inference.predictor import Predictor, select_layout
from fcnseg.precision import resolve_precision

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SMALL = [ROOT / "runs/demo/checkpoints/best.pt", ROOT / "runs/bench/small-demo/checkpoints/best.pt"]
DEFAULT_VGG = [ROOT / "runs/bench/vgg16-fcn8s/checkpoints/best.pt", ROOT / "runs/bench/vgg16-fcn8s/checkpoints/last.pt"]


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    if dtype == torch.bfloat16 and not cpu_has_native_bf16():
        n, repeats = 512, 1  # emulated bf16 runs under 1 GFLOP/s: a 2048 product would take a minute
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def model_gflops(model, size: int) -> float:
    meta = on_meta(model)
    flops, _ = count(lambda: meta(torch.empty(1, 3, size, size, device="meta")))
    return flops / 1e9


def measure_memory(arch: str, backbone: str, precision: str, layout: str, size: int, num_classes: int) -> int:
    """Peak RSS increase of one forward (whole image, through the Predictor), in a fresh process."""
    code = f"""
import numpy as np, torch
from fcnseg.config import ModelConfig
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.models import build_model
from fcnseg.inference.predictor import Predictor
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith(key + ':'))
model = build_model(ModelConfig(arch={arch!r}, backbone={backbone!r}, num_classes={num_classes}))
p = Predictor(model, PAPER_BGR, precision={precision!r}, layout={layout!r}, max_memory=None)
image = np.random.default_rng(0).integers(0, 256, ({size}, {size}, 3), dtype=np.uint8)
x = PAPER_BGR.image_to_tensor(image)[None]
open('/proc/self/clear_refs', 'w').write('5')  # reset the high-water mark
base = status('VmRSS')
p.logits(x)
print(status('VmHWM') - base)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def agreement(checkpoint: Path, fast_precision: str, size: int, images: int) -> tuple[float, int, str]:
    """Argmax agreement of the fast path with fp32 eager on synthetic validation scenes; also the classes seen."""
    loaded = load_model(checkpoint)
    fp32 = Predictor(loaded.model, loaded.normalization, loaded.class_names, precision="fp32", layout="contiguous",
                     max_memory=None)
    again = load_model(checkpoint)  # a second copy: the fast path converts its model to channels_last
    fast = Predictor(again.model, again.normalization, again.class_names, precision=fast_precision, max_memory=None)
    same = total = 0
    seen = np.zeros(loaded.config.num_classes, dtype=np.int64)
    for i in range(images):
        image = generate_sample(0, "val", i, size=(size, size)).image
        ref = fp32.predict(image).labels
        same += int((ref == fast.predict(image).labels).sum())
        total += ref.size
        seen += np.bincount(ref.ravel(), minlength=seen.size)
    classes = ", ".join(f"{n} {c / total:.0%}" for n, c in zip(loaded.class_names, seen) if c)
    how = loaded.extra.get("note") or (f"trained {loaded.extra['iteration']} iterations" if "iteration" in loaded.extra else "")
    return same / total, images, f"{classes}; weights: {how}"


def train_vgg_heads(path: Path, steps: int, size: int = 224, batch: int = 2) -> Path:
    """Train a VGG16 FCN-8s's score layers briefly on the synthetic set (trunk frozen at its random init), save it.

    No ImageNet weights can be downloaded here, and training all of VGG16 from scratch for a few
    minutes on two cores leaves it predicting background everywhere; fitting the three score layers
    (with the bilinear upsampling fixed, as in the paper) to the data gives a net whose argmax follows
    the scenes, which is what the agreement measurement needs.
    """
    from fcnseg.weights.checkpoint import save_checkpoint
    from fcnseg.data.synthetic import SyntheticDataset

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="fcn8s", backbone="vgg16", num_classes=6, dropout=0.0))
    model.backbone.requires_grad_(False)
    heads = [p for n, p in model.named_parameters() if n.startswith("score_")]
    optimizer = torch.optim.Adam(heads, lr=1e-3)
    data = SyntheticDataset("train", num_images=steps * batch, size=(size, size))
    start = time.perf_counter()
    for step in range(steps):
        items = [data[step * batch + i] for i in range(batch)]
        x, y = torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_has_native_bf16()):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y, ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0 or step == steps - 1:
            print(f"  VGG16 FCN-8s score layers: step {step + 1}/{steps}, loss {loss.item():.3f}", flush=True)
    model.eval()
    save_checkpoint(path, model, model.config, data.class_names, data.normalization,
                    {"note": f"score layers trained {steps} steps x {batch} images of {size}px, trunk random",
                     "seconds": time.perf_counter() - start})
    return path


def first_existing(paths) -> Path | None:
    return next((p for p in paths if p and Path(p).is_file()), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=500, help="input side for the VGG16 models (default 500)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--small-checkpoint", type=Path, help="trained small FCN-8s (default: the demo's)")
    parser.add_argument("--vgg-checkpoint", type=Path, help="VGG16 FCN-8s trained briefly on the synthetic set")
    parser.add_argument("--agreement-images", type=int, default=8)
    parser.add_argument("--vgg-train-steps", type=int, default=60,
                        help="without --vgg-checkpoint: steps of score-layer training for the VGG16 FCN-8s")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--models", default="fcn32s-vgg16,fcn16s-vgg16,fcn8s-vgg16,fcn8s-small",
                        help="comma list of the rows to run (default: all four)")
    args = parser.parse_args()
    wanted = set(args.models.split(","))
    torch.manual_seed(0)
    fast_precision = resolve_precision("auto", torch.device("cpu"))
    fast_layout = select_layout(torch.device("cpu"), fast_precision)
    small_ckpt = first_existing([args.small_checkpoint] + DEFAULT_SMALL)
    vgg_ckpt = first_existing([args.vgg_checkpoint] + DEFAULT_VGG)
    if vgg_ckpt is None and args.vgg_train_steps > 0 and "fcn8s-vgg16" in wanted:
        vgg_ckpt = ROOT / "runs/bench/vgg16-fcn8s-heads.pt"
        if not vgg_ckpt.is_file():
            print(f"training a VGG16 FCN-8s's score layers for {args.vgg_train_steps} steps -> {vgg_ckpt}")
            train_vgg_heads(vgg_ckpt, args.vgg_train_steps)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, fast path: {fast_precision} + {fast_layout}")
    mm32, mm16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    emulated = "" if cpu_has_native_bf16() else " (emulated: no native bf16 on this CPU, timed at 512x512)"
    print(f"2048x2048 matmul: fp32 {mm32:.0f} GFLOP/s, bf16 {mm16:.1f} GFLOP/s{emulated} ({mm16 / mm32:.2f}x)\n")

    models = [
        ("FCN-32s VGG16", "fcn32s", "vgg16", 21, args.size, None),
        ("FCN-16s VGG16", "fcn16s", "vgg16", 21, args.size, None),
        ("FCN-8s VGG16", "fcn8s", "vgg16", 21, args.size, vgg_ckpt),
        ("FCN-8s small", "fcn8s", "small", 6, args.size, small_ckpt),
    ]
    rows = []
    models = [m for m in models if f"{m[1]}-{m[2]}" in wanted]
    for label, arch, backbone, classes, size, ckpt in models:
        model = build_model(ModelConfig(arch=arch, backbone=backbone, num_classes=classes)).eval()
        gflops = model_gflops(model, size)
        image = generate_sample(0, "val", 0, size=(size, size)).image
        x = PAPER_BGR.image_to_tensor(image)[None]
        fp32 = Predictor(model, PAPER_BGR, precision="fp32", layout="contiguous", max_memory=None)  # the wrapper's overhead
        fast_model = build_model(ModelConfig(arch=arch, backbone=backbone, num_classes=classes)).eval()
        fast_model.load_state_dict(model.state_dict())
        fast = Predictor(fast_model, PAPER_BGR, precision=fast_precision, max_memory=None)

        def eager():
            with torch.inference_mode():
                return model(x)

        times = time_interleaved(
            {"eager": eager, "fp32": lambda: fp32.predict(image), "fast": lambda: fast.predict(image)}, args.repeats
        )
        med = {k: statistics.median(v) for k, v in times.items()}
        low = {k: min(v) for k, v in times.items()}
        mem32 = measure_memory(arch, backbone, "fp32", "contiguous", size, classes)
        memfast = measure_memory(arch, backbone, fast_precision, fast_layout, size, classes)
        est32 = fp32.estimate(size, size)  # in each predictor's precision and layout
        estfast = fast.estimate(size, size)
        if ckpt is not None:
            agree, n, seen = agreement(ckpt, fast_precision, size, args.agreement_images)
            agree_text = f"{agree:.2%} ({n} imgs)"
        else:
            agree_text, seen = "n/a (random weights)", ""
        row = {
            "model": label,
            "size": size,
            "gflops": gflops,
            "eager_min": low["eager"], "eager_median": med["eager"],
            "fp32_min": low["fp32"], "fp32_median": med["fp32"],
            "fast_min": low["fast"], "fast_median": med["fast"],
            "fp32_overhead": med["fp32"] / med["eager"] - 1,
            "speedup": med["eager"] / med["fast"],
            "eager_gflops_per_s": gflops / low["eager"],
            "fast_gflops_per_s": gflops / low["fast"],
            "eager_fraction_of_matmul": gflops / low["eager"] / mm32,
            "fast_fraction_of_matmul": gflops / low["fast"] / (mm16 if fast_precision != "fp32" else mm32),
            "peak_fp32": mem32, "peak_fast": memfast,
            "estimate_fp32": est32.total - est32.weights, "estimate_fast": estfast.total - estfast.weights,
            "agreement": agree_text,
            "checkpoint": str(ckpt) if ckpt else None,
            "classes_predicted": seen,
        }
        rows.append(row)
        print(f"{label}: eager {med['eager']:.3f}s, predictor fp32 {med['fp32']:.3f}s, fast {med['fast']:.3f}s, "
              f"agreement {agree_text}", flush=True)
        del model, fast_model, fp32, fast

    print()
    print(f"| model ({args.size}x{args.size}) | GFLOPs | fp32 eager min / median (s) | fp32 img/s | fp32 GFLOP/s (of matmul) "
          f"| Predictor fp32 overhead | {fast_precision} fast min / median (s) | fast img/s | fast GFLOP/s (of {fast_precision} matmul) "
          f"| speed-up | argmax agreement | peak fp32 / fast (measured) | memory model fp32 / fast |")
    print("|" + "---|" * 13)
    for r in rows:
        print(
            f"| {r['model']} | {r['gflops']:.0f} | {r['eager_min']:.3f} / {r['eager_median']:.3f} | {1 / r['eager_median']:.2f} "
            f"| {r['eager_gflops_per_s']:.0f} ({r['eager_fraction_of_matmul']:.0%}) | {r['fp32_overhead']:+.1%} "
            f"| {r['fast_min']:.3f} / {r['fast_median']:.3f} | {1 / r['fast_median']:.2f} "
            f"| {r['fast_gflops_per_s']:.0f} ({r['fast_fraction_of_matmul']:.0%}) | {r['speedup']:.2f}x | {r['agreement']} "
            f"| {format_bytes(r['peak_fp32'])} / {format_bytes(r['peak_fast'])} "
            f"| {format_bytes(r['estimate_fp32'])} / {format_bytes(r['estimate_fast'])} |"
        )
    print()
    for r in rows:
        if r["checkpoint"]:
            print(f"{r['model']} agreement on {r['checkpoint']}: classes predicted (fp32) {r['classes_predicted']}")
    print("peak = RSS high-water mark of one whole-image forward in a fresh process, weights excluded; "
          "memory model = fcnseg.inference.memory estimate (activations incl. kernel workspace x workspace factor, "
          "plus autocast weight casts).")
    print()
    print_verdict(rows, mm16 / mm32, fast_precision)
    if args.json:
        args.json.write_text(json.dumps({"matmul_fp32": mm32, "matmul_bf16": mm16, "rows": rows}, indent=2) + "\n")


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def print_verdict(rows: list[dict], matmul_ratio: float, fast_precision: str) -> None:
    """The issue's targets, checked against this run: 3x on an AMX CPU at >= 99.5% agreement; fp32 overhead <= 10%."""
    amx = "amx_bf16" in cpu_flags()
    vgg = [r for r in rows if "VGG16" in r["model"]]
    speedups = ", ".join(f"{r['model'].split()[0]} {r['speedup']:.2f}x" for r in vgg)
    if not vgg:
        print("target fast path >= 3x fp32 eager is for the VGG16 nets: none was run")
    elif fast_precision == "fp32":
        print(f"target fast path >= 3x fp32 eager applies to AMX CPUs; this CPU has no native bf16 at all "
              f"(bf16 matmul {matmul_ratio:.3f}x fp32, emulated), so the fast path stays fp32: {speedups}")
    elif amx:
        met = all(r["speedup"] >= 3.0 for r in vgg)
        print(f"target fast path >= 3x fp32 eager (AMX CPU): {speedups} -> {'met' if met else 'NOT met'}")
    else:
        print(f"target fast path >= 3x fp32 eager applies to AMX CPUs; this CPU has no AMX. Here: {speedups}, "
              f"against a bf16/fp32 matmul ratio of {matmul_ratio:.1f}x that bounds them")
    agreements = [r["agreement"] for r in rows if r["checkpoint"]]
    print(f"target argmax agreement >= 99.5% on trained weights: {', '.join(agreements) or 'no checkpoint given'}")
    worst = max(r["fp32_overhead"] for r in rows)
    print(f"target Predictor fp32 within 10% of plain eager: worst {worst:+.1%} -> {'met' if worst <= 0.10 else 'NOT met'}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

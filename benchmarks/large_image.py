"""Peak memory of `fcnseg predict` on a 6000x4000 image: tiled inference under a --max-memory budget.

Writes a 6000x4000 JPEG (synthetic scenes tiled), runs the CLI on it in a subprocess for several
settings, and prints the tile plan, wall time and peak RSS of that subprocess
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``) next to the memory model's budget; the same through ONNX
Runtime, on the model's fp32 export and its int8 quantization (``--no-onnx`` skips them). Then prints what a VGG16
FCN-8s would need, whole and tiled (``--vgg`` also runs it).

    python benchmarks/large_image.py [--checkpoint runs/demo/checkpoints/best.pt] [--vgg]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fcnseg.weights.checkpoint import load_model, save_checkpoint
from fcnseg.config import ModelConfig
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.data.synthetic import generate_sample
from fcnseg.files import format_bytes, parse_bytes
from fcnseg.models import build_model
from fcnseg.inference.predictor import Predictor
from fcnseg.precision import resolve_precision

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SMALL = [ROOT / "runs/demo/checkpoints/best.pt", ROOT / "runs/bench/small-demo/checkpoints/best.pt"]
HEIGHT, WIDTH = 4000, 6000


def make_image(path: Path) -> None:
    scene = generate_sample(0, "val", 0, size=(500, 750)).image
    Image.fromarray(np.tile(scene, (HEIGHT // 500, WIDTH // 750, 1))).save(path, quality=90)


def run_child(argv: list[str]) -> tuple[float, int]:
    """Run ``argv`` in a helper process that reports its child's peak RSS; (seconds, bytes)."""
    helper = (
        "import resource, subprocess, sys; "
        "r = subprocess.run(sys.argv[1:]); "
        "print('RC', r.returncode, 'MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", helper, *argv], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    words = out.stdout.split()
    if "RC" not in words or words[words.index("RC") + 1] != "0":
        raise SystemExit(f"{' '.join(argv)} failed:\n{out.stdout}\n{out.stderr}")
    return seconds, int(words[words.index("MAXRSS") + 1]) * 1024  # ru_maxrss is in KiB on Linux


def onnx_rows(checkpoint: Path, loaded, image: Path, tmp: Path) -> None:
    """Rows for ONNX Runtime: ``fcnseg predict`` on the fp32 export and on its int8 quantization, under 2GiB."""
    from fcnseg.inference.export import export_onnx
    from fcnseg.inference.quantization import quantize

    fp32 = export_onnx(loaded, tmp / "model.onnx")
    calib = tmp / "calib"
    calib.mkdir()
    for i in range(8):
        Image.fromarray(generate_sample(0, "train", i).image).save(calib / f"calib_{i}.png")
    int8 = quantize(checkpoint, tmp / "model-int8.onnx", calib, check_images=0).path
    for label, path in (("ORT fp32", fp32), ("ORT int8", int8)):
        predictor = Predictor.from_checkpoint(path, max_memory=parse_bytes("2GiB"))
        plan = predictor.plan(HEIGHT, WIDTH)
        plan_text = "whole image" if plan.whole else f"{plan.num_tiles} tiles of {plan.tile}+2x{plan.margin}"
        argv = [sys.executable, "-m", "fcnseg", "predict", str(path), str(image), "-o", str(tmp / f"out-{label}"),
                "--max-memory", "2GiB", "--workers", "0", "--no-progress"]
        seconds, peak = run_child(argv)
        print(f"| small {loaded.config.arch} | {label} | 2GiB | no | {plan_text} | {seconds:.0f} s | {format_bytes(peak)} |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="small-model checkpoint (default: the demo's; else random weights)")
    parser.add_argument("--vgg", action="store_true", help="also run a VGG16 FCN-8s (random weights) on the image")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime fp32 and int8 rows")
    args = parser.parse_args()
    fast = resolve_precision("auto", __import__("torch").device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image = tmp / "scan.jpg"
        make_image(image)
        checkpoint = args.checkpoint or next((p for p in DEFAULT_SMALL if p.is_file()), None)
        if checkpoint is None:
            model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=6))
            checkpoint = tmp / "random-small.pt"
            save_checkpoint(checkpoint, model, model.config, [f"c{i}" for i in range(6)], PAPER_BGR)
            print("no demo checkpoint found: using random weights (memory does not depend on them)")
        loaded = load_model(checkpoint)
        print(f"{WIDTH}x{HEIGHT} JPEG ({image.stat().st_size / 1e6:.1f} MB), model {checkpoint} "
              f"({loaded.config.arch}/{loaded.config.backbone}, {loaded.config.num_classes} classes)")
        _, baseline = run_child([sys.executable, "-c", "import torch, fcnseg.inference.predictor, fcnseg.inference.folder"])
        print(f"baseline RSS of a Python process that imports torch and fcnseg: {format_bytes(baseline)}\n")

        settings = list(dict.fromkeys([  # where the fast path is fp32, its fp32 row is not run twice
            (fast, "2GiB", False),
            (fast, "2GiB", True),
            (fast, "1GiB", False),
            ("fp32", "2GiB", False),
            (fast, "8GiB", False),
        ]))
        print("| model | precision | --max-memory | probabilities | plan | wall time | peak RSS (measured) |")
        print("|---|---|---|---|---|---|---|")
        for precision, budget, probs in settings:
            predictor = Predictor(load_model(checkpoint).model, PAPER_BGR, precision=precision, max_memory=parse_bytes(budget))
            plan = predictor.plan(HEIGHT, WIDTH, probability_band=probs)
            plan_text = "whole image" if plan.whole else f"{plan.num_tiles} tiles of {plan.tile}+2x{plan.margin}"
            out = tmp / f"out-{precision}-{budget}-{probs}"
            argv = [sys.executable, "-m", "fcnseg", "predict", str(checkpoint), str(image), "-o", str(out),
                    "--precision", precision, "--max-memory", budget, "--workers", "0", "--no-progress"]
            if probs:
                argv.append("--probabilities")
            seconds, peak = run_child(argv)
            print(f"| small {loaded.config.arch} | {precision} | {budget} | {'float16 .npy' if probs else 'no'} "
                  f"| {plan_text} | {seconds:.0f} s | {format_bytes(peak)} |", flush=True)

        if not args.no_onnx:
            onnx_rows(checkpoint, loaded, image, tmp)

        vgg = build_model(ModelConfig(arch="fcn8s", backbone="vgg16", num_classes=21))
        print("\nVGG16 FCN-8s (21 classes) on the same image, from the memory model:")
        for precision in dict.fromkeys(("fp32", fast)):
            whole = Predictor(vgg, PAPER_BGR, precision=precision, max_memory=None).estimate(HEIGHT, WIDTH)
            line = f"  {precision}: whole image needs {format_bytes(whole.total)}"
            for budget in ("2GiB", "4GiB"):
                p = Predictor(vgg, PAPER_BGR, precision=precision, max_memory=parse_bytes(budget))
                plan = p.plan(HEIGHT, WIDTH)
                line += f"; under {budget}: {plan.num_tiles} tiles of {plan.tile}+2x{plan.margin}"
            print(line)
            vgg = build_model(ModelConfig(arch="fcn8s", backbone="vgg16", num_classes=21))
        if args.vgg:
            ckpt = tmp / "vgg.pt"
            save_checkpoint(ckpt, vgg, vgg.config, [f"c{i}" for i in range(21)], PAPER_BGR)
            argv = [sys.executable, "-m", "fcnseg", "predict", str(ckpt), str(image), "-o", str(tmp / "vgg-out"),
                    "--max-memory", "4GiB", "--workers", "0", "--no-progress"]
            seconds, peak = run_child(argv)
            print(f"  measured, {fast}, --max-memory 4GiB: {seconds:.0f} s, peak RSS {format_bytes(peak)}")


if __name__ == "__main__":
    main()

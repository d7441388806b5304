"""torchvision's FCN-ResNet50/101 on this CPU: 500x500 fp32, the fast path, int8, their agreement, and a 6000x4000 image.

The model is a torchvision-layout ``fcn_resnet50_coco`` file with random weights (tests/resnet_reference.py writes
that layout; speed does not depend on the weights), read by ``load_model`` as a user's file would be. Each path
predicts one 500x500 picture through the Predictor (whole image), after one warm-up, paths interleaved round by
round (A B C A B C ...) so that a shared machine's load falls on all alike:

* fp32 contiguous and fp32 channels_last (PyTorch eager);
* auto: what ``fcnseg predict`` picks on this CPU (bf16 autocast + channels_last where bf16 is native);
* int8: ``fcnseg quantize`` of the same file (ONNX Runtime, QDQ, calibrated on 8 pictures, its default
  float layers), run through the Predictor like any model.

Per path: wall seconds (min / median), CPU seconds of this process per image divided by the threads (what
the image costs when the cores are the process's own: robust to other people's load), and the argmax
agreement with fp32 on ``--agreement-images`` pictures none of the paths was calibrated on. Then, in a child
process, the Predictor with ``fcnseg predict``'s defaults (the default memory budget) on a 6000x4000 picture:
its peak RSS and tiles (``--large-tiles N`` stops after N tiles: they are alike, so the peak comes in the first).

    python benchmarks/resnet_predict.py                       # resnet50, 2 threads, 3 rounds, the 6000x4000 run
    python benchmarks/resnet_predict.py --backbone resnet101 --skip-large
    python benchmarks/resnet_predict.py --large-only --large-tiles 1      # the memory figure alone
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cpu_inference import cpu_description  # benchmarks/cpu_inference.py
from tables import markdown_table  # benchmarks/tables.py

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY / "tests"))
from resnet_reference import random_fcn_state_dict  # noqa: E402

from fcnseg.inference.predictor import Predictor  # noqa: E402
from fcnseg.weights.checkpoint import load_model  # noqa: E402


def picture(seed: int, height: int, width: int) -> np.ndarray:
    """A smooth random RGB uint8 picture (16-pixel blocks of colour, blurred by a bilinear resize)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(1, height // 16), max(1, width // 16), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


def timed(predictor: Predictor, image: np.ndarray, threads: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process / threads) of one prediction."""
    wall, cpu = time.perf_counter(), time.process_time()
    predictor.predict(image)
    return time.perf_counter() - wall, (time.process_time() - cpu) / threads


# The child of large_run: the Predictor with fcnseg predict's defaults (memory budget included) on one picture,
# stopped after TILES tiles when TILES > 0 (the tiles are alike, so the peak of the first ones is the run's).
LARGE_CHILD = """
import sys, numpy as np
from PIL import Image
from fcnseg import Predictor, read_image
model, path, tiles = sys.argv[1], sys.argv[2], int(sys.argv[3])
predictor = Predictor.from_checkpoint(model)
print(predictor.describe())
class Enough(Exception):
    pass
def on_tile(done, total):
    print(f"tile {done} of {total}", flush=True)
    if tiles and done >= tiles:
        raise Enough
try:
    predictor.predict(read_image(path), on_tile=on_tile)
    print("whole image done")
except Enough:
    print(f"stopped after {tiles} tile{'s' if tiles != 1 else ''}")
"""


def large_run(model: Path, size: tuple[int, int], out: Path, tiles: int = 0) -> dict:
    """The Predictor (``fcnseg predict``'s defaults: the default memory budget) on one ``size`` (height, width)
    picture in a child process, stopped after ``tiles`` tiles when > 0: its peak RSS (the child's, from
    getrusage), wall seconds and what it printed last."""
    image = out / f"large_{size[1]}x{size[0]}.png"
    Image.fromarray(picture(7, *size)).save(image)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")])}
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", LARGE_CHILD, str(model), str(image), str(tiles)],
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB -> MiB (Linux)
    tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
    return {"returncode": done.returncode, "peak_mib": peak, "seconds": seconds, "output": tail}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet50", choices=["resnet50", "resnet101"])
    p.add_argument("--size", type=int, default=500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="rounds; every path runs once a round")
    p.add_argument("--agreement-images", type=int, default=3)
    p.add_argument("--skip-large", action="store_true", help="no 6000x4000 run")
    p.add_argument("--large", default="4000x6000", help="HEIGHTxWIDTH of the large picture (default 4000x6000)")
    p.add_argument("--large-tiles", type=int, default=0,
                   help="stop the large run after this many tiles (0 = the whole picture); its peak RSS is reached in the first")
    p.add_argument("--large-only", action="store_true", help="only the large run")
    p.add_argument("--calib-images", type=int, default=8, help="calibration pictures for int8 (default 8)")
    p.add_argument("--calib-size", type=int, default=500, help="their side in pixels (default 500)")
    p.add_argument("--out", type=Path, default=None, help="folder for the files (default: a temporary one)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="fcnseg-resnet-"))
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"fcn_{args.backbone}_coco-random.pth"
    torch.save(random_fcn_state_dict(args.backbone, aux=True, seed=0), weights)
    print(f"{cpu_description()}; {args.threads} threads; load average at the start "
          f"{'/'.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)

    if args.large_only:
        height, width = (int(v) for v in args.large.split("x"))
        result = large_run(weights, (height, width), out, args.large_tiles)
        print(f"\nthe Predictor on a {width}x{height} picture, default memory budget: peak RSS {result['peak_mib']:.0f} MiB, "
              f"{result['seconds']:.0f} s wall, exit {result['returncode']}; it printed: {' | '.join(result['output'])}")
        return
    from fcnseg.inference.quantization import quantize

    (out / "calib").mkdir(exist_ok=True)
    for i in range(args.calib_images):
        Image.fromarray(picture(100 + i, args.calib_size, args.calib_size)).save(out / "calib" / f"{i}.png")
    int8_path = out / f"fcn_{args.backbone}-int8.onnx"
    began = time.perf_counter()
    report = quantize(weights, int8_path, out / "calib", check_images=0)
    print(f"quantized in {time.perf_counter() - began:.0f} s: {report.summary().splitlines()[0]}", flush=True)

    handle = load_model(weights)
    predictors = {
        "fp32 contiguous": Predictor(handle, precision="fp32", layout="contiguous", max_memory=None),
        "fp32 channels_last": Predictor(handle, precision="fp32", layout="channels_last", max_memory=None),
        "auto (fcnseg predict's choice)": Predictor(handle, max_memory=None),
        "int8 (ONNX Runtime)": Predictor.from_checkpoint(int8_path, max_memory=None),
    }
    image = picture(0, args.size, args.size)
    for predictor in predictors.values():
        predictor.predict(image)  # warm-up: oneDNN primitives, ORT's session
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in predictors}
    for _ in range(args.repeats):
        for name, predictor in predictors.items():
            times[name].append(timed(predictor, image, args.threads))
    checks = [picture(1000 + i, args.size, args.size) for i in range(args.agreement_images)]
    reference = [predictors["fp32 contiguous"].predict(c).labels for c in checks]
    gflops = {"resnet50": 268.0, "resnet101": 418.4}[args.backbone] * (args.size / 500) ** 2  # fcnseg models
    rows = []
    for name, predictor in predictors.items():
        walls, cpus = [w for w, _ in times[name]], [c for _, c in times[name]]
        same = sum(int((predictor.predict(c).labels == r).sum()) for c, r in zip(checks, reference))
        rows.append({
            "path": name, "runs as": predictor.describe() if hasattr(predictor, "describe") else "",
            "wall min / median (s)": f"{min(walls):.2f} / {statistics.median(walls):.2f}",
            "CPU s per image / threads (median)": f"{statistics.median(cpus):.2f}",
            "GFLOP/s (of CPU time)": gflops / statistics.median(cpus),
            "argmax agreement with fp32": f"{100 * same / sum(r.size for r in reference):.2f}% ({args.agreement_images} images)",
        })
    print(f"\n{args.backbone} FCN, {args.size}x{args.size}, {gflops:.0f} GFLOPs, random weights; load average at the "
          f"end {'/'.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(markdown_table(rows), flush=True)
    if not args.skip_large:
        height, width = (int(v) for v in args.large.split("x"))
        result = large_run(weights, (height, width), out, args.large_tiles)
        print(f"\nthe Predictor on a {width}x{height} picture, default memory budget: peak RSS {result['peak_mib']:.0f} MiB, "
              f"{result['seconds']:.0f} s wall, exit {result['returncode']}; it printed: {' | '.join(result['output'])}")


if __name__ == "__main__":
    main()

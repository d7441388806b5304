"""Images/s of each prediction engine on the same images: plain `fcnseg predict`, torchrun with 1 and 2 processes, Ray with 1 and 2 actors.

Every engine runs as the command a user types, in a subprocess, on the same folder of images (synthetic
scenes, JPEG), the runs interleaved round by round (A B C ... A B C ...) so that the load of a shared
machine falls on all alike; medians over the rounds. The label maps' modification times split each run:

- start s: from the launch to the first label map: interpreter, model load, process group or Ray start,
  the actor's own start, and the first image.
- images/s: the steady rate, (images - 1) / (last label map - first label map).
- overhead/img: the engine's seconds per image at that rate minus plain `fcnseg predict`'s (negative: faster).
- images/s, whole run: images / wall, start included.

A caveat on the steady rate: Ray's write tasks may trail the forwards and write label maps in bursts, which
makes its first-to-last span short; read its rate beside the wall time.

Every process and actor runs one thread (OMP_NUM_THREADS=1; Ray's plan gives each actor one on a 2-core
machine): the engines are compared per core, and on a loaded machine OpenMP threads that wait on each
other would measure the load, not the engine. The forward alone (Predictor.predict in this process, one
thread) is timed too: the floor. Prints the CPU
(model, flags, cores) and a markdown table that docs/cluster.md quotes.

    python benchmarks/cluster_predict.py [--images 40] [--size 240x320] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_inference import cpu_description  # noqa: E402  (benchmarks/cpu_inference.py)
from tables import markdown_table  # noqa: E402

from fcnseg.config import ModelConfig  # noqa: E402
from fcnseg.data.normalization import IMAGENET_RGB  # noqa: E402
from fcnseg.data.synthetic import generate_sample  # noqa: E402
from fcnseg.inference.predictor import Predictor  # noqa: E402
from fcnseg.models import build_model  # noqa: E402
from fcnseg.weights.checkpoint import save_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PREDICT = ["-m", "fcnseg", "predict"]
ENGINES = {
    "fcnseg predict": lambda m, i, o: [sys.executable, *PREDICT, m, i, "-o", o],
    "torchrun, 1 process": lambda m, i, o: [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                            "--nproc_per_node=1", *PREDICT, m, i, "-o", o],
    "torchrun, 2 processes": lambda m, i, o: [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                              "--nproc_per_node=2", *PREDICT, m, i, "-o", o],
    "ray, 1 actor": lambda m, i, o: [sys.executable, *PREDICT, m, i, "-o", o, "--engine", "ray", "--actors", "1"],
    "ray, 2 actors": lambda m, i, o: [sys.executable, *PREDICT, m, i, "-o", o, "--engine", "ray", "--actors", "2"],
}


def write_model(path: Path) -> Path:
    """The small CPU FCN-8s (21 classes, "same" padding) with random weights: the compute of a trained one."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=21, padding="same")).eval()
    save_checkpoint(path, model, model.config, [f"class_{i}" for i in range(21)], IMAGENET_RGB)
    return path


def write_images(folder: Path, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    folder.mkdir(parents=True)
    images = [generate_sample(0, "val", i, style="blobs", size=size).image for i in range(count)]
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"img_{i:04d}.jpg", quality=90)
    return images


def run_once(command: list[str], out: Path, count: int) -> dict:
    """Wall seconds of one run, seconds to its first label map, and its steady seconds per image."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launch = time.time()
    done = subprocess.run([*command, "--no-progress"], env=env, capture_output=True, text=True)
    wall = time.time() - launch
    times = sorted(p.stat().st_mtime for p in out.rglob("*_labels.png"))
    if done.returncode != 0 or len(times) != count:
        raise SystemExit(f"{' '.join(command)} failed ({len(times)} of {count} label maps):\n{done.stdout[-2000:]}"
                         f"{done.stderr[-2000:]}")
    return {"wall": wall, "start": times[0] - launch, "per_image": (times[-1] - times[0]) / (count - 1)}


def forward_seconds(model: Path, images: list[np.ndarray], repeats: int = 3) -> float:
    """Median seconds of Predictor.predict per image in this process (one thread): the floor every engine pays."""
    torch.set_num_threads(1)
    predictor = Predictor.from_checkpoint(model)
    predictor.predict(images[0])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for image in images:
            predictor.predict(image)
        times.append((time.perf_counter() - start) / len(images))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=40, help="images in the folder (default 40)")
    parser.add_argument("--size", default="240x320", help="image height x width (default 240x320)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; medians over them (default 2)")
    parser.add_argument("--engines", nargs="*", choices=list(ENGINES), default=list(ENGINES))
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))

    print(f"CPU: {cpu_description()}")
    print(f"torch {torch.__version__}, one thread per process; load average {os.getloadavg()[0]:.1f} "
          f"at the start (a shared machine: compare within one run)")
    with tempfile.TemporaryDirectory(prefix="cluster-predict-") as tmp:
        tmp = Path(tmp)
        model = str(write_model(tmp / "model.pt"))
        images = write_images(tmp / "images", args.images, (height, width))
        floor = forward_seconds(Path(model), images[:8])
        runs: dict[str, list[dict]] = {name: [] for name in args.engines}
        for round_ in range(args.rounds):
            for name in args.engines:
                run = run_once(ENGINES[name](model, str(tmp / "images"), str(tmp / "out")), tmp / "out", args.images)
                runs[name].append(run)
                print(f"  round {round_ + 1}: {name}: {run['wall']:.1f} s, first label map after {run['start']:.1f} s, "
                      f"{run['per_image']:.3f} s/img after it", flush=True)
    rows, plain = [], None
    for name in args.engines:
        wall, start, per_image = (statistics.median(r[key] for r in runs[name]) for key in ("wall", "start", "per_image"))
        plain = per_image if name == "fcnseg predict" else plain
        rows.append({"engine": name, f"wall, {args.images} img (s)": wall, "start (s)": start,
                     "images/s": f"{1 / per_image:.2f}", "s/img": f"{per_image:.3f}",
                     "overhead/img (s)": "" if plain is None else f"{per_image - plain:+.3f}",
                     "images/s, whole run": f"{args.images / wall:.2f}"})
    print(f"\nforward alone (Predictor.predict, this process, 1 thread): {floor:.3f} s/img "
          f"({1 / floor:.2f} images/s), {height}x{width} images, small FCN-8s, 21 classes")
    print(f"{args.rounds} interleaved rounds, medians; load average {os.getloadavg()[0]:.1f} at the end\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()

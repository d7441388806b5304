"""`fcnseg predict` on a folder of 10,000 images of mixed sizes: killed mid-run, resumed, every file accounted for.

Writes N images (default 10,000; synthetic scenes, random sizes, JPEG and PNG in nested folders) with a
few unreadable ones among them (truncated JPEGs, text files named .png, empty files). Runs the CLI
in a subprocess, kills it with SIGKILL once about half the label maps exist, runs it again to the
end, and checks the outcome: every readable image has a label map of its own size, every unreadable
one is named in the failure list, and the second run skipped exactly the images the first finished.
Prints images/s, wall time and peak RSS of each run.

    python benchmarks/folder_run.py [--images 10000] [--checkpoint runs/demo/checkpoints/best.pt]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fcnseg.weights.checkpoint import save_checkpoint
from fcnseg.config import ModelConfig
from fcnseg.data.normalization import IMAGENET_RGB
from fcnseg.data.synthetic import generate_sample
from fcnseg.models import build_model

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = ROOT / "runs/demo/checkpoints/best.pt"


def write_folder(folder: Path, count: int, bad_every: int, seed: int = 0) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """Write ``count`` files under ``folder``; returns {relative path: (height, width)} of the good ones, and the bad ones."""
    rng = np.random.default_rng(seed)
    scenes = [generate_sample(seed, "val", i, style="blobs", size=(320, 320)).image for i in range(16)]
    good, bad = {}, []
    for i in range(count):
        sub = folder / f"batch_{i // 1000:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        suffix = ".jpg" if i % 3 else ".png"
        rel = f"{sub.name}/img_{i:05d}{suffix}"
        if bad_every and i % bad_every == bad_every - 1:
            kind = (i // bad_every) % 3
            if kind == 0:  # a JPEG cut short
                buffer = (folder / rel).with_suffix(".jpg")
                Image.fromarray(scenes[0]).save(buffer, quality=90)
                data = buffer.read_bytes()
                buffer.unlink()
                (folder / rel).write_bytes(data[: len(data) // 3])
            elif kind == 1:
                (folder / rel).write_text("not an image\n")
            else:
                (folder / rel).write_bytes(b"")
            bad.append(rel)
            continue
        h, w = int(rng.integers(48, 321)), int(rng.integers(48, 321))
        scene = scenes[i % len(scenes)]
        y, x = int(rng.integers(0, 321 - h)), int(rng.integers(0, 321 - w))
        Image.fromarray(np.ascontiguousarray(scene[y : y + h, x : x + w])).save(folder / rel, quality=90)
        good[rel] = (h, w)
    return good, bad


def peak_rss_of_children() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def count_masks(out: Path) -> int:
    return sum(1 for p in out.rglob("*.png") if not p.name.startswith("."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--bad-every", type=int, default=200, help="every Nth file is unreadable (default 200: 0.5%%)")
    parser.add_argument("--checkpoint", type=Path, help="default: the demo's, else a random small FCN-8s")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-at", type=float, default=0.5, help="fraction of label maps after which to SIGKILL")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = args.checkpoint or (DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None)
        if checkpoint is None:
            model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=6, batch_norm=True)).eval()
            checkpoint = tmp / "random-small.pt"
            save_checkpoint(checkpoint, model, model.config, [f"c{i}" for i in range(6)], IMAGENET_RGB)
            print("no demo checkpoint: random weights (speed and bookkeeping do not depend on them)")
        start = time.perf_counter()
        good, bad = write_folder(tmp / "in", args.images, args.bad_every)
        print(f"wrote {len(good)} images (48-320 px a side, JPEG and PNG) and {len(bad)} unreadable files "
              f"in {time.perf_counter() - start:.0f} s; model {checkpoint}")

        out = tmp / "out"
        argv = [sys.executable, "-m", "fcnseg", "predict", str(checkpoint), str(tmp / "in"), "-o", str(out),
                "--stats", "--workers", str(args.workers), "--no-progress"]
        env = dict(os.environ, PYTHONUNBUFFERED="1")

        # Run 1: killed without warning once about half the label maps are written.
        start = time.perf_counter()
        first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        target = int(args.kill_at * len(good))
        while first.poll() is None and count_masks(out) < target:
            time.sleep(0.5)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_after = time.perf_counter() - start
        done_before = count_masks(out)
        temp_left = sum(1 for _ in out.rglob(".*.tmp*"))
        peak1 = peak_rss_of_children()

        # Run 2: to the end.
        start = time.perf_counter()
        second = subprocess.run(argv, capture_output=True, text=True, env=env)
        seconds2 = time.perf_counter() - start
        peak2 = peak_rss_of_children()
        summary = re.search(r"(\d+) segmented, (\d+) already done, (\d+) failed", second.stdout)
        if summary is None:
            raise SystemExit(f"no summary in the second run's output:\n{second.stdout}\n{second.stderr}")
        processed, skipped, failed = map(int, summary.groups())

        wrong_size = missing = 0
        for rel, (h, w) in good.items():
            mask = (out / rel).with_suffix(".png")
            if not mask.is_file():
                missing += 1
                continue
            with Image.open(mask) as m:
                wrong_size += m.size != (w, h)
        named = sum(1 for rel in bad if Path(rel).name in second.stdout + second.stderr)
        areas_rows = sum(1 for _ in open(out / "areas.csv")) - 1

        print()
        print("| run | images | wall time | images/s | peak RSS |")
        print("|---|---|---|---|---|")
        print(f"| 1 (SIGKILL at {args.kill_at:.0%}) | {done_before} label maps | {killed_after:.0f} s "
              f"| {done_before / killed_after:.1f} | {peak1 / 2**20:.0f} MiB |")
        print(f"| 2 (resume) | {processed} segmented, {skipped} skipped | {seconds2:.0f} s "
              f"| {processed / seconds2:.1f} | {peak2 / 2**20:.0f} MiB |")
        print()
        checks = {
            "every readable image has a label map": missing == 0,
            "every label map has its image's size": wrong_size == 0,
            "run 2 skipped exactly what run 1 finished": skipped == done_before,
            "run 2 segmented the rest once": processed == len(good) - done_before,
            "every unreadable file failed and is named in the summary": failed == len(bad) and named == len(bad),
            "areas.csv has a row per readable image": areas_rows == len(good),
            "exit code 1 (some files failed)": second.returncode == 1,
        }
        for text, ok in checks.items():
            print(f"  {'ok  ' if ok else 'FAIL'} {text}")
        print(f"  temp files left by the kill: {temp_left} (hidden .NAME.*.tmp*, never taken for outputs)")
        print(f"  missing {missing}, wrong size {wrong_size}, failed {failed} of {len(bad)} unreadable, "
              f"named {named}")
        if not all(checks.values()):
            raise SystemExit(1)


if __name__ == "__main__":
    main()

"""Predict time of torchvision's FCN-ResNet50/101 on one 500x500 image, fp32, through the Predictor.

Random weights (speed does not depend on them), whole image, each layout after one warm-up; prints
the minimum and median of ``--repeats`` runs.

    python benchmarks/resnet_predict.py [--backbone resnet50] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fcnseg.config import ModelConfig
from fcnseg.data.normalization import IMAGENET_RGB
from fcnseg.inference.predictor import Predictor
from fcnseg.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50", choices=["resnet50", "resnet101"])
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="fcn", backbone=args.backbone)).eval()
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    print(f"{args.backbone} FCN, {args.size}x{args.size}, fp32, {args.threads} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    for layout in ("contiguous", "channels_last"):
        predictor = Predictor(model, IMAGENET_RGB, precision="fp32", layout=layout, max_memory=None)
        predictor.predict(image)  # warm-up: oneDNN primitive creation
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            predictor.predict(image)
            times.append(time.perf_counter() - start)
        times.sort()
        print(f"{layout:>13}: min {times[0]:.3f} s, median {times[len(times) // 2]:.3f} s over {args.repeats}")


if __name__ == "__main__":
    main()

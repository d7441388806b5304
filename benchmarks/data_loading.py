"""Data-loading throughput of the VOC loader (decode JPEG + palette PNG, normalise, collate) with 0, 1 and 2 workers.

Writes a VOC-layout tree of 500x375 JPEG images (the typical PASCAL size) with the synthetic generator,
then times whole epochs through a DataLoader and prints a table in images per second.

    python benchmarks/data_loading.py [--num-images 120] [--workers 0 1 2] [--batch-size 1] [--root DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from fcnseg.data import PadCollate, VOCDataset, make_synthetic, train_transform


def epoch_images_per_second(dataset, workers: int, batch_size: int, epochs: int) -> float:
    """Best of ``epochs`` timed epochs (worker start-up included, as a training epoch pays it)."""
    best = 0.0
    for _ in range(epochs):
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=PadCollate()
        )
        start = time.perf_counter()
        count = sum(images.shape[0] for images, _ in loader)
        best = max(best, count / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=120)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=1, help="1 is the paper's setting")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per setting; the best is shown")
    parser.add_argument("--root", type=Path, help="reuse or create the tree here (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp) / "voc"
        if not (root / "ImageSets" / "Segmentation" / "train.txt").is_file():
            start = time.perf_counter()
            make_synthetic(root, num_train=args.num_images, num_val=0, seed=0, size=(375, 500))
            print(f"wrote {args.num_images} 500x375 JPEG images in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        plain = VOCDataset(root, "train")
        print(f"scan of {len(plain)} items: {time.perf_counter() - start:.2f} s")
        augmented = VOCDataset(root, "train", transform=train_transform(mirror=True), scan=False)

        torch.set_num_threads(1)  # one core per loader process, like a training run that keeps one for the model
        rows = []
        for name, dataset in (("normalise", plain), ("normalise + mirror", augmented)):
            for workers in args.workers:
                rows.append((name, workers, epoch_images_per_second(dataset, workers, args.batch_size, args.epochs)))

    print()
    print(f"VOC loader, 500x375 JPEG + palette PNG, batch size {args.batch_size}, {torch.get_num_threads()} thread(s)")
    print(f"{'pipeline':<20} {'workers':>7} {'images/s':>9}")
    print("-" * 38)
    for name, workers, rate in rows:
        print(f"{name:<20} {workers:>7} {rate:>9.1f}")


if __name__ == "__main__":
    main()

"""Data-loading throughput of the VOC loader (decode JPEG + palette PNG, normalise, collate) with 0, 1 and 2 workers.

Writes a VOC-layout tree of 500x375 JPEG images (the typical PASCAL size) with the synthetic generator,
then times whole epochs through a DataLoader and prints a table in images per second. The "training"
rows are what `fcnseg train` feeds with the small-cpu preset's augmentation (mirror, scale 0.75-1.25,
crop 128, seeded per item): augmenting the normalised float image (as before), the stored uint8
picture decoded on every use (data.cache_mb 0), and the uint8 picture held decoded in memory.

    python benchmarks/data_loading.py [--num-images 120] [--workers 0 1 2] [--batch-size 1] [--root DIR]
    python benchmarks/data_loading.py --size 250 --batch-size 8     # demo-sized images, the preset's batch
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from fcnseg.data import PadCollate, VOCDataset, make_synthetic, train_transform
from fcnseg.data.cache import CachedItems
from fcnseg.training.sampling import SeededItems

PRESET_AUGMENTATION = {"mirror": True, "scale_range": (0.75, 1.25), "crop_size": 128}


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
    parser.add_argument("--size", type=int, nargs=2, default=[375, 500], metavar=("H", "W"),
                        help="image size of a new tree (default 375 500)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp) / "voc"
        if not (root / "ImageSets" / "Segmentation" / "train.txt").is_file():
            start = time.perf_counter()
            make_synthetic(root, num_train=args.num_images, num_val=0, seed=0, size=tuple(args.size))
            print(f"wrote {args.num_images} {args.size[1]}x{args.size[0]} JPEG images in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        plain = VOCDataset(root, "train")
        print(f"scan of {len(plain)} items: {time.perf_counter() - start:.2f} s")
        augmented = VOCDataset(root, "train", transform=train_transform(mirror=True), scan=False)

        torch.set_num_threads(1)  # one core per loader process, like a training run that keeps one for the model
        float_training = VOCDataset(root, "train", transform=train_transform(**PRESET_AUGMENTATION), scan=False)
        uint8 = train_transform(**PRESET_AUGMENTATION, normalization=plain.normalization)
        decoded_each_time = CachedItems(VOCDataset(root, "train", scan=False), uint8, 0)
        cached = CachedItems(VOCDataset(root, "train", scan=False), uint8, 4 << 30)
        cached.fill()
        rows = []
        for name, dataset in (("normalise", plain), ("normalise + mirror", augmented),
                              ("training, float", SeededItems(float_training, 0)),
                              ("training, uint8", SeededItems(decoded_each_time, 0)),
                              ("training, uint8 cached", SeededItems(cached, 0))):
            for workers in args.workers:
                rows.append((name, workers, epoch_images_per_second(dataset, workers, args.batch_size, args.epochs)))

    print()
    print(f"VOC loader, JPEG + palette PNG, batch size {args.batch_size}, {torch.get_num_threads()} thread(s), "
          f"load average {'/'.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"{'pipeline':<24} {'workers':>7} {'images/s':>9}")
    print("-" * 42)
    for name, workers, rate in rows:
        print(f"{name:<24} {workers:>7} {rate:>9.1f}")


if __name__ == "__main__":
    main()

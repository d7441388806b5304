"""The training pipeline on uint8: decoded items held in memory within a budget, mirror/scale/crop before the float
conversion; the same values and random draws as augmenting the normalised image."""

import logging

import numpy as np
import pytest
import torch

from fcnseg.data import SyntheticDataset, VOCDataset, make_synthetic, train_transform
from fcnseg.data.cache import CachedItems, serves_rgb
from fcnseg.data.normalization import IMAGENET_RGB, PAPER_BGR
from fcnseg.data.transforms import Normalize
from fcnseg.training.sampling import SeededItems


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def synthetic(size=None, count=6):
    return SyntheticDataset("train", count, seed=3, style="blobs", size=size, normalization=IMAGENET_RGB)


def float_items(dataset, transform, keys, seed=11):
    """The augmentations on the normalised float image, as the data sets apply them (the reference)."""
    dataset.transform = transform
    try:
        return [SeededItems(dataset, seed)[k] for k in keys]
    finally:
        dataset.transform = None


def uint8_items(dataset, augment, keys, budget, seed=11):
    cached = CachedItems(dataset, train_transform(**augment, normalization=dataset.normalization), budget)
    cached.fill()
    return [SeededItems(cached, seed)[k] for k in keys], cached


KEYS = list(range(12))  # two epochs of six items: each key draws its own mirror and crop


@pytest.mark.parametrize("crop", [40, 200])  # 200: larger than every image, so the crop pads
def test_uint8_mirror_and_crop_equal_the_float_pipeline_exactly(crop):
    dataset = synthetic()
    augment = {"mirror": True, "scale_range": None, "crop_size": crop}
    expected = float_items(dataset, train_transform(**augment), KEYS)
    got, _ = uint8_items(dataset, augment, KEYS, budget=1 << 30)
    for (ei, em), (gi, gm) in zip(expected, got):
        assert gi.dtype == torch.float32 and gm.dtype == torch.int64
        assert torch.equal(gi, ei) and torch.equal(gm, em)


def test_uint8_scaling_draws_the_same_and_differs_by_rounding_only():
    dataset = synthetic()
    augment = {"mirror": True, "scale_range": (0.7, 1.3), "crop_size": 64}
    expected = float_items(dataset, train_transform(**augment), KEYS)
    got, _ = uint8_items(dataset, augment, KEYS, budget=1 << 30)
    one_level = 1 / 255 / min(IMAGENET_RGB.std)  # one grey level, normalised
    for (ei, em), (gi, gm) in zip(expected, got):
        assert gi.shape == ei.shape
        assert torch.equal(gm, em)  # nearest-neighbour labels: exact
        assert (gi - ei).abs().max() <= one_level + 1e-5


def test_the_cache_changes_no_value_and_no_random_draw():
    dataset = synthetic()
    augment = {"mirror": True, "scale_range": (0.7, 1.3), "crop_size": 64}
    from_memory, cached = uint8_items(dataset, augment, KEYS, budget=1 << 30)
    from_source, uncached = uint8_items(dataset, augment, KEYS, budget=0)
    assert len(cached.cached) == len(dataset) and not uncached.cached
    for (ai, am), (bi, bm) in zip(from_memory, from_source):
        assert torch.equal(ai, bi) and torch.equal(am, bm)


def test_fill_holds_what_fits_the_budget_and_serves_the_rest_from_the_source(caplog):
    dataset = synthetic(size=(20, 30))
    per_item = 20 * 30 * 3 + 20 * 30  # uint8 image and uint8 mask
    cached = CachedItems(dataset, train_transform(mirror=False, normalization=IMAGENET_RGB), 2 * per_item + 10)
    with caplog.at_level(logging.INFO, logger="fcnseg"):
        assert cached.fill() == 2
    assert cached.cached_bytes == 2 * per_item and "holding 2 of 6 training items" in caplog.text
    for index in range(len(dataset)):
        image, mask = cached[index]
        raw = dataset.load_raw(index)
        assert torch.equal(image, IMAGENET_RGB.image_to_tensor(raw.image))
        assert torch.equal(mask, torch.from_numpy(raw.mask))
    assert cached.class_names == dataset.class_names and len(cached) == len(dataset)


def test_workers_serve_the_filled_items_as_one_process_does():
    dataset = synthetic(count=4)
    cached = CachedItems(dataset, train_transform(mirror=True, crop_size=32, normalization=IMAGENET_RGB), 1 << 30)
    cached.fill()
    seeded = SeededItems(cached, 5)

    def batches(workers):
        loader = torch.utils.data.DataLoader(seeded, batch_size=2, num_workers=workers)
        return list(loader)

    for (a, am), (b, bm) in zip(batches(0), batches(2)):
        assert torch.equal(a, b) and torch.equal(am, bm)


def test_an_image_gone_bad_after_the_scan_is_replaced_by_the_next_as_before(tmp_path, caplog):
    make_synthetic(tmp_path, num_train=3, num_val=0, seed=0, style="blobs", size=(24, 24))
    dataset = VOCDataset(tmp_path, "train", normalization=PAPER_BGR)
    cached = CachedItems(dataset, train_transform(mirror=False, normalization=PAPER_BGR), 0)
    (tmp_path / "JPEGImages" / f"{dataset.name(0)}.jpg").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        image, _ = cached[0]
    assert torch.equal(image, dataset.load_item(1)[0]) and "substituting the next item" in caplog.text


def test_only_data_sets_that_serve_their_rgb_picture_take_the_uint8_pipeline():
    assert serves_rgb(synthetic())

    class Depth(SyntheticDataset):
        def image_tensor(self, raw):
            return torch.zeros(1, *raw.mask.shape)

    assert not serves_rgb(Depth("train", 1))


def test_normalize_pads_a_uint8_crop_to_the_mask_with_the_mean_pixel():
    image = torch.full((3, 2, 3), 7, dtype=torch.uint8)
    mask = torch.full((4, 5), 255, dtype=torch.uint8)
    out, out_mask = Normalize(PAPER_BGR)(image, mask)
    assert out.shape == (3, 4, 5) and out_mask.dtype == torch.int64
    expected = torch.tensor([7 - m for m in PAPER_BGR.mean], dtype=torch.float32)
    assert torch.allclose(out[:, 0, 0], expected) and torch.count_nonzero(out[:, 2:, :]) == 0
    assert torch.count_nonzero(out[:, :, 3:]) == 0
    with pytest.raises(TypeError, match="uint8"):
        Normalize(PAPER_BGR)(image.float(), mask)


def test_uint8_scaling_keeps_labels_exact_on_uint8_masks():
    from fcnseg.data import RandomScale

    g = torch.Generator().manual_seed(0)
    mask = torch.randint(0, 5, (11, 17), generator=g)
    mask[0, 0] = 255
    image = torch.randint(0, 256, (3, 11, 17), dtype=torch.uint8, generator=g)
    _, m64 = RandomScale(1.6, 1.6)(image, mask)
    i8, m8 = RandomScale(1.6, 1.6)(image, mask.to(torch.uint8))
    assert i8.dtype == torch.uint8 and m8.dtype == torch.uint8
    assert torch.equal(m8.long(), m64)
    np.testing.assert_array_equal(np.unique(m8.numpy()), np.unique(mask.numpy()))


def test_a_run_with_a_persistent_worker_takes_the_updates_of_an_in_process_run(tmp_path):
    from fcnseg.config import resolve_run_config
    from fcnseg.training.trainer import train

    def run(workers):
        return train(resolve_run_config(overrides={
            "model": {"arch": "fcn32s", "backbone": "small", "num_classes": 6, "padding": "same"},
            "data": {"dataset": "synthetic", "root": "", "synthetic_train_images": 4, "synthetic_val_images": 1,
                     "synthetic_size": 36, "crop_size": 32, "scale_min": 0.8, "scale_max": 1.2,
                     "num_workers": workers, "normalization": "imagenet_rgb"},
            "train": {"out_dir": str(tmp_path / f"w{workers}"), "optimizer": "adamw", "lr": 1e-3, "batch_size": 2,
                      "max_iter": 5, "val_every": 0, "checkpoint_every": 0, "num_panels": 0, "precision": "fp32",
                      "deterministic": True, "seed": 2},
        }), progress=False).losses

    assert run(1) == run(0)  # five updates of two: two and a half epochs through the same worker

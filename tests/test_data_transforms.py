"""Augmentations and collate: mirror, scale and crop keep image and mask aligned; padding uses 0 and the ignore label."""

import numpy as np
import pytest
import torch

from fcnseg.data import PadCollate, RandomCrop, RandomMirror, RandomScale, train_transform
from fcnseg.data.normalization import PAPER_BGR


def pair(h=11, w=17, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(3, h, w, generator=g)
    mask = torch.randint(0, 5, (h, w), generator=g)
    return image, mask


def test_paper_normalization_is_bgr_minus_the_reference_mean():
    rgb = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    x = PAPER_BGR.image_to_tensor(rgb)
    assert x[0, 2, 3].item() == pytest.approx(rgb[2, 3, 2] - 104.00698793, abs=1e-4)  # B first
    assert x[2, 2, 3].item() == pytest.approx(rgb[2, 3, 0] - 122.67891434, abs=1e-4)  # R last
    np.testing.assert_array_equal(PAPER_BGR.tensor_to_image(x), rgb)


def test_random_mirror_flips_image_and_mask_together():
    image, mask = pair()
    out_image, out_mask = RandomMirror(p=1.0)(image, mask)
    assert torch.equal(out_image, image.flip(-1)) and torch.equal(out_mask, mask.flip(-1))
    same_image, same_mask = RandomMirror(p=0.0)(image, mask)
    assert torch.equal(same_image, image) and torch.equal(same_mask, mask)


def test_random_scale_resizes_both_and_never_invents_labels():
    image, mask = pair()
    mask[0, 0] = 255
    out_image, out_mask = RandomScale(2.0, 2.0)(image, mask)
    assert out_image.shape == (3, 22, 34) and out_mask.shape == (22, 34)
    assert out_mask.dtype == torch.int64
    assert set(out_mask.unique().tolist()) <= set(mask.unique().tolist())
    assert torch.equal(out_mask[::2, ::2], mask)  # nearest at 2x repeats each label


def test_random_crop_pads_the_mask_with_ignore_and_the_image_with_zero():
    image, mask = pair(h=5, w=6)
    out_image, out_mask = RandomCrop((9, 8))(image, mask)
    assert out_image.shape == (3, 9, 8) and out_mask.shape == (9, 8)
    # the input fits, so the only crop keeps it at the top-left
    assert torch.equal(out_mask[:5, :6], mask) and torch.equal(out_image[:, :5, :6], image)
    assert (out_mask[5:] == 255).all() and (out_mask[:, 6:] == 255).all()
    assert (out_image[:, 5:] == 0).all() and (out_image[:, :, 6:] == 0).all()


def test_random_crop_takes_an_aligned_window_of_a_larger_input():
    image, mask = pair(h=30, w=40)
    marker = torch.arange(30 * 40).view(30, 40)
    out_image, out_mask = RandomCrop(10, generator=torch.Generator().manual_seed(3))(marker[None].float(), marker)
    top, left = divmod(int(out_mask[0, 0]), 40)
    assert torch.equal(out_mask, marker[top : top + 10, left : left + 10])
    assert torch.equal(out_image[0].long(), out_mask)


def test_train_transform_describes_itself_for_the_run_record():
    t = train_transform(mirror=True, scale_range=(0.5, 1.5), crop_size=(64, 48))
    assert t.to_dict() == {
        "name": "compose",
        "transforms": [
            {"name": "random_mirror", "p": 0.5},
            {"name": "random_scale", "min_scale": 0.5, "max_scale": 1.5},
            {"name": "random_crop", "size": [64, 48], "ignore_index": 255},
        ],
    }
    image, mask = t(*pair(h=40, w=30))
    assert image.shape == (3, 64, 48) and mask.shape == (64, 48)


def test_pad_collate_batches_different_sizes_padding_masks_with_ignore():
    batch = [pair(5, 7, 0), pair(9, 4, 1)]
    images, masks = PadCollate()(batch)
    assert images.shape == (2, 3, 9, 7) and masks.shape == (2, 9, 7) and masks.dtype == torch.int64
    assert torch.equal(images[0, :, :5, :7], batch[0][0]) and (images[0, :, 5:] == 0).all()
    assert torch.equal(masks[1, :9, :4], batch[1][1]) and (masks[1, :, 4:] == 255).all()


def test_pad_collate_of_one_item_is_the_item_itself():
    image, mask = pair(13, 19)
    images, masks = PadCollate()([(image, mask)])
    assert torch.equal(images[0], image) and torch.equal(masks[0], mask)


def test_pad_collate_rounds_up_to_the_size_divisor():
    images, masks = PadCollate(size_divisor=32)([pair(13, 40)])
    assert images.shape[-2:] == (32, 64) and (masks[0, 13:] == 255).all()


def test_collate_works_in_a_dataloader_with_a_worker():
    data = [pair(5 + i, 9 - i, i) for i in range(4)]
    loader = torch.utils.data.DataLoader(data, batch_size=2, collate_fn=PadCollate(), num_workers=1)
    shapes = [tuple(m.shape) for _, m in loader]
    assert shapes == [(2, 6, 9), (2, 8, 7)]

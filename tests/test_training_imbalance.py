"""Class imbalance in training: class weights from the scan's counts, the loss setting, the collapse warning."""

import json

import numpy as np
import pytest
from PIL import Image

from fcnseg.config import resolve_run_config
from fcnseg.data import VOCDataset, voc_palette
from fcnseg.errors import ConfigError
from fcnseg.training.datasets import class_frequencies, class_weights
from fcnseg.training.trainer import train


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def write_tree(root, masks):
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, mask in masks.items():
        Image.fromarray(np.zeros((*mask.shape, 3), np.uint8)).save(root / "JPEGImages" / f"{name}.png")
        m = Image.fromarray(mask.astype(np.uint8), mode="P")
        m.putpalette(voc_palette().flatten().tolist())
        m.save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets/Segmentation/train.txt").write_text("".join(f"{n}\n" for n in masks))
    (root / "classes.txt").write_text("background\ncat\ndog\n")


def test_auto_class_weights_are_median_frequency_balancing_of_the_hand_counted_scan(tmp_path):
    a = np.zeros((10, 10), np.uint8)  # 100 labelled: 90 background, 10 cat
    a[:1, :] = 1
    b = np.zeros((10, 10), np.uint8)  # 96 labelled: 76 background, 20 dog; 4 ignore
    b[:2, :] = 2
    b[5, :4] = 255
    write_tree(tmp_path, {"a": a, "b": b})
    dataset = VOCDataset(tmp_path, "train")
    class_pixels, image_pixels = class_frequencies(dataset)
    assert class_pixels.tolist() == [166, 10, 20]
    assert image_pixels.tolist() == [196, 100, 96]  # background in both images, cat in a, dog in b
    config = resolve_run_config(overrides={"data": {"dataset": "synthetic"}, "train": {"class_weights": "auto"}}).train
    weights = class_weights(config, dataset, ["background", "cat", "dog"]).tolist()
    freq = np.array([166 / 196, 10 / 100, 20 / 96])
    assert weights == pytest.approx((np.median(freq) / freq).tolist(), rel=1e-6)


def test_class_weights_list_must_give_one_weight_per_class(tmp_path):
    write_tree(tmp_path, {"a": np.zeros((4, 4), np.uint8)})
    config = resolve_run_config(overrides={"data": {"dataset": "synthetic"}, "train": {"class_weights": [1, 2]}}).train
    with pytest.raises(ConfigError, match="class_weights has 2 values but the data set has 3 classes"):
        class_weights(config, VOCDataset(tmp_path, "train"), ["background", "cat", "dog"])
    with pytest.raises(ConfigError, match="class_weights 'median' is not none, auto or a list"):
        resolve_run_config(overrides={"data": {"dataset": "synthetic"}, "train": {"class_weights": "median"}})
    with pytest.raises(ConfigError, match="loss 'hinge'"):
        resolve_run_config(overrides={"data": {"dataset": "synthetic"}, "train": {"loss": "hinge"}})


def tiny(tmp_path, **train):
    return resolve_run_config(overrides={
        "model": {"arch": "fcn32s", "backbone": "small", "num_classes": 6, "dropout": 0.1},
        "data": {"dataset": "synthetic", "root": "", "synthetic_train_images": 4, "synthetic_val_images": 2,
                 "synthetic_size": 48, "crop_size": 40, "num_workers": 0, "normalization": "imagenet_rgb"},
        "train": {"out_dir": str(tmp_path / "run"), "optimizer": "adamw", "batch_size": 2, "iter_size": 1,
                  "max_iter": 2, "val_every": 2, "checkpoint_every": 2, "log_every": 1, "precision": "fp32",
                  "num_panels": 0, **train},
    })


def test_an_all_background_validation_warns_in_the_log_and_the_run_summary(tmp_path, caplog):
    # lr 0: the zero-initialised score layers stay zero, every pixel is scored class 0 (background)
    with caplog.at_level("WARNING"):
        result = train(tiny(tmp_path, lr=0.0, per_class_curves=True), progress=False)
    assert "collapsed to one class" in caplog.text and "class_weights: auto" in caplog.text
    summary = (result.out_dir / "metrics.txt").read_text()
    assert "warning: the validation predicted 'background'" in summary
    records = json.loads((result.out_dir / "metrics.json").read_text())["validations"]
    assert records[-1]["warning"].startswith("the validation predicted 'background'")
    assert (result.out_dir / "per_class_iu.png").stat().st_size > 0
    assert (result.out_dir / "per_class_curves.png").stat().st_size > 0


@pytest.mark.parametrize("loss", ["focal", "cross_entropy+lovasz", "dice"])
def test_every_loss_trains_with_auto_class_weights(tmp_path, loss, caplog):
    with caplog.at_level("INFO"):
        result = train(tiny(tmp_path, lr=2e-3, loss=loss, class_weights="auto"), progress=False)
    assert result.iteration == 2 and all(np.isfinite(result.losses))
    assert "median frequency balancing" in caplog.text and f"{loss} loss with class weights (auto)" in caplog.text

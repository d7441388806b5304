"""A small FCN-8s trained a few dozen steps, its checkpoint, fp32 ONNX export and int8 quantization, made once per test session.

The ONNX export takes seconds to tens of seconds; test_quantize, test_runtime and test_tta share one
set of files through pytest's session temp folder.
"""

from __future__ import annotations

import json

import torch
from PIL import Image

from fcnseg.weights.checkpoint import load_model, save_checkpoint
from fcnseg.config import ModelConfig
from fcnseg.data.normalization import IMAGENET_RGB
from fcnseg.data.synthetic import generate_sample, synthetic_classes
from fcnseg.models import build_model

STYLE = "blobs"  # texture classes: a few dozen steps already separate some of them from background
CLASSES = list(synthetic_classes(STYLE).names)
SIZE = (72, 88)  # tiny scenes: the trunk still sees 272 x 288 pixels through its pad-100 border


def train_small(steps: int = 40) -> torch.nn.Module:
    """A small FCN-8s (BatchNorm trunk, RGB ImageNet normalisation) fitted ``steps`` Adam steps to synthetic scenes."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=len(CLASSES), batch_norm=True, dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        items = [generate_sample(1, "train", step * 4 + i, STYLE, size=SIZE) for i in range(4)]
        x = torch.stack([IMAGENET_RGB.image_to_tensor(item.image) for item in items])
        y = torch.stack([torch.from_numpy(item.mask) for item in items])
        loss = torch.nn.functional.cross_entropy(model(x), y, ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def scene(seed: int, index: int, size=SIZE):
    return generate_sample(seed, "val", index, STYLE, size=size)


def small_models(tmp_path_factory) -> dict:
    """``{"folder", "checkpoint", "fp32", "int8", "calib"}`` paths (built on first use in this session) and ``model``."""
    from fcnseg.inference.export import export_onnx
    from fcnseg.inference.quantization import quantize_onnx, read_calibration_images

    folder = tmp_path_factory.getbasetemp() / "onnx-small"
    paths = {"folder": folder, "checkpoint": folder / "model.pt", "fp32": folder / "fp32.onnx",
             "int8": folder / "int8.onnx", "calib": folder / "calib"}
    done = folder / "done.json"
    if not done.is_file():
        folder.mkdir(exist_ok=True)
        model = train_small()
        save_checkpoint(paths["checkpoint"], model, model.config, CLASSES, IMAGENET_RGB)
        export_onnx(load_model(paths["checkpoint"]), paths["fp32"])
        paths["calib"].mkdir(exist_ok=True)
        for i in range(8):  # sizes as they come: odd and even, none equal to the test scenes'
            image = generate_sample(2, "train", i, STYLE, size=(60 + 7 * i, 90 - 5 * i)).image
            Image.fromarray(image).save(paths["calib"] / f"c{i}.png")
        quantize_onnx(paths["fp32"], paths["int8"], read_calibration_images(paths["calib"], 8).images)
        done.write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    paths["model"] = load_model(paths["checkpoint"]).model.eval()
    return paths

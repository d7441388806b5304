"""int8 of a ResNet-50 FCN read from a torchvision-layout file: the command quantizes it, the FCNHead stays float by
default, and the int8 graph agrees with an independent functional forward of the same weights on images it was
not calibrated on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.cli import main
from resnet_reference import functional_forward, random_fcn_state_dict

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from fcnseg.inference.quantization import float_nodes  # noqa: E402
from fcnseg.weights.checkpoint import load_model  # noqa: E402

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])  # torchvision's ImageNet normalisation


def picture(seed: int, size=(40, 48)) -> np.ndarray:
    """A smooth random RGB uint8 picture (blocks of colour): activations like a photo's rather than white noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
    return np.ascontiguousarray(coarse.repeat(8, axis=0).repeat(8, axis=1))


def reference_labels(state: dict, image: np.ndarray) -> np.ndarray:
    """argmax of torchvision's FCN (written out in resnet_reference.py) on ``image``, normalised as torchvision does."""
    x = torch.from_numpy(((image / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None]).float()
    with torch.no_grad():
        return functional_forward(state, x)["out"][0].argmax(0).numpy()


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """A random torchvision-layout ``fcn_resnet50_coco`` file, a calibration folder, and its int8 file made by the CLI."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("resnet-int8")
    state = random_fcn_state_dict("resnet50", aux=True, seed=3)
    weights = root / "fcn_resnet50_coco-random.pth"
    torch.save(state, weights)
    (root / "calib").mkdir()
    for i in range(3):
        Image.fromarray(picture(i)).save(root / "calib" / f"{i}.png")
    out = root / "fcn-resnet50-int8.onnx"
    assert main(["quantize", str(weights), str(out), "--calib", str(root / "calib"), "--check", "1"]) == 0
    return {"state": state, "weights": weights, "int8": out}


def test_the_int8_file_loads_as_a_resnet_fcn_with_its_classes(quantized):
    handle = load_model(quantized["int8"])
    assert handle.precision == "int8" and len(handle.class_names) == 21
    assert handle.class_names[0] == "background" and handle.class_names[15] == "person"  # the VOC names


def test_the_fcn_head_stays_float_and_the_trunk_is_int8(quantized):
    proto = onnx.load(str(quantized["int8"]))
    dequantized = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    convs = {n.input[1]: n.input[1] in dequantized for n in proto.graph.node if n.op_type == "Conv"}
    floats = sorted(w for w, q in convs.items() if not q)
    # first, head: conv1 and the FCNHead's 3x3 and 1x1 read their float initialisers; the 52 other convs int8
    assert floats == ["model.backbone.conv1.weight", "model.classifier.0.weight", "model.classifier.4.weight"]
    assert sum(convs.values()) == 53 - 1  # 53 trunk convolutions (16 blocks x 3 + 4 shortcuts + conv1), conv1 float
    by_name = {n.name: n for n in proto.graph.node}
    scores = float_nodes(proto, ("score",))["score"]
    assert [by_name[n].input[1] for n in scores] == ["model.classifier.4.weight"]


def test_int8_agrees_with_the_reference_forward_on_images_it_was_not_calibrated_on(quantized):
    from fcnseg.weights.onnx_format import OnnxNet

    net = OnnxNet(quantized["int8"])
    agree = total = 0
    for seed in (10, 11):  # not among the calibration pictures (0, 1, 2)
        image = picture(seed, size=(56, 64))
        labels = net(np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32))[0].argmax(0).numpy()
        reference = reference_labels(quantized["state"], image)
        assert labels.shape == reference.shape == image.shape[:2]
        agree += int((labels == reference).sum())
        total += labels.size
    assert agree / total >= 0.9, f"int8 agrees with fp32 on {agree / total:.1%} of the pixels"

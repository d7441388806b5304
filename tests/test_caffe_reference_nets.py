"""The released NYUDv2, SIFT Flow and PASCAL-Context caffemodels load by their layer names and compute what their
net.py files define.

Each file is written with the protobuf package (blob payloads parsed by protobuf from packed bytes) in the layout of
the reference net (fcn.berkeleyvision.org nyud-fcn32s-*, siftflow-fcn*, pascalcontext-fcn*/net.py), with narrow
trunks (the mapping goes by names, never widths), and the expected scores come from a functional forward written
here from those net definitions, crop offsets as the reference prototxts have them.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("google.protobuf")
import fcnseg.models.backbones as backbones  # noqa: E402
from caffe_proto import caffe_messages, packed_floats  # noqa: E402
from fcnseg.weights.checkpoint import load_model, save_checkpoint  # noqa: E402
from fcnseg.cli import main  # noqa: E402
from fcnseg.data.nyud import NYUD_CLASSES  # noqa: E402
from fcnseg.data.siftflow import SIFTFLOW_GEOMETRIC_CLASSES, SIFTFLOW_SEMANTIC_CLASSES  # noqa: E402
from fcnseg.errors import ConfigError  # noqa: E402
from fcnseg.inference.predictor import Predictor  # noqa: E402

STAGES = ((2, 2), (3, 3), (4, 4, 4), (4, 4, 4), (5, 5, 5))  # narrow VGG16: the same 13 convolutions
FC = 6
CROPS = {"fcn32s": {"score": 19}, "fcn16s": {"pool4": 5, "score": 27}, "fcn8s": {"pool4": 5, "pool3": 9, "score": 31}}


MESSAGES = caffe_messages("ref")


class RefNet:
    """A reference net being written: its layers in net.py order and the weights of each, for the forward."""

    def __init__(self, seed: int):
        self.net = MESSAGES["NetParameter"]()
        self.weights: dict[str, list[torch.Tensor]] = {}
        self.rng = np.random.default_rng(seed)

    def layer(self, name: str, type_: str, *shapes):
        layer = self.net.layer.add(name=name, type=type_)
        arrays = []
        for k, shape in enumerate(shapes):
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            scale = (2.0 / fan_in) ** 0.5 if k == 0 else 0.1
            array = (self.rng.standard_normal(shape) * scale).astype(np.float32)
            blob = MESSAGES["BlobProto"]()
            blob.shape.dim.extend(array.shape)
            blob.MergeFromString(packed_floats(array))
            layer.blobs.append(blob)
            arrays.append(torch.from_numpy(array))
        self.weights[name] = arrays

    def conv(self, name, out, inp, k):
        self.layer(name, "Convolution", (out, inp, k, k), (out,))
        self.layer(name.replace("conv", "relu").replace("fc", "relu"), "ReLU")

    def trunk(self, channels: int, suffix: str = "", first: str = "conv1_1"):
        inp = channels
        for s, widths in enumerate(STAGES, 1):
            for i, out in enumerate(widths, 1):
                self.conv(first if (s, i) == (1, 1) else f"conv{s}_{i}{suffix}", out, inp, 3)
                inp = out
            self.layer(f"pool{s}{suffix}", "Pooling")
        self.conv(f"fc6{suffix}", FC, inp, 7)
        self.layer(f"drop6{suffix}", "Dropout")
        self.conv(f"fc7{suffix}", FC, FC, 1)
        self.layer(f"drop7{suffix}", "Dropout")

    def head(self, arch: str, classes: int, s: str = ""):
        self.layer(f"score_fr{s}", "Convolution", (classes, FC, 1, 1), (classes,))
        if arch == "fcn32s":
            self.layer(f"upscore{s}", "Deconvolution", (classes, classes, 64, 64))
        else:
            self.layer(f"upscore2{s}", "Deconvolution", (classes, classes, 4, 4))
            self.layer(f"score_pool4{s}", "Convolution", (classes, STAGES[3][-1], 1, 1), (classes,))
            self.layer(f"score_pool4{s}c", "Crop")
            self.layer(f"fuse_pool4{s}", "Eltwise")
        if arch == "fcn16s":
            self.layer(f"upscore16{s}", "Deconvolution", (classes, classes, 32, 32))
        if arch == "fcn8s":
            self.layer(f"upscore_pool4{s}", "Deconvolution", (classes, classes, 4, 4))
            self.layer(f"score_pool3{s}", "Convolution", (classes, STAGES[2][-1], 1, 1), (classes,))
            self.layer(f"score_pool3{s}c", "Crop")
            self.layer(f"fuse_pool3{s}", "Eltwise")
            self.layer(f"upscore8{s}", "Deconvolution", (classes, classes, 16, 16))
        self.layer(f"score{s}", "Crop")
        self.layer(f"loss{s}", "SoftmaxWithLoss")

    def write(self, path):
        path.write_bytes(self.net.SerializeToString())
        return path


# --- the forward of the reference net definitions ------------------------------------------------------------


def trunk_forward(w, x, suffix="", first="conv1_1"):
    """conv_relu x 13 (conv1_1 pad 100, the others pad 1), max_pool 2/2 (Caffe rounds up), fc6 7x7, fc7 1x1."""
    h, pools = x, {}
    for s, widths in enumerate(STAGES, 1):
        for i in range(1, len(widths) + 1):
            name = first if (s, i) == (1, 1) else f"conv{s}_{i}{suffix}"
            h = F.relu(F.conv2d(h, *w[name], padding=100 if (s, i) == (1, 1) else 1))
        h = pools[s] = F.max_pool2d(h, 2, 2, ceil_mode=True)
    h = F.relu(F.conv2d(h, *w[f"fc6{suffix}"]))
    return {"fc7": F.relu(F.conv2d(h, *w[f"fc7{suffix}"])), "pool3": pools[3], "pool4": pools[4]}


def _crop(x, offset, like):
    return x[:, :, offset:offset + like.shape[2], offset:offset + like.shape[3]]


def head_forward(w, f, x, arch, s="", score=None):
    score = F.conv2d(f["fc7"], *w[f"score_fr{s}"]) if score is None else score
    crops = CROPS[arch]
    if arch == "fcn32s":
        up = F.conv_transpose2d(score, w[f"upscore{s}"][0], stride=32)
    else:
        up = F.conv_transpose2d(score, w[f"upscore2{s}"][0], stride=2)
        up = up + _crop(F.conv2d(f["pool4"], *w[f"score_pool4{s}"]), crops["pool4"], up)
        if arch == "fcn16s":
            up = F.conv_transpose2d(up, w[f"upscore16{s}"][0], stride=16)
        else:
            up = F.conv_transpose2d(up, w[f"upscore_pool4{s}"][0], stride=2)
            up = up + _crop(F.conv2d(f["pool3"], *w[f"score_pool3{s}"]), crops["pool3"], up)
            up = F.conv_transpose2d(up, w[f"upscore8{s}"][0], stride=8)
    return _crop(up, crops["score"], x)


@pytest.fixture
def narrow_vgg(monkeypatch):
    monkeypatch.setattr(backbones, "VGG16_STAGES", STAGES)
    monkeypatch.setattr(backbones, "VGG16_FC_CHANNELS", FC)


def _close(ours, expected):
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


# --- the nets ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("modality, filename, normalization", [
    ("color", "nyud-fcn32s-color-heavy.caffemodel", "nyud_bgr"),
    ("hha", "nyud-fcn32s-hha-heavy.caffemodel", "nyud_hha"),
])
def test_nyud_single_modality_nets(tmp_path, narrow_vgg, modality, filename, normalization):
    ref = RefNet(1)
    ref.layer("data", "Python")
    ref.trunk(3)
    ref.head("fcn32s", 40)
    loaded = load_model(ref.write(tmp_path / filename))
    assert (loaded.config.arch, loaded.config.num_classes, loaded.config.in_channels) == ("fcn32s", 40, 3)
    assert loaded.normalization.name == normalization and loaded.class_names == list(NYUD_CLASSES)
    assert (loaded.inputs.modalities if loaded.inputs else "color") == modality
    x = torch.randn(1, 3, 29, 34) * 40
    with torch.no_grad():
        _close(loaded.model(x), head_forward(ref.weights, trunk_forward(ref.weights, x), x, "fcn32s"))
    Predictor(loaded.model, loaded.normalization, device="cpu")  # one RGB-like input, one head: predictable


def test_nyud_early_fusion_color_depth_net(tmp_path, narrow_vgg):
    ref = RefNet(2)
    ref.layer("color", "Python")
    ref.layer("data", "Concat")
    ref.trunk(4, first="conv1_1_bgrd")
    ref.head("fcn32s", 40)
    loaded = load_model(ref.write(tmp_path / "nyud-fcn32s-color-d.caffemodel"))
    assert loaded.config.streams == [["color+depth", 4]] and loaded.config.in_channels == 4
    assert loaded.inputs.modalities == "color+depth"
    assert {m: n.name for m, n in loaded.inputs.normalizations.items()} == {"color": "nyud_bgr", "depth": "nyud_log_depth"}
    assert loaded.model.backbone.conv1_1.weight.shape[1] == 4
    x = torch.randn(1, 4, 31, 30) * 40
    with torch.no_grad():
        _close(loaded.model(x), head_forward(ref.weights, trunk_forward(ref.weights, x, first="conv1_1_bgrd"), x, "fcn32s"))
    with pytest.raises(ConfigError, match=r"reads color\+depth \(4 channels\).*fcnseg eval"):
        Predictor(loaded.model, loaded.normalization, device="cpu")


def test_nyud_late_fusion_color_hha_net(tmp_path, narrow_vgg):
    ref = RefNet(3)
    ref.layer("color", "Python")
    for stream in ("color", "hha"):
        ref.trunk(3, suffix=stream, first=f"conv1_1{stream}")
        ref.layer(f"score_fr{stream}", "Convolution", (40, FC, 1, 1), (40,))
    ref.layer("score_fused", "Eltwise")
    ref.layer("upscore", "Deconvolution", (40, 40, 64, 64))
    ref.layer("score", "Crop")
    path = ref.write(tmp_path / "nyud-fcn32s-color-hha-heavy.caffemodel")
    loaded = load_model(path)
    assert loaded.config.streams == [["color", 3], ["hha", 3]]
    assert loaded.inputs.modalities == "color+hha"
    assert {m: n.name for m, n in loaded.inputs.normalizations.items()} == {"color": "nyud_bgr", "hha": "nyud_hha"}
    color, hha = torch.randn(1, 3, 33, 28) * 40, torch.randn(1, 3, 33, 28) * 40
    w = ref.weights
    with torch.no_grad():
        fused = 0.5 * F.conv2d(trunk_forward(w, color, "color", "conv1_1color")["fc7"], *w["score_frcolor"]) \
            + 0.5 * F.conv2d(trunk_forward(w, hha, "hha", "conv1_1hha")["fc7"], *w["score_frhha"])
        _close(loaded.model(torch.cat([color, hha], dim=1)), head_forward(w, {}, color, "fcn32s", score=fused))
    # a checkpoint of it keeps what evaluation needs to feed it
    save_checkpoint(tmp_path / "late.pt", loaded.model, loaded.config, loaded.class_names, loaded.normalization,
                    head_class_names=loaded.head_class_names, inputs=loaded.inputs)
    again = load_model(tmp_path / "late.pt")
    assert again.inputs == loaded.inputs and again.config == loaded.config
    with pytest.raises(ConfigError, match=r"reads color \(3 channels\), hha \(3 channels\)"):
        Predictor(again.model, again.normalization, device="cpu")


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s"])
def test_siftflow_two_head_nets(tmp_path, narrow_vgg, arch):
    ref = RefNet(4)
    ref.layer("data", "Python")
    ref.trunk(3)
    ref.head(arch, 33, "_sem")
    ref.head(arch, 3, "_geo")
    path = ref.write(tmp_path / f"siftflow-{arch}-heavy.caffemodel")
    loaded = load_model(path)
    assert loaded.config.arch == arch and loaded.config.heads == [["semantic", 33], ["geometric", 3]]
    assert loaded.normalization.name == "siftflow_bgr"
    assert loaded.head_class_names == {"semantic": list(SIFTFLOW_SEMANTIC_CLASSES),
                                       "geometric": list(SIFTFLOW_GEOMETRIC_CLASSES)}
    x = torch.randn(1, 3, 30, 37) * 40
    with torch.no_grad():
        out = loaded.model(x)
        features = trunk_forward(ref.weights, x)
        _close(out["semantic"], head_forward(ref.weights, features, x, arch, "_sem"))
        _close(out["geometric"], head_forward(ref.weights, features, x, arch, "_geo"))
    with pytest.raises(ConfigError, match="heads semantic, geometric.*save-predictions"):
        Predictor(loaded.model, loaded.normalization, device="cpu")
    assert main(["convert", str(path), str(tmp_path / "sift.pt")]) == 0  # keeps both heads' classes
    again = load_model(tmp_path / "sift.pt")
    assert (again.config, again.head_class_names) == (loaded.config, loaded.head_class_names)


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s"])
def test_pascal_context_nets(tmp_path, narrow_vgg, arch):
    ref = RefNet(5)
    ref.layer("data", "Python")
    ref.trunk(3)
    ref.head(arch, 60)
    loaded = load_model(ref.write(tmp_path / f"pascalcontext-{arch}-heavy.caffemodel"))
    assert (loaded.config.arch, loaded.config.num_classes, loaded.config.heads) == (arch, 60, [])
    assert loaded.normalization.name == "paper_bgr" and loaded.inputs is None
    x = torch.randn(1, 3, 35, 26) * 40
    with torch.no_grad():
        _close(loaded.model(x), head_forward(ref.weights, trunk_forward(ref.weights, x), x, arch))

"""A full-size FCN-AlexNet caffemodel, loaded by load_model, computes what Caffe's layer definitions say.

The file is written with the protobuf package (blob payloads parsed by protobuf from packed bytes),
and the expected output comes from a functional forward written from voc-fcn-alexnet/net.py.
"""

import builtins
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("google.protobuf")
from caffe_proto import caffe_messages, packed_floats  # noqa: E402
from fcnseg.weights.checkpoint import load_model  # noqa: E402



ALEXNET = [  # name, type, weight shape (Caffe layout), per voc-fcn-alexnet/net.py
    ("conv1", "Convolution", (96, 3, 11, 11)), ("conv2", "Convolution", (256, 48, 5, 5)),
    ("conv3", "Convolution", (384, 256, 3, 3)), ("conv4", "Convolution", (384, 192, 3, 3)),
    ("conv5", "Convolution", (256, 192, 3, 3)), ("fc6", "Convolution", (4096, 256, 6, 6)),
    ("fc7", "Convolution", (4096, 4096, 1, 1)), ("score_fr", "Convolution", (5, 4096, 1, 1)),
    ("upscore", "Deconvolution", (5, 5, 63, 63)),
]


def caffe_alexnet_forward(w: dict, x: torch.Tensor) -> torch.Tensor:
    def conv(h, name, **kw):
        return F.conv2d(h, w[name][0], w[name][1], **kw)

    def lrn(h):  # Caffe ACROSS_CHANNELS: x / (1 + alpha/n * sum(x^2))^beta
        return F.local_response_norm(h, 5, alpha=1e-4, beta=0.75, k=1.0)

    h = F.relu(conv(x, "conv1", stride=4, padding=100))
    h = lrn(F.max_pool2d(h, 3, 2, ceil_mode=True))
    h = F.relu(conv(h, "conv2", padding=2, groups=2))
    h = lrn(F.max_pool2d(h, 3, 2, ceil_mode=True))
    h = F.relu(conv(h, "conv3", padding=1))
    h = F.relu(conv(h, "conv4", padding=1, groups=2))
    h = F.relu(conv(h, "conv5", padding=1, groups=2))
    h = F.max_pool2d(h, 3, 2, ceil_mode=True)
    h = F.relu(conv(h, "fc6"))
    h = F.relu(conv(h, "fc7"))
    h = conv(h, "score_fr")
    h = F.conv_transpose2d(h, w["upscore"][0], stride=32)
    return h[:, :, 18 : 18 + x.shape[2], 18 : 18 + x.shape[3]]  # crop offset typed into the reference prototxt


def test_full_size_fcn_alexnet_caffemodel_runs_as_caffe_defines_it(tmp_path, monkeypatch):
    messages = caffe_messages("e2e")
    rng = np.random.default_rng(0)
    net = messages["NetParameter"](name="voc-fcn-alexnet")
    net.layer.add(name="data", type="Python")
    weights = {}
    for name, type_, shape in ALEXNET:
        fan_in = int(np.prod(shape[1:]))
        blobs = [rng.standard_normal(shape, dtype=np.float32) * np.float32((2.0 / fan_in) ** 0.5)]
        if type_ == "Convolution":
            blobs.append(rng.standard_normal(shape[0], dtype=np.float32) * np.float32(0.1))
        layer = net.layer.add(name=name, type=type_)
        for array in blobs:
            blob = messages["BlobProto"]()
            blob.shape.dim.extend(array.shape)
            blob.MergeFromString(packed_floats(array))
            layer.blobs.append(blob)
        weights[name] = [torch.from_numpy(b) for b in blobs]
        if name in ("conv1", "conv2"):
            net.layer.add(name=name.replace("conv", "norm"), type="LRN")
    net.layer.add(name="loss", type="SoftmaxWithLoss")
    path = tmp_path / "fcn-alexnet-pascal.caffemodel"
    path.write_bytes(net.SerializeToString())
    del net

    opens, real_open = [], builtins.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) == str(path):
            opens.append(args)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    loaded = load_model(path)
    monkeypatch.undo()
    assert len(opens) == 1  # the file is read once (memory-mapped by the decoder)
    assert (loaded.config.arch, loaded.config.backbone, loaded.config.num_classes) == ("fcn32s", "alexnet", 5)
    assert loaded.source == "caffe" and loaded.normalization.name == "paper_bgr"
    x = torch.randn(1, 3, 70, 93) * 50
    with torch.no_grad():
        expected = caffe_alexnet_forward(weights, x)
        ours = loaded.model(x)
    assert ours.shape == expected.shape == (1, 5, 70, 93)
    torch.testing.assert_close(ours, expected, atol=1e-3, rtol=1e-4)

"""Caffe caffemodel reader: files are written by the protobuf package from a minimal caffe.proto schema
declared here, an encoder independent of fcnseg's own wire-format decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("google.protobuf")
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402

from fcnseg.config import ModelConfig  # noqa: E402
from fcnseg.errors import CheckpointError  # noqa: E402
from fcnseg.weights.caffe import caffe_to_state_dict  # noqa: E402
from fcnseg.weights.caffe_protobuf import read_caffemodel  # noqa: E402

F = descriptor_pb2.FieldDescriptorProto
OPTIONAL, REPEATED = F.LABEL_OPTIONAL, F.LABEL_REPEATED

# V1LayerParameter.LayerType numbers of caffe.proto.
V1 = {"Convolution": 4, "Data": 5, "Dropout": 6, "InnerProduct": 14, "LRN": 15, "Pooling": 17, "ReLU": 18,
      "Softmax": 20, "SoftmaxWithLoss": 21, "Split": 22, "Eltwise": 25, "Deconvolution": 39}


def _schema(packed: bool) -> dict:
    """Message classes for the slice of caffe.proto the reader uses, plus fields it must skip.

    ``packed`` selects packed or unpacked encoding of the repeated numbers (caffe.proto packs them).
    """
    package = f"caffetest{'packed' if packed else 'unpacked'}"
    fdp = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package, syntax="proto2")

    def message(name, *fields):
        m = fdp.message_type.add(name=name)
        for fname, number, label, ftype, extra in fields:
            f = m.field.add(name=fname, number=number, label=label, type=ftype)
            if ftype == F.TYPE_MESSAGE:
                f.type_name = f".{package}.{extra}"
            elif extra == "packed" and packed:
                f.options.packed = True

    message("BlobShape", ("dim", 1, REPEATED, F.TYPE_INT64, "packed"))
    message("BlobProto",
            ("num", 1, OPTIONAL, F.TYPE_INT64, None), ("channels", 2, OPTIONAL, F.TYPE_INT64, None),
            ("height", 3, OPTIONAL, F.TYPE_INT64, None), ("width", 4, OPTIONAL, F.TYPE_INT64, None),
            ("data", 5, REPEATED, F.TYPE_FLOAT, "packed"), ("diff", 6, REPEATED, F.TYPE_FLOAT, "packed"),
            ("shape", 7, OPTIONAL, F.TYPE_MESSAGE, "BlobShape"),
            ("double_data", 8, REPEATED, F.TYPE_DOUBLE, "packed"),
            ("double_diff", 9, REPEATED, F.TYPE_DOUBLE, "packed"),
            # Not in caffe.proto: exercise skipping of 64-bit and string fields inside a blob.
            ("extra_fixed64", 20, OPTIONAL, F.TYPE_FIXED64, None), ("extra_note", 21, OPTIONAL, F.TYPE_STRING, None))
    message("ParamSpec", ("lr_mult", 3, OPTIONAL, F.TYPE_FLOAT, None))
    message("LayerParameter",
            ("name", 1, OPTIONAL, F.TYPE_STRING, None), ("type", 2, OPTIONAL, F.TYPE_STRING, None),
            ("bottom", 3, REPEATED, F.TYPE_STRING, None), ("top", 4, REPEATED, F.TYPE_STRING, None),
            ("loss_weight", 5, REPEATED, F.TYPE_FLOAT, None), ("param", 6, REPEATED, F.TYPE_MESSAGE, "ParamSpec"),
            ("blobs", 7, REPEATED, F.TYPE_MESSAGE, "BlobProto"), ("phase", 10, OPTIONAL, F.TYPE_INT32, None),
            ("extra_fixed32", 150, OPTIONAL, F.TYPE_FIXED32, None))
    message("V0LayerParameter",
            ("name", 1, OPTIONAL, F.TYPE_STRING, None), ("type", 2, OPTIONAL, F.TYPE_STRING, None),
            ("num_output", 3, OPTIONAL, F.TYPE_UINT64, None), ("blobs", 50, REPEATED, F.TYPE_MESSAGE, "BlobProto"))
    message("V1LayerParameter",
            ("layer", 1, OPTIONAL, F.TYPE_MESSAGE, "V0LayerParameter"),
            ("bottom", 2, REPEATED, F.TYPE_STRING, None), ("top", 3, REPEATED, F.TYPE_STRING, None),
            ("name", 4, OPTIONAL, F.TYPE_STRING, None), ("type", 5, OPTIONAL, F.TYPE_INT32, None),
            ("blobs", 6, REPEATED, F.TYPE_MESSAGE, "BlobProto"), ("blobs_lr", 7, REPEATED, F.TYPE_FLOAT, None))
    message("NetParameter",
            ("name", 1, OPTIONAL, F.TYPE_STRING, None),
            ("layers", 2, REPEATED, F.TYPE_MESSAGE, "V1LayerParameter"),
            ("input", 3, REPEATED, F.TYPE_STRING, None), ("input_dim", 4, REPEATED, F.TYPE_INT64, None),
            ("force_backward", 5, OPTIONAL, F.TYPE_BOOL, None),
            ("layer", 100, REPEATED, F.TYPE_MESSAGE, "LayerParameter"))

    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{m.name}"))
            for m in fdp.message_type}


PACKED, UNPACKED = _schema(packed=True), _schema(packed=False)
RNG = np.random.default_rng(0)


def _fill_blob(blob, array: np.ndarray, legacy: bool = False, double: bool = False) -> None:
    if legacy:  # pre-BlobShape files: num, channels, height, width, padded with leading 1s
        dims = (1,) * (4 - array.ndim) + array.shape
        blob.num, blob.channels, blob.height, blob.width = dims
    else:
        blob.shape.dim.extend(array.shape)
    (blob.double_data if double else blob.data).extend(array.reshape(-1).tolist())


def _add_layer(net, name: str, type_: str, blobs=(), legacy: bool = False):
    """A V2 ``layer`` record, or a V1 ``layers`` record with legacy shapes when ``legacy``."""
    if legacy:
        layer = net.layers.add(name=name, type=V1[type_])
    else:
        layer = net.layer.add(name=name, type=type_)
    for array in blobs:
        _fill_blob(layer.blobs.add(), array, legacy=legacy)
    return layer


def _write(tmp_path, net, filename: str = "net.caffemodel"):
    path = tmp_path / filename
    path.write_bytes(net.SerializeToString())
    return path


def _rand(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------------
def test_reads_v2_layers_with_blobshape_and_packed_floats(tmp_path):
    net = PACKED["NetParameter"](name="tiny")
    _add_layer(net, "data", "Input")
    weight, bias = _rand(2, 3, 3, 3), _rand(2)
    _add_layer(net, "conv1_1", "Convolution", [weight, bias])
    _add_layer(net, "relu1_1", "ReLU")
    got = read_caffemodel(_write(tmp_path, net))
    assert got.name == "tiny"
    assert [(layer.name, layer.type, len(layer.blobs)) for layer in got.layers] == [
        ("data", "Input", 0), ("conv1_1", "Convolution", 2), ("relu1_1", "ReLU", 0)]
    conv = got.layer("conv1_1")
    assert conv.blobs[0].dtype == np.float32 and conv.blobs[0].shape == (2, 3, 3, 3)
    np.testing.assert_array_equal(conv.blobs[0], weight)
    np.testing.assert_array_equal(conv.blobs[1], bias)
    assert conv.blobs[0].flags.writeable


def test_reads_v1_layers_with_legacy_shape_and_enum_types(tmp_path):
    net = PACKED["NetParameter"](name="old")
    for type_name in V1:
        _add_layer(net, f"l_{type_name}", type_name, legacy=True)
    weight = _rand(5, 7)
    _add_layer(net, "fc", "InnerProduct", [weight, _rand(5)], legacy=True)
    got = read_caffemodel(_write(tmp_path, net))
    assert [layer.type for layer in got.layers[: len(V1)]] == list(V1)
    fc = got.layer("fc")
    assert fc.type == "InnerProduct"
    assert fc.blobs[0].shape == (1, 1, 5, 7) and fc.blobs[1].shape == (1, 1, 1, 5)
    np.testing.assert_array_equal(fc.blobs[0].reshape(5, 7), weight)


def test_unpacked_float_data_decodes_like_packed(tmp_path):
    weight = _rand(4, 3, 2, 2)
    decoded = []
    for schema in (PACKED, UNPACKED):
        net = schema["NetParameter"](name="n")
        _add_layer(net, "conv", "Convolution", [weight, _rand(4)])
        decoded.append(read_caffemodel(_write(tmp_path, net, f"{id(schema)}.caffemodel")).layer("conv").blobs[0])
    blob = UNPACKED["BlobProto"]()
    blob.data.extend([1.5, 2.5])
    two_records = b"\x2d" + np.float32(1.5).tobytes() + b"\x2d" + np.float32(2.5).tobytes()
    assert two_records in blob.SerializeToString()  # the schema really writes one tag per float
    np.testing.assert_array_equal(decoded[0], weight)
    np.testing.assert_array_equal(decoded[1], weight)


@pytest.mark.parametrize("schema", [PACKED, UNPACKED], ids=["packed", "unpacked"])
def test_double_data_becomes_float32(tmp_path, schema):
    net = schema["NetParameter"]()
    layer = net.layer.add(name="conv", type="Convolution")
    values = np.linspace(-1, 1, 6)
    _fill_blob(layer.blobs.add(), values.reshape(1, 1, 2, 3), double=True)
    blob = read_caffemodel(_write(tmp_path, net)).layer("conv").blobs[0]
    assert blob.dtype == np.float32 and blob.shape == (1, 1, 2, 3)
    np.testing.assert_array_equal(blob.reshape(-1), values.astype(np.float32))


def test_unknown_fields_of_every_wire_type_are_skipped(tmp_path):
    net = UNPACKED["NetParameter"](name="n", input=["data"], input_dim=[1, 3, 4, 4], force_backward=True)
    layer = net.layer.add(name="conv", type="Convolution", bottom=["data"], top=["conv"], loss_weight=[0.5, 1.0],
                          phase=1, extra_fixed32=0xDEADBEEF)
    layer.param.add(lr_mult=2.0)
    blob = layer.blobs.add(extra_fixed64=2**63 + 5, extra_note="note")
    weight = _rand(2, 3, 1, 1)
    _fill_blob(blob, weight)
    blob.diff.extend([9.0] * weight.size)  # gradients: skipped, not mistaken for data
    old = net.layers.add(name="fc", type=V1["InnerProduct"], bottom=["conv"], blobs_lr=[1.0, 2.0])
    _fill_blob(old.blobs.add(), _rand(3, 2), legacy=True)
    got = read_caffemodel(_write(tmp_path, net))
    assert [layer.name for layer in got.layers] == ["fc", "conv"]  # field order: layers (2) before layer (100)
    np.testing.assert_array_equal(got.layer("conv").blobs[0], weight)


def test_v0_layer_nested_in_a_v1_record_is_read(tmp_path):
    net = PACKED["NetParameter"](name="v0")
    record = net.layers.add()
    record.layer.name, record.layer.type, record.layer.num_output = "conv1", "conv", 2
    weight = _rand(2, 3, 3, 3)
    _fill_blob(record.layer.blobs.add(), weight, legacy=True)
    layer = read_caffemodel(_write(tmp_path, net)).layers[0]
    assert (layer.name, layer.type) == ("conv1", "Convolution")
    np.testing.assert_array_equal(layer.blobs[0], weight)


# ---------------------------------------------------------------------------------------------------------
# Errors a user can cause
# ---------------------------------------------------------------------------------------------------------
def test_truncated_file_is_an_error_naming_the_file(tmp_path):
    net = PACKED["NetParameter"](name="n")
    _add_layer(net, "conv", "Convolution", [_rand(8, 8, 3, 3), _rand(8)])
    data = net.SerializeToString()
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.caffemodel.*truncated"):
        read_caffemodel(path)


def test_prototxt_given_instead_of_caffemodel_is_named_as_such(tmp_path):
    path = tmp_path / "deploy.prototxt"
    path.write_text('name: "FCN"\nlayer {\n  name: "data"\n  type: "Input"\n}\n')
    with pytest.raises(CheckpointError, match=r"deploy\.prototxt.*text.*prototxt"):
        read_caffemodel(path)


def test_blob_data_that_does_not_fill_its_shape_is_an_error(tmp_path):
    net = PACKED["NetParameter"]()
    blob = net.layer.add(name="conv", type="Convolution").blobs.add()
    blob.shape.dim.extend([2, 3])
    blob.data.extend([1.0] * 5)
    with pytest.raises(CheckpointError, match=r"net\.caffemodel.*'conv' blob 0 holds 5 values.*\(2, 3\) needs 6"):
        read_caffemodel(_write(tmp_path, net))


def test_file_without_layers_is_an_error(tmp_path):
    path = _write(tmp_path, PACKED["NetParameter"](name="\x01only a name"))
    with pytest.raises(CheckpointError, match="no layers"):
        read_caffemodel(path)


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"\x0b\x08\x01\x0c", "group"),  # field 1 as a group: not protobuf that caffe.proto can produce
    (b"\x0a\xff\xff\xff", "truncated"),  # a length varint running off the end of the file
    (b"\x89HDF\r\n\x1a\n" + bytes(8), "HDF5"),
])
def test_malformed_files_raise_checkpoint_error(tmp_path, content, message):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"bad\.caffemodel.*{message}"):
        read_caffemodel(path)


def test_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="absent.caffemodel"):
        read_caffemodel(tmp_path / "absent.caffemodel")


# ---------------------------------------------------------------------------------------------------------
# Mapping the reference nets to fcnseg keys: tiny channel counts, the reference layer names and kernels
# ---------------------------------------------------------------------------------------------------------
VGG_CHANNELS = {"conv1_1": 2, "conv1_2": 2, "conv2_1": 3, "conv2_2": 3, "conv3_1": 4, "conv3_2": 4,
                "conv3_3": 4, "conv4_1": 4, "conv4_2": 4, "conv4_3": 4, "conv5_1": 5, "conv5_2": 5, "conv5_3": 5}
ALEX_CONVS = {"conv1": (4, 3, 11, 1), "conv2": (6, 4, 5, 2), "conv3": (6, 6, 3, 1), "conv4": (6, 6, 3, 2),
              "conv5": (4, 6, 3, 2)}  # out, in, kernel, groups (voc-fcn-alexnet/net.py)
CLASSES, FC = 3, 6
HEAD_LAYERS = {  # the head of each voc-fcn*/net.py: name, type, kernel
    "fcn32s": [("score_fr", 1), ("upscore", 64)],
    "fcn16s": [("score_fr", 1), ("upscore2", 4), ("score_pool4", 1), ("upscore16", 32)],
    "fcn8s": [("score_fr", 1), ("upscore2", 4), ("score_pool4", 1), ("upscore_pool4", 4), ("score_pool3", 1),
              ("upscore8", 16)],
}


def _trunk(net, backbone: str, legacy: bool = False, fc_as_inner_product: bool = False):
    """Add the trunk layers; returns {layer name: blobs} of the parameterised ones."""
    blobs = {}
    _add_layer(net, "data", "Data", legacy=legacy)
    if backbone == "vgg16":
        in_channels = 3
        for name, out in VGG_CHANNELS.items():
            blobs[name] = [_rand(out, in_channels, 3, 3), _rand(out)]
            _add_layer(net, name, "Convolution", blobs[name], legacy=legacy)
            _add_layer(net, name.replace("conv", "relu"), "ReLU", legacy=legacy)
            in_channels = out
        fc6_kernel = 7
    else:
        for name, (out, in_channels, k, groups) in ALEX_CONVS.items():
            blobs[name] = [_rand(out, in_channels // groups, k, k), _rand(out)]
            _add_layer(net, name, "Convolution", blobs[name], legacy=legacy)
            if name in ("conv1", "conv2"):
                _add_layer(net, name.replace("conv", "norm"), "LRN", legacy=legacy)
        in_channels, fc6_kernel = ALEX_CONVS["conv5"][0], 6
    _add_layer(net, "pool5", "Pooling", legacy=legacy)
    for name, shape in (("fc6", (FC, in_channels, fc6_kernel, fc6_kernel)), ("fc7", (FC, FC, 1, 1))):
        weight = _rand(*shape)
        if fc_as_inner_product:
            blobs[name] = [weight.reshape(FC, -1), _rand(FC)]  # InnerProduct [out, C*H*W]
            _add_layer(net, name, "InnerProduct", blobs[name], legacy=legacy)
        else:
            blobs[name] = [weight, _rand(FC)]
            _add_layer(net, name, "Convolution", blobs[name], legacy=legacy)
        _add_layer(net, name.replace("fc", "drop"), "Dropout", legacy=legacy)
    return blobs


def _fcn_net(arch: str, backbone: str = "vgg16", scales=(0.01, 0.0001)):
    net = PACKED["NetParameter"](name=f"voc-{arch}")
    blobs = _trunk(net, backbone)
    kernels = dict(HEAD_LAYERS[arch.replace("-atonce", "")])
    if backbone == "alexnet":
        kernels["upscore"] = 63  # voc-fcn-alexnet/net.py: kernel_size=63, stride=32
    for name, k in kernels.items():
        if arch == "fcn8s-atonce" and name in ("score_pool4", "score_pool3"):
            scale_name, channels = name.replace("score", "scale"), 4
            value = scales[0] if name == "score_pool4" else scales[1]
            _add_layer(net, scale_name, "Scale", [np.full(channels, value, np.float32)])
        if name.startswith("score"):
            blobs[name] = [_rand(CLASSES, FC if name == "score_fr" else 4, 1, 1), _rand(CLASSES)]
            _add_layer(net, name, "Convolution", blobs[name])
        else:
            blobs[name] = [_rand(CLASSES, CLASSES, k, k)]
            _add_layer(net, name, "Deconvolution", blobs[name])
            _add_layer(net, f"{name}_crop", "Crop")
    _add_layer(net, "loss", "SoftmaxWithLoss")
    return net, blobs


def _key(name: str) -> str:
    return f"backbone.{name}" if name.startswith(("conv", "fc")) else name


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"])
def test_reference_fcn_names_give_arch_and_contract_keys(tmp_path, arch):
    net, blobs = _fcn_net(arch)
    path = _write(tmp_path, net)
    out = caffe_to_state_dict(read_caffemodel(path), path)
    assert (out.arch, out.backbone, out.num_classes) == (arch, "vgg16", CLASSES)
    assert out.normalization.name == "paper_bgr"
    assert out.config == ModelConfig(arch=arch, backbone="vgg16", num_classes=CLASSES)
    expected = {}
    for name, arrays in blobs.items():
        expected[f"{_key(name)}.weight"] = arrays[0]
        if len(arrays) == 2:
            expected[f"{_key(name)}.bias"] = arrays[1]
    assert set(out.state_dict) == set(expected)  # no scale_pool*: the at-once constants are fixed
    for key, array in expected.items():
        tensor = out.state_dict[key]
        assert tensor.dtype == torch.float32
        np.testing.assert_array_equal(tensor.numpy(), array, err_msg=key)


def test_fcn_alexnet_keeps_grouped_shapes_and_the_63_wide_upscore(tmp_path):
    net, blobs = _fcn_net("fcn32s", backbone="alexnet")
    path = _write(tmp_path, net)
    out = caffe_to_state_dict(read_caffemodel(path), path)
    assert (out.arch, out.backbone) == ("fcn32s", "alexnet")
    sd = out.state_dict
    assert sd["backbone.conv2.weight"].shape == (6, 2, 5, 5)  # groups=2: [out, in/2, k, k], PyTorch's layout
    assert sd["backbone.fc6.weight"].shape == (FC, 4, 6, 6)
    assert sd["upscore.weight"].shape == (CLASSES, CLASSES, 63, 63)
    assert not any(key.startswith("backbone.norm") for key in sd)


def test_deconvolution_weight_is_passed_through_in_conv_transpose_layout(tmp_path):
    # Caffe stores Deconvolution weights [C_in, C_out/group, k, k], as torch's ConvTranspose2d.
    net, blobs = _fcn_net("fcn32s")
    path = _write(tmp_path, net)
    weight = caffe_to_state_dict(read_caffemodel(path), path).state_dict["upscore.weight"]
    up = torch.nn.ConvTranspose2d(CLASSES, CLASSES, 64, stride=32, bias=False)
    assert up.weight.shape == weight.shape
    np.testing.assert_array_equal(weight.numpy(), blobs["upscore"][0])


@pytest.mark.parametrize("legacy", [True, False], ids=["v1-legacy-4d", "v2-2d-shape"])
@pytest.mark.parametrize("backbone", ["vgg16", "alexnet"])
def test_imagenet_classifier_fc_layers_are_convolutionalized(tmp_path, legacy, backbone):
    net = PACKED["NetParameter"](name="VGG_ILSVRC_16_layers")
    blobs = _trunk(net, backbone, legacy=legacy, fc_as_inner_product=True)
    fc8 = [_rand(7, FC), _rand(7)]
    _add_layer(net, "fc8", "InnerProduct", fc8, legacy=legacy)
    _add_layer(net, "prob", "Softmax", legacy=legacy)
    path = _write(tmp_path, net)
    caffe = read_caffemodel(path)
    if legacy:
        assert caffe.layer("fc6").blobs[0].ndim == 4  # stored 1 x 1 x out x C*H*W
    out = caffe_to_state_dict(caffe, path)
    assert (out.arch, out.config, out.backbone, out.num_classes) == (None, None, backbone, 7)
    sd = out.state_dict
    fc6, flat = sd["backbone.fc6.weight"], blobs["fc6"][0]
    out_c, channels, k, _ = fc6.shape
    assert (channels, k) == ((5, 7) if backbone == "vgg16" else (4, 6))
    o, c, h, w = out_c - 1, channels - 2, k - 3, k - 1
    assert fc6[o, c, h, w].item() == flat[o, c * k * k + h * k + w]  # Caffe flattens C, H, W row-major
    assert sd["backbone.fc6.bias"].shape == (FC,)
    assert sd["backbone.fc7.weight"].shape == (FC, FC, 1, 1)
    assert sd["classifier.fc8.weight"].shape == (7, FC, 1, 1)
    np.testing.assert_array_equal(sd["classifier.fc8.bias"].numpy(), fc8[1])
    assert not any(key.startswith(("score", "upscore")) for key in sd)


def test_at_once_scale_other_than_the_reference_constant_is_an_error(tmp_path):
    net, _ = _fcn_net("fcn8s-atonce", scales=(0.02, 0.0001))
    path = _write(tmp_path, net)
    with pytest.raises(CheckpointError, match=r"scale_pool4' scales by 0\.02.*0\.01"):
        caffe_to_state_dict(read_caffemodel(path), path)


def test_unknown_parameterised_layer_is_an_error_not_silently_dropped(tmp_path):
    net, _ = _fcn_net("fcn32s")
    _add_layer(net, "score_extra", "Convolution", [_rand(3, 3, 1, 1), _rand(3)])
    path = _write(tmp_path, net)
    with pytest.raises(CheckpointError, match="score_extra"):
        caffe_to_state_dict(read_caffemodel(path), path)


def test_missing_trunk_layer_is_an_error_listing_it(tmp_path):
    net, _ = _fcn_net("fcn16s")
    del net.layer[[layer.name for layer in net.layer].index("conv3_2")]
    path = _write(tmp_path, net)
    with pytest.raises(CheckpointError, match="conv3_2"):
        caffe_to_state_dict(read_caffemodel(path), path)


def test_net_without_fcn_or_classifier_layers_is_an_error(tmp_path):
    net = PACKED["NetParameter"](name="resnet")
    _add_layer(net, "res2a", "Convolution", [_rand(2, 3, 1, 1)])
    path = _write(tmp_path, net)
    with pytest.raises(CheckpointError, match="conv1_1"):
        caffe_to_state_dict(read_caffemodel(path), path)


def test_alexnet_with_skip_layers_is_an_error_naming_the_backbone(tmp_path):
    net = PACKED["NetParameter"](name="voc-fcn16s-alexnet")
    _trunk(net, "alexnet")
    _add_layer(net, "score_fr", "Convolution", [_rand(CLASSES, FC, 1, 1), _rand(CLASSES)])
    _add_layer(net, "score_pool4", "Convolution", [_rand(CLASSES, 4, 1, 1), _rand(CLASSES)])
    for name, k in (("upscore2", 4), ("upscore16", 32)):
        _add_layer(net, name, "Deconvolution", [_rand(CLASSES, CLASSES, k, k)])
    path = _write(tmp_path, net)
    with pytest.raises(CheckpointError, match=r"net\.caffemodel: an alexnet fcn16s.*AlexNet.*fcn32s"):
        caffe_to_state_dict(read_caffemodel(path), path)


def test_the_wire_decoder_knows_nothing_of_fcns():
    import subprocess
    import sys

    code = ("import sys, fcnseg.weights.caffe_protobuf; "
            "print(sorted(m for m in sys.modules if m.startswith(('fcnseg.models', 'fcnseg.data', 'torch'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

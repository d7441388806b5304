"""int8 quantization: a briefly trained small FCN-8s quantized with ONNX Runtime agrees with fp32; bad calibration
files are skipped and named; fcnseg ONNX metadata is checked key by key; ORT fp32 matches torch on whole images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fcnseg.cli import main
from fcnseg.data.normalization import IMAGENET_RGB
from fcnseg.errors import CheckpointError, ConfigError, DataError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from fcnseg.inference.export import NormalizedFCN  # noqa: E402
from fcnseg.weights.checkpoint import load_model  # noqa: E402
from fcnseg.weights.onnx_format import OnnxNet, parse_metadata, read_info  # noqa: E402
from fcnseg.inference.quantization import (  # noqa: E402
    calibration_reader,
    float_nodes,
    group_diagonal_deconvolutions,
    parse_keep_fp32,
    read_calibration_images,
)
from onnx_support import CLASSES, scene, small_models  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The trained net, its checkpoint, its fp32 export, a calibration folder and the default int8 file."""
    return small_models(tmp_path_factory)


def validation(n: int = 6):
    return [scene(3, i) for i in range(n)]


def pixels(image: np.ndarray) -> np.ndarray:
    return image.transpose(2, 0, 1)[None].astype(np.float32)  # float32 [1, 3, H, W], RGB 0..255


def iou_per_class(pred: np.ndarray, mask: np.ndarray, num_classes: int) -> np.ndarray:
    """IU of each class by set counting (ignore 255 skipped); NaN where a class is absent from both."""
    keep = mask != 255
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        inter = np.sum((pred == c) & (mask == c) & keep)
        union = np.sum(((pred == c) | (mask == c)) & keep)
        if union:
            out[c] = inter / union
    return out


def test_int8_small_net_agrees_with_fp32_and_keeps_each_class_iu(models):
    fp32, int8 = OnnxNet(models["fp32"]), OnnxNet(models["int8"])
    preds32, preds8, masks = [], [], []
    for item in validation():
        preds32.append(fp32(pixels(item.image))[0].argmax(0).numpy())
        preds8.append(int8(pixels(item.image))[0].argmax(0).numpy())
        masks.append(item.mask)
    p32, p8, gt = np.concatenate([p.ravel() for p in preds32]), np.concatenate([p.ravel() for p in preds8]), np.concatenate([m.ravel() for m in masks])
    assert len(np.unique(p32)) >= 2, "the trained net should predict more than background"
    assert (p32 == p8).mean() >= 0.99
    iu32, iu8 = iou_per_class(p32, gt, len(CLASSES)), iou_per_class(p8, gt, len(CLASSES))
    seen = ~np.isnan(iu32) & ~np.isnan(iu8)
    assert seen.sum() >= 2
    assert np.abs(iu32[seen] - iu8[seen]).max() <= 0.05
    assert abs(np.nanmean(iu32) - np.nanmean(iu8)) <= 0.02


def test_quantized_file_carries_the_checkpoint_metadata_and_int8_precision(models):
    info = read_info(models["int8"])
    assert info.precision == "int8" and info.arch == "fcn8s" and info.backbone == "small"
    assert info.class_names == CLASSES and info.num_classes == 6
    assert info.normalization == IMAGENET_RGB


def test_kept_layers_stay_float_and_the_rest_is_int8(models):
    proto = onnx.load(str(models["int8"]))
    dequantized = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    weights = {n.input[1].split(".")[-2] if "." in n.input[1] else n.input[1]: n.input[1] in dequantized
               for n in proto.graph.node if n.op_type == "Conv"}
    # Float layers read their weight initialiser directly; int8 ones through a DequantizeLinear.
    assert weights["conv1_1"] is False and weights["score_fr"] is False and weights["score_pool4"] is False
    assert sum(1 for name, q in weights.items() if q) >= 6  # the trunk's other convolutions
    # The default keeps the head in float: no QuantizeLinear on the logits or anywhere after score_fr.
    quantized_tensors = {n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    head_outputs = {o for n in proto.graph.node if n.op_type == "ConvTranspose" for o in n.output}
    assert not (quantized_tensors & (head_outputs | {"logits"}))


def _upsampling_graph(weight: np.ndarray):
    """An ONNX graph of one ConvTranspose (stride 2) with ``weight`` [C, C, 4, 4] as its initialiser."""
    from onnx import TensorProto, helper, numpy_helper

    c = weight.shape[0]
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="upscore", strides=[2, 2])
    graph = helper.make_graph([node], "up", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 5, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weight.astype(np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(proto, x):
    import onnxruntime as ort

    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_diagonal_upsampling_becomes_grouped_with_the_same_output():
    from fcnseg.models.upsample import bilinear_weight

    weight = bilinear_weight(5, 4).numpy() * np.arange(1, 6, dtype=np.float32)[:, None, None, None]
    proto = _upsampling_graph(weight)
    x = np.random.default_rng(0).standard_normal((1, 5, 5, 6)).astype(np.float32)
    before = _run(proto, x)
    # a shape recorded for the weight by shape inference (as quantization's pre-processing leaves it) goes too
    proto.graph.value_info.append(onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [5, 5, 4, 4]))
    assert group_diagonal_deconvolutions(proto) == ["upscore"]
    onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    group = next(a.i for a in proto.graph.node[0].attribute if a.name == "group")
    assert group == 5 and list(proto.graph.initializer[0].dims) == [5, 1, 4, 4]
    np.testing.assert_allclose(_run(proto, x), before, rtol=1e-5, atol=1e-5)


def test_a_learned_upsampling_with_weights_off_the_diagonal_is_left_alone():
    from fcnseg.models.upsample import bilinear_weight

    weight = bilinear_weight(3, 4).numpy()
    weight[0, 2, 1, 1] = 0.5  # class 0 feeds class 2
    proto = _upsampling_graph(weight)
    assert group_diagonal_deconvolutions(proto) == []
    assert list(proto.graph.initializer[0].dims) == [3, 3, 4, 4]


def test_float_nodes_finds_the_first_convolution_and_the_score_layers(models):
    proto = onnx.load(str(models["fp32"]))
    by_name = {n.name: n for n in proto.graph.node}
    found = float_nodes(proto, ("first", "score", "head"))
    assert [by_name[n].input[1] for n in found["first"]] == ["model.backbone.conv1_1.weight"]
    assert sorted(by_name[n].input[1].split(".")[-2] for n in found["score"]) == ["score_fr", "score_pool3", "score_pool4"]
    head = [by_name[n] for n in found["head"]]
    assert sum(n.op_type == "ConvTranspose" for n in head) == 3 and len(head) == 6


def test_keep_fp32_groups_parse_and_unknown_ones_are_named():
    assert parse_keep_fp32("first,score") == ("first", "score")
    assert parse_keep_fp32("none") == () and parse_keep_fp32("") == ()
    with pytest.raises(ConfigError, match="'fc7'"):
        parse_keep_fp32("first,fc7")


def test_calibration_reader_feeds_one_float_image_at_a_time():
    images = [np.full((5, 7, 3), 200, np.uint8), np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)]
    reader = calibration_reader(images)
    assert len(reader) == 2
    first = reader.get_next()["image"]
    assert first.dtype == np.float32 and first.shape == (1, 3, 5, 7) and float(first.max()) == 200.0
    second = reader.get_next()["image"]
    np.testing.assert_array_equal(second[0, 2], images[1][:, :, 2].astype(np.float32))  # channel 2 = blue
    assert reader.get_next() is None
    reader.set_range(1, 2)
    assert reader.get_next()["image"].shape == (1, 3, 4, 6) and reader.get_next() is None


def test_quantize_skips_and_names_unreadable_calibration_files(models, tmp_path, monkeypatch, capsys):
    calib = tmp_path / "calib"
    shutil.copytree(models["calib"], calib)
    good = (calib / "c0.png").read_bytes()
    (calib / "a_truncated.png").write_bytes(good[: len(good) // 3])
    (calib / "b_empty.jpg").write_bytes(b"")
    (calib / "sub").mkdir()
    (calib / "sub" / "notes.png").write_text("not an image")

    # The checkpoint path exports first; reuse the module's export (export_onnx has its own tests).
    def copy_export(model, path, **kwargs):
        shutil.copy(models["fp32"], path)
        return path

    monkeypatch.setattr("fcnseg.inference.export.export_onnx", copy_export)
    out = tmp_path / "int8.onnx"
    code = main(["quantize", str(models["checkpoint"]), str(out), "--calib", str(calib), "--num-calib", "20",
                 "--check", "2"])
    text = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "skipped 3 unreadable files" in text
    for name in ("a_truncated.png", "b_empty.jpg", "notes.png"):
        assert name in text
    assert "empty file (0 bytes)" in text
    assert "calibration on 8 images" in text and "argmax agreement with fp32 on the 2 calibration images" in text
    info = read_info(out)
    assert info.precision == "int8" and json.loads(info.metadata["fcnseg.quantization"])["calibration_images"] == 8


def test_a_calibration_folder_without_readable_images_is_one_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match="none of its 1 image files could be read"):
        read_calibration_images(tmp_path)


def rewrite_metadata(source, target, change):
    proto = onnx.load(str(source))
    meta = {e.key: e.value for e in proto.metadata_props}
    change(meta)
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(target))
    return target


@pytest.mark.parametrize(
    "change, key, words",
    [
        (lambda m: m.pop("fcnseg.class_names"), "fcnseg.class_names", "missing from this quantized ONNX file"),
        (lambda m: m.update({"fcnseg.normalization": "{not json"}), "fcnseg.normalization", "broken"),
        (lambda m: m.update({"fcnseg.class_names": json.dumps(["a", "b"])}), "fcnseg.class_names", "6 names"),
        (lambda m: m.update({"fcnseg.precision": "fp32"}), "fcnseg.precision", "QuantizeLinear"),
        (lambda m: m.update({"fcnseg.palette": "[[0, 0, 300]]"}), "fcnseg.palette", "0..255"),
    ],
)
def test_broken_metadata_of_a_quantized_file_names_the_file_and_the_key(models, tmp_path, change, key, words):
    path = rewrite_metadata(models["int8"], tmp_path / "broken.onnx", change)
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    message = str(caught.value)
    assert str(path) in message and f"'{key}'" in message and words in message


def test_missing_precision_is_read_from_the_graph():
    meta = {"fcnseg.arch": "fcn8s", "fcnseg.num_classes": "2", "fcnseg.class_names": '["a", "b"]',
            "fcnseg.normalization": json.dumps(IMAGENET_RGB.to_dict())}
    assert parse_metadata(meta, "m.onnx", quantized_graph=True).precision == "int8"
    assert parse_metadata(meta, "m.onnx", quantized_graph=False).precision == "fp32"


def test_a_file_that_is_not_onnx_is_named(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="model.onnx: not a readable ONNX file"):
        load_model(path)


def test_onnx_runtime_fp32_logits_match_torch_on_whole_images(models):
    net = OnnxNet(models["fp32"])
    wrapped = NormalizedFCN(models["model"], IMAGENET_RGB).eval()
    for size in ((97, 130), (64, 64), (131, 77)):  # odd and even, unlike the trace input
        image = scene(4, size[0], size=size).image
        with torch.inference_mode():
            expected = wrapped(torch.from_numpy(pixels(image)))
        found = net(pixels(image))
        assert found.shape == expected.shape == (1, len(CLASSES), *size)
        scale = float(expected.abs().max())
        assert float((found - expected).abs().max()) <= 1e-4 * max(scale, 1.0)
        assert (found.argmax(1) == expected.argmax(1)).float().mean() >= 0.9999


@pytest.mark.parametrize("checked, calibrated, skipped, words", [
    (2, 8, 3, ["calibration on 8 images", "agreement with fp32 on the 2 calibration images", "images it was calibrated on",
               "skipped 3 unreadable files"]),
    (1, 1, 1, ["calibration on 1 image;", "agreement with fp32 on the calibration image:", "skipped 1 unreadable file:"]),
])
def test_the_summary_says_the_agreement_is_on_calibration_images_with_right_plurals(checked, calibrated, skipped, words):
    # quantize reported agreement on its own calibration images without saying so
    from fcnseg.inference.quantization import QuantizeReport

    report = QuantizeReport(path=Path("m.onnx"), method="minmax", keep_fp32=(), float_nodes={},
                                calibration=[f"c{i}.png" for i in range(calibrated)],
                                skipped=[(f"bad{i}.png", "empty file (0 bytes)") for i in range(skipped)],
                                reduce_range=True, agreement=0.99, checked=checked)
    text = report.summary()
    for word in words:
        assert word in text, text
    assert "(s)" not in text
    assert report.calibration_line() == (f"minmax calibration on {calibrated} image{'s' if calibrated > 1 else ''} "
                                         f"({skipped} unreadable file{'s' if skipped > 1 else ''} skipped)")

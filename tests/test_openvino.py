"""OpenVINO runs fcnseg's .onnx files (fp32 and int8) like ONNX Runtime: the same labels whole and tiled, through the
same predictor, memory plan and commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fcnseg.weights.openvino_net import openvino_available

if not openvino_available():
    pytest.skip("OpenVINO is not installed (pip install 'fcnseg[openvino]'; the dev extra has it)", allow_module_level=True)
pytest.importorskip("onnxruntime")

from fcnseg.cli import main  # noqa: E402
from fcnseg.data.palette import read_mask_png  # noqa: E402
from fcnseg.inference.predictor import Predictor  # noqa: E402
from fcnseg.inference.runtime import OrtNet  # noqa: E402
from fcnseg.weights.checkpoint import load_model  # noqa: E402
from onnx_support import scene, small_models  # noqa: E402
from test_runtime import LARGE, write_folder  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return small_models(tmp_path_factory)


@pytest.fixture(scope="module")
def large_image():
    rows = [np.concatenate([scene(5, 8 * r + c).image for c in range(8)], axis=1) for r in range(9)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[: LARGE[0], : LARGE[1]])


def openvino_net(path) -> OrtNet:
    handle = load_model(path)
    handle.engine = "openvino"
    return OrtNet(handle)


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_openvino_labels_match_onnx_runtime_on_whole_images(models, which):
    ov, ort = Predictor(net=openvino_net(models[which])), Predictor(net=OrtNet.from_file(models[which]))
    assert ov.runtime.runtime == "openvino" and "OpenVINO" in ov.describe()
    for i, size in enumerate([(72, 88), (131, 97), (160, 224)]):
        image = scene(6, i, size=size).image
        a, b = ov.predict(image, probabilities=True), ort.predict(image, probabilities=True)
        assert a.labels.shape == size and (a.labels == b.labels).mean() >= 0.995
        tolerance = 2e-3 if which == "fp32" else 5e-2  # OpenVINO's int8 kernels round apart from ONNX Runtime's
        assert np.abs(a.probabilities.astype(np.float32) - b.probabilities.astype(np.float32)).max() < tolerance


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_openvino_tiled_equals_whole_and_onnx_runtime(models, large_image, which):
    whole = Predictor(net=openvino_net(models[which]), max_memory=None).predict(large_image)
    tiled_net = openvino_net(models[which])
    tiled = Predictor(net=tiled_net, tile=224).predict(large_image)
    ort = Predictor(net=OrtNet.from_file(models[which]), tile=224).predict(large_image)
    assert whole.plan.whole and tiled.plan.num_tiles == 9
    assert len(tiled_net.onnx._compiled) <= 4  # one compiled model per tile shape, the last few kept
    assert (tiled.labels == whole.labels).mean() >= 0.999
    assert (tiled.labels == ort.labels).mean() >= 0.995


def test_openvino_memory_plan_tiles_under_a_budget(models, large_image):
    net = openvino_net(models["fp32"])
    estimate = net.estimate(*LARGE)
    ort_estimate = OrtNet.from_file(models["fp32"]).estimate(*LARGE)
    assert estimate.activations == ort_estimate.activations  # the same graph's tensors; only the factors differ
    budget = estimate.total - 1  # just short of the whole image: tiles (their 256-pixel margins make small ones dear)
    predictor = Predictor(net=net, max_memory=budget)
    plan = predictor.plan(*LARGE)
    assert not plan.whole and plan.num_tiles > 1 and predictor.estimate(*plan.input_size()).total <= budget


def test_predict_and_eval_run_onnx_files_and_checkpoints_with_openvino(models, tmp_path, capsys):
    images = write_folder(tmp_path / "in", count=2)
    for kind in ("int8", "checkpoint"):
        out = tmp_path / f"out-{kind}"
        assert main(["predict", str(models[kind]), str(tmp_path / "in"), "-o", str(out), "--runtime", "openvino",
                     "--no-progress", "--workers", "0"]) == 0
        for name, image in images.items():
            assert read_mask_png(out / f"{name}_labels.png").shape == image.shape[:2]
    report = tmp_path / "eval.json"
    assert main(["eval", str(models["int8"]), "--kind", "synthetic", "--style", "blobs", "--limit", "2",
                 "--runtime", "openvino", "--out", str(report), "--no-progress"]) == 0
    assert "(openvino, int8)" in capsys.readouterr().out
    assert json.loads(report.read_text())["runtime"] == "openvino"


def test_quantize_with_nncf_writes_an_int8_onnx_that_both_runtimes_run(models, tmp_path, capsys):
    pytest.importorskip("nncf", reason="NNCF is not installed (pip install 'fcnseg[openvino]')")
    out = tmp_path / "nncf-int8.onnx"
    assert main(["quantize", str(models["fp32"]), str(out), "--calib", str(models["calib"]), "--num-calib", "4",
                 "--check", "2", "--runtime", "openvino"]) == 0
    assert "argmax agreement with fp32" in capsys.readouterr().out
    handle = load_model(out)
    assert handle.precision == "int8" and handle.class_names == load_model(models["fp32"]).class_names
    image = scene(6, 1, size=(131, 97)).image
    ov = Predictor(net=openvino_net(out)).predict(image).labels
    fp32 = Predictor(net=OrtNet.from_file(models["fp32"])).predict(image).labels
    assert (ov == fp32).mean() >= 0.95  # int8 on a net trained a few dozen steps; the benchmark measures agreement

"""Runtimes: ONNX Runtime runs tiles like PyTorch (whole and tiled images agree), .onnx and int8 files go through
`fcnseg predict` and `fcnseg eval` end to end, --runtime auto picks by the model file, and the ORT memory terms plan tiles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.cli import main
from fcnseg.data.normalization import IMAGENET_RGB
from fcnseg.data.palette import read_mask_png
from fcnseg.errors import ConfigError
from fcnseg.inference.predictor import Predictor

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from fcnseg.inference.runtime import OrtNet, select_runtime  # noqa: E402
from onnx_support import CLASSES, STYLE, scene, small_models  # noqa: E402

CPU = torch.device("cpu")
LARGE = (600, 660)  # larger than a tile plus both margins (256 px each for the small trunk), so tiles see parts


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return small_models(tmp_path_factory)


@pytest.fixture(scope="module")
def large_image():
    """A mosaic of the small scenes the net was trained on (at their scale it predicts more than background)."""
    rows = [np.concatenate([scene(5, 8 * r + c).image for c in range(8)], axis=1) for r in range(9)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[: LARGE[0], : LARGE[1]])


def torch_predictor(models, **kwargs) -> Predictor:
    return Predictor(models["model"], IMAGENET_RGB, CLASSES, precision="fp32", layout="contiguous", **kwargs)


def test_onnx_runtime_labels_match_pytorch_on_whole_images(models):
    ort = Predictor(net=OrtNet.from_file(models["fp32"]), class_names=CLASSES)
    plain = torch_predictor(models)
    for i, size in enumerate([(72, 88), (131, 97), (160, 224)]):
        image = scene(6, i, size=size).image
        a, b = ort.predict(image).labels, plain.predict(image).labels
        assert a.shape == size and (a == b).mean() >= 0.999


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_onnx_runtime_tiled_equals_whole_and_pytorch(models, large_image, which):
    whole = Predictor(net=OrtNet.from_file(models[which]), max_memory=None).predict(large_image, probabilities=True)
    tiled = Predictor(net=OrtNet.from_file(models[which]), tile=224).predict(large_image, probabilities=True)
    assert whole.plan.whole and tiled.plan.num_tiles == 9
    assert (tiled.labels == whole.labels).mean() >= 0.999
    assert np.abs(tiled.probabilities.astype(np.float32) - whole.probabilities.astype(np.float32)).max() < 2e-2
    reference = torch_predictor(models, max_memory=None).predict(large_image).labels
    assert (tiled.labels == reference).mean() >= (0.999 if which == "fp32" else 0.99)
    assert len(np.unique(reference)) >= 2


def test_onnx_memory_model_grows_with_the_image_and_plans_tiles(models):
    net = OrtNet.from_file(models["fp32"])
    small, large = net.estimate(128, 128), net.estimate(512, 512)
    # (512 + 200)^2 / (128 + 200)^2 = 4.7: the pad-100 border is part of every forward
    assert large.activations > 4 * small.activations and large.weights == small.weights > 0
    int8 = OrtNet.from_file(models["int8"])
    assert int8.estimate(128, 128).weights < small.weights  # int8 initialisers take a quarter of the bytes
    need = Predictor(net=net).estimate(608, 672)
    # a 544-px window (32 + 2 x 256 margin) needs ~70% of the whole image's activations
    budget = need.weights + int((need.total - need.weights) * 0.85)
    plan = Predictor(net=net, max_memory=budget).plan(*LARGE)
    assert not plan.whole and plan.tile >= 32  # (tiled ONNX Runtime predictions are checked against whole above)
    assert Predictor(net=net, max_memory=need.total + 4 * LARGE[0] * LARGE[1]).plan(*LARGE).whole


def test_onnx_arena_is_off_under_a_memory_budget_and_on_without_one(models, large_image):
    # The arena keeps freed buffers per shape: under a budget, tiles of several shapes would outgrow the plan.
    budgeted = Predictor.from_checkpoint(models["int8"], max_memory=2 * 1024**3)
    default = Predictor.from_checkpoint(models["int8"])  # the default budget holds too
    unbounded = Predictor.from_checkpoint(models["int8"], max_memory=None)
    assert not budgeted.runtime.onnx.memory_arena and not default.runtime.onnx.memory_arena
    assert unbounded.runtime.onnx.memory_arena
    # the same labels either way
    assert np.array_equal(budgeted.predict(large_image).labels, unbounded.predict(large_image).labels)


def test_auto_runtime_follows_the_model_file(tmp_path):
    assert select_runtime("auto", "m.onnx", CPU, "auto")[0] == "onnxruntime"
    assert select_runtime("auto", "m.pt", CPU, "auto")[0] == "auto"  # measured (tests/test_runtime_choice.py)
    assert select_runtime("torch", "m.pt", CPU, "auto")[0] == "torch"
    assert select_runtime("onnxruntime", "m.pt", CPU, "fp32")[0] == "onnxruntime"  # the checkpoint's cached export
    with pytest.raises(ConfigError, match="m.onnx: an ONNX file runs with --runtime onnxruntime"):
        select_runtime("torch", "m.onnx", CPU, "auto")
    with pytest.raises(ConfigError, match="m.pt: --runtime onnxruntime runs a checkpoint's fp32 export; --precision bf16"):
        select_runtime("onnxruntime", "m.pt", CPU, "bf16")
    with pytest.raises(ConfigError, match="--precision bf16 is for checkpoints"):
        select_runtime("auto", "m.onnx", CPU, "bf16")


def write_folder(folder, count=3):
    folder.mkdir()
    images = {}
    for i in range(count):
        image = scene(7, i, size=(70 + 9 * i, 90 - 4 * i)).image
        Image.fromarray(image).save(folder / f"img{i}.png")
        images[f"img{i}"] = image
    return images


def test_int8_file_through_fcnseg_predict_end_to_end(models, tmp_path, caplog, capsys):
    images = write_folder(tmp_path / "in")
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        code = main(["predict", str(models["int8"]), str(tmp_path / "in"), "-o", str(out), "--stats", "--overlay",
                     "--probabilities", "--no-progress", "--workers", "0"])
    assert code == 0, capsys.readouterr()
    assert "ONNX Runtime int8" in caplog.text
    expected = Predictor(net=OrtNet.from_file(models["int8"]))
    for name, image in images.items():
        labels = read_mask_png(out / f"{name}_labels.png")
        np.testing.assert_array_equal(labels, expected.predict(image).labels)
        probabilities = np.load(out / f"{name}_prob.npy")
        assert probabilities.shape == (len(CLASSES), *image.shape[:2])
        np.testing.assert_allclose(probabilities.astype(np.float32).sum(0), 1.0, atol=1e-2)
        assert (out / f"{name}_overlay.jpg").is_file()
    areas = json.loads((out / "areas.json").read_text())
    assert areas["class_names"] == CLASSES and len(areas["images"]) == 3


def test_fp32_file_and_its_checkpoint_predict_the_same_labels(models, tmp_path):
    write_folder(tmp_path / "in", count=2)
    for name, model in (("onnx", models["fp32"]), ("torch", models["checkpoint"])):
        assert main(["predict", str(model), str(tmp_path / "in"), "-o", str(tmp_path / name), "--precision", "fp32",
                     "--no-progress", "--workers", "0"]) == 0
    for i in range(2):
        a, b = read_mask_png(tmp_path / "onnx" / f"img{i}_labels.png"), read_mask_png(tmp_path / "torch" / f"img{i}_labels.png")
        assert (a == b).mean() >= 0.999


def test_predict_with_a_broken_onnx_file_is_one_error_line(models, tmp_path, capsys):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(models["int8"].read_bytes()[:1000])
    (tmp_path / "in").mkdir()
    Image.fromarray(scene(7, 0).image).save(tmp_path / "in" / "a.png")
    assert main(["predict", str(broken), str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.onnx" in err[0] and "Traceback" not in err[0]


def test_eval_scores_an_int8_file_and_compares_precisions(models, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(models["int8"]), "--kind", "synthetic", "--style", STYLE, "--limit", "3",
                 "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["precision"] == "int8" and result["runtime"] == "onnxruntime" and result["num_images"] == 3
    both = tmp_path / "compare.json"
    assert main(["eval", str(models["checkpoint"]), "--kind", "synthetic", "--style", STYLE, "--limit", "3",
                 "--compare-precisions", "--int8-model", str(models["int8"]), "--out", str(both), "--no-progress"]) == 0
    text = capsys.readouterr().out
    rows = json.loads(both.read_text())["precisions"]
    from fcnseg.precision import cpu_has_native_bf16

    # bf16 only where this CPU runs it natively; elsewhere the table says why it is missing.
    assert [r["precision"] for r in rows] == ["fp32", *(["bf16"] if cpu_has_native_bf16() else []), "int8"]
    assert cpu_has_native_bf16() or "bf16: not measured" in text
    assert abs(rows[-1]["mean_iu"] - result["mean_iu"]) < 1e-9  # the same int8 file scores the same
    for word in ("fp32", "bf16", "int8", "mean IU"):
        assert word in text


@pytest.mark.parametrize("kind", ["checkpoint", "fp32", "int8"])
def test_predict_starts_with_one_short_line_of_what_runs(models, tmp_path, capfd, caplog, kind):
    write_folder(tmp_path / "in", count=1)
    with caplog.at_level("INFO"):
        assert main(["predict", str(models[kind]), str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--no-progress",
                     "--workers", "0"]) == 0
    lines = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{models[kind]}: ") and "threads" in lines[0]
    assert len(lines[0]) - len(str(models[kind])) < 150, lines[0]
    assert ("ONNX Runtime" in lines[0]) == (kind != "checkpoint") and ("PyTorch" in lines[0]) == (kind == "checkpoint")
    assert capfd.readouterr().err == ""  # the file descriptor: ONNX Runtime's own logger writes there, past Python's

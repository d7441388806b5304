"""--runtime auto with fake timings: the fastest candidate whose labels agree with PyTorch fp32 wins, a disagreeing one is
refused, and the cached choice is reused until the CPU, a library version or the model file changes; an .onnx file
(fp32, int8) is chosen the same way between ONNX Runtime and OpenVINO, held against ONNX Runtime's labels."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import fcnseg.inference.runtime_choice as runtime_choice  # noqa: E402
from fcnseg.inference.predictor import Predictor  # noqa: E402
from fcnseg.inference.runtime import OrtNet  # noqa: E402
from fcnseg.inference.runtime_choice import (MIN_AGREEMENT, MIN_AGREEMENT_INT8, Candidate, candidates,  # noqa: E402
                                             choose_runtime, onnx_candidates)
from fcnseg.precision import kind_from_cpuinfo  # noqa: E402
from fcnseg.weights.checkpoint import load_model  # noqa: E402
from fcnseg.weights.openvino_net import openvino_available  # noqa: E402
from conftest import CPUINFO  # noqa: E402
from onnx_support import scene, small_models  # noqa: E402
from serve_support import sample_image, save_small_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
IMAGE = sample_image(96, 128, seed=3)
SCENE = scene(6, 1, size=(131, 97)).image  # for the trained net of the .onnx files
needs_openvino = pytest.mark.skipif(not openvino_available(),
                                    reason="OpenVINO is not installed (pip install 'fcnseg[openvino]'; the dev extra has it)")


class FakeTimes:
    """``measure(candidate, run)``: runs the candidate once for its logits, reports the time the table gives
    (label -> seconds); ``wrong`` labels get their class scores rolled, so that their labels disagree."""

    def __init__(self, table: dict[str, float], wrong: tuple[str, ...] = ()):
        self.table, self.wrong, self.calls = table, wrong, []

    def __call__(self, candidate: Candidate, run):
        self.calls.append(candidate.label)
        logits = run()
        if candidate.label in self.wrong:
            logits = logits.roll(1, dims=1)
        return self.table.get(candidate.label, 9.0), logits


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_small_checkpoint(tmp_path_factory.mktemp("choice") / "small.pt")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # one cache for the module: the export is written once


def fast(label: str) -> dict[str, float]:
    return {label: 0.01}


def choose(checkpoint, folder, measure, **kwargs):
    return choose_runtime(load_model(checkpoint), IMAGE, runtime="auto", folder=folder, measure=measure, **kwargs)


def test_candidates_follow_the_cpu_kind_and_the_flags():
    amx, avx2 = (kind_from_cpuinfo(CPUINFO[k], env={}) for k in ("amx", "avx2"))
    labels = [c.label for c in candidates(amx, openvino=True)]
    assert labels == ["torch fp32 contiguous", "torch fp32 channels_last", "torch bf16 contiguous",
                      "torch bf16 channels_last", "onnxruntime fp32", "openvino fp32"]
    assert [c.label for c in candidates(avx2, openvino=False)] == [
        "torch fp32 contiguous", "torch fp32 channels_last", "onnxruntime fp32"]  # bf16 only where native
    assert [c.label for c in candidates(amx, openvino=True, precision="bf16")] == [
        "torch bf16 contiguous", "torch bf16 channels_last"]
    assert [c.label for c in candidates(amx, openvino=True, layout="channels_last")] == [
        "torch fp32 channels_last", "torch bf16 channels_last"]


def test_the_fastest_agreeing_candidate_wins_and_runs_like_pytorch(checkpoint, folder, fake_cpu):
    fake_cpu("avx2")
    measure = FakeTimes(fast("onnxruntime fp32"))
    choice = choose(checkpoint, folder, measure)
    assert set(measure.calls) == {c.label for c in candidates(kind_from_cpuinfo(CPUINFO["avx2"], env={}),
                                                                  openvino=openvino_available())}
    assert choice.chosen == Candidate("onnxruntime") and not choice.cached
    assert choice.handle.runtime == "onnxruntime" and choice.handle.onnx_info is not None
    assert all(a >= MIN_AGREEMENT for a in choice.agreement.values()) and not choice.refused
    assert "onnxruntime fp32" in choice.why and "0.01 s" in choice.why
    # the chosen handle predicts what PyTorch fp32 predicts
    plain = Predictor(load_model(checkpoint), precision="fp32", layout="contiguous").predict(IMAGE).labels
    chosen = Predictor(choice.handle).predict(IMAGE).labels
    assert (chosen == plain).mean() >= MIN_AGREEMENT


def test_a_disagreeing_candidate_is_refused_and_the_next_fastest_agreeing_wins(checkpoint, folder, fake_cpu):
    fake_cpu("avx2")
    table = {"onnxruntime fp32": 0.01, "openvino fp32": 0.02, "torch fp32 channels_last": 0.03}
    measure = FakeTimes(table, wrong=("onnxruntime fp32",))
    shutil.rmtree(folder / "runtime", ignore_errors=True)  # the choices so far, not the export
    choice = choose(checkpoint, folder, measure)
    assert "onnxruntime fp32" in choice.refused and "agreement" in choice.refused["onnxruntime fp32"]
    assert choice.agreement["onnxruntime fp32"] < MIN_AGREEMENT
    expected = "openvino fp32" if openvino_available() else "torch fp32 channels_last"
    assert choice.chosen.label == expected and "onnxruntime fp32 refused" in choice.why
    if expected.startswith("torch"):
        assert choice.handle.plan.layout == "channels_last" and choice.handle.plan.precision == "fp32"


def test_the_cached_choice_is_reused_and_a_new_cpu_version_or_file_measures_again(checkpoint, folder, fake_cpu,
                                                                                   monkeypatch, tmp_path):
    fake_cpu("avx2")
    path = tmp_path / "model.pt"
    path.write_bytes(checkpoint.read_bytes())
    measure = FakeTimes(fast("torch fp32 channels_last"))
    first = choose(path, folder, measure)
    assert first.chosen.label == "torch fp32 channels_last" and measure.calls

    measure.calls.clear()
    again = choose(path, folder, measure)
    assert not measure.calls and again.cached and again.chosen == first.chosen and "cached" in again.why
    assert again.times == first.times  # the log line still gives the times it was chosen by

    kind = fake_cpu("avx512")  # another CPU (AVX-512, no bf16): same candidates, another model name
    assert kind.model != kind_from_cpuinfo(CPUINFO["avx2"], env={}).model
    choose(path, folder, measure)
    assert measure.calls

    fake_cpu("avx2")
    versions = runtime_choice.library_versions()
    monkeypatch.setattr(runtime_choice, "library_versions", lambda: {**versions, "onnxruntime": "0.0.1"})
    measure.calls.clear()
    choose(path, folder, measure)
    assert measure.calls
    monkeypatch.setattr(runtime_choice, "library_versions", lambda: versions)

    measure.calls.clear()
    choose(path, folder, measure)
    assert not measure.calls  # back to the first key: still cached
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file changed (a retrained model)
    choose(path, folder, measure)
    assert measure.calls


def test_a_corrupt_cache_entry_is_ignored_and_rewritten(checkpoint, folder, fake_cpu):
    fake_cpu("avx2")
    measure = FakeTimes(fast("torch fp32 contiguous"))
    choose(checkpoint, folder, measure, precision="fp32", layout="contiguous")  # one candidate: nothing to time
    assert not measure.calls
    shutil.rmtree(folder / "runtime", ignore_errors=True)
    choose(checkpoint, folder, measure)
    (entry,) = (folder / "runtime").glob("*.json")
    entry.write_text('{"key": {"cache": 1}, "cho')  # a half-written file
    measure.calls.clear()
    choice = choose(checkpoint, folder, measure)
    assert measure.calls and not choice.cached
    assert json.loads(entry.read_text())["chosen"]["runtime"] == choice.chosen.runtime


def test_forced_runtimes_run_the_checkpoints_cached_export(checkpoint, folder):
    handle = load_model(checkpoint)
    choice = choose_runtime(handle, runtime="onnxruntime", folder=folder)
    assert choice.handle.runtime == "onnxruntime" and choice.handle.extra["exported_from"] == str(checkpoint)
    assert choice.handle.path.parent == folder / "graphs"
    torch_choice = choose_runtime(load_model(checkpoint), runtime="torch", precision="fp32", folder=folder)
    assert torch_choice.handle.runtime == "torch" and torch_choice.handle.plan.precision == "fp32"
    x = torch.from_numpy(IMAGE)[None]
    from fcnseg.inference.runtime import runtime_for

    a = runtime_for(choice.handle)(x)[0].max(0).indices
    b = runtime_for(torch_choice.handle)(x)[0].max(0).indices
    assert float((a == b).float().mean()) >= MIN_AGREEMENT


def test_the_environment_sets_the_default_and_a_bad_value_is_named(monkeypatch):
    from fcnseg.errors import ConfigError

    monkeypatch.setenv("FCNSEG_RUNTIME", "openvino")
    assert runtime_choice.default_runtime() == "openvino"
    monkeypatch.setenv("FCNSEG_RUNTIME", "tensorrt")
    with pytest.raises(ConfigError, match="FCNSEG_RUNTIME='tensorrt' is not one of auto, torch"):
        runtime_choice.default_runtime()
    monkeypatch.setenv("FCNSEG_CACHE_DIR", "/somewhere/else")
    assert str(runtime_choice.cache_dir()) == "/somewhere/else"
    monkeypatch.delenv("FCNSEG_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert str(runtime_choice.cache_dir()) == "/xdg/fcnseg"
    assert np.issubdtype(runtime_choice.sample_image(None).dtype, np.uint8)


# --- an .onnx file: ONNX Runtime against OpenVINO --------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return small_models(tmp_path_factory)  # a trained small net, its fp32 export and int8 (QDQ) file


def choose_onnx(path, folder, measure=None, **kwargs):
    return choose_runtime(load_model(path), SCENE, runtime="auto", folder=folder, measure=measure, **kwargs)


def test_onnx_candidates_are_onnx_runtime_first_then_openvino_where_installed():
    assert [c.label for c in onnx_candidates("int8", openvino=True)] == ["onnxruntime int8", "openvino int8"]
    assert [c.label for c in onnx_candidates("fp32", openvino=False)] == ["onnxruntime fp32"]


@needs_openvino
def test_an_int8_onnx_file_runs_with_openvino_where_it_is_faster_and_agrees(models, tmp_path):
    measure = FakeTimes({"openvino int8": 0.01, "onnxruntime int8": 0.05})
    choice = choose_onnx(models["int8"], tmp_path, measure)
    assert measure.calls == ["onnxruntime int8", "openvino int8"]  # the reference first
    assert choice.chosen == Candidate("openvino", "int8") and choice.handle.engine == "openvino"
    assert choice.handle.runtime == "openvino" and choice.handle.path == models["int8"]
    assert choice.agreement["onnxruntime int8"] == 1.0 and choice.agreement["openvino int8"] >= MIN_AGREEMENT_INT8
    assert not choice.refused and choice.threshold == MIN_AGREEMENT_INT8
    assert "agreeing with ONNX Runtime int8 on >= 99.5%" in choice.why and "openvino int8 0.01 s" in choice.why


@needs_openvino
def test_an_fp32_onnx_file_keeps_onnx_runtime_where_it_is_faster(models, tmp_path):
    choice = choose_onnx(models["fp32"], tmp_path, FakeTimes({"openvino fp32": 0.05, "onnxruntime fp32": 0.01}))
    assert choice.chosen == Candidate("onnxruntime", "fp32") and choice.handle.engine == "onnxruntime"
    assert choice.threshold == MIN_AGREEMENT and "on >= 99.9%" in choice.why


@needs_openvino
def test_a_disagreeing_openvino_is_refused_for_an_int8_file(models, tmp_path):
    measure = FakeTimes({"openvino int8": 0.01, "onnxruntime int8": 0.05}, wrong=("openvino int8",))
    choice = choose_onnx(models["int8"], tmp_path, measure)
    assert choice.chosen == Candidate("onnxruntime", "int8") and choice.handle.engine == "onnxruntime"
    assert choice.agreement["openvino int8"] < MIN_AGREEMENT_INT8
    assert "agreement" in choice.refused["openvino int8"] and "< 99.5%" in choice.refused["openvino int8"]
    assert "openvino int8 refused" in choice.why


def test_without_openvino_an_onnx_file_runs_with_onnx_runtime_unmeasured(models, tmp_path, monkeypatch):
    import fcnseg.weights.openvino_net as openvino_net

    monkeypatch.setattr(openvino_net, "openvino_available", lambda: False)
    measure = FakeTimes({})
    choice = choose_onnx(models["int8"], tmp_path, measure)
    assert not measure.calls and not choice.times and not (tmp_path / "runtime").exists()
    assert choice.chosen == Candidate("onnxruntime", "int8") and choice.handle.engine == "onnxruntime"
    assert "OpenVINO is not installed" in choice.why


@needs_openvino
def test_an_onnx_files_choice_is_cached_until_the_file_changes(models, tmp_path):
    path = tmp_path / "int8.onnx"
    shutil.copy(models["int8"], path)
    measure = FakeTimes({"openvino int8": 0.01, "onnxruntime int8": 0.05})
    first = choose_onnx(path, tmp_path / "cache", measure)
    measure.calls.clear()
    again = choose_onnx(path, tmp_path / "cache", measure)
    assert not measure.calls and again.cached and again.chosen == first.chosen
    assert again.handle.engine == "openvino" and again.times == first.times and "cached" in again.why
    assert "ONNX Runtime int8 on >= 99.5%" in again.why
    # $FCNSEG_RUNTIME=torch (the test suite's default) measures nothing: ONNX Runtime
    assert choose_runtime(load_model(path), SCENE, folder=tmp_path / "cache", measure=measure).handle.engine == "onnxruntime"
    assert not measure.calls
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new quantization over the same name
    choose_onnx(path, tmp_path / "cache", measure)
    assert measure.calls


@needs_openvino
def test_the_measured_choice_for_an_int8_file_predicts_what_its_engine_predicts(models, caplog):
    """Not faked: both engines timed on the scene; the predictor's labels equal the chosen engine's own."""
    import logging

    with caplog.at_level(logging.INFO, logger="fcnseg.inference.predictor"):
        predictor = Predictor.from_checkpoint(models["int8"], runtime="auto", image=SCENE)
    choice = predictor.choice
    assert set(choice.times) == {"onnxruntime int8", "openvino int8"} and not choice.cached
    assert choice.agreement[choice.chosen.label] >= MIN_AGREEMENT_INT8
    assert predictor.runtime.runtime == choice.chosen.runtime
    assert f"runtime {choice.chosen.label}" in caplog.text
    direct = load_model(models["int8"])
    direct.engine = choice.chosen.runtime
    expected = Predictor(net=OrtNet(direct)).predict(SCENE).labels
    assert np.array_equal(predictor.predict(SCENE).labels, expected)

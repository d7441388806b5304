"""--runtime auto with fake timings: the fastest candidate whose labels agree with PyTorch fp32 wins, a disagreeing one is
refused, and the cached choice is reused until the CPU, a library version or the model file changes."""

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
from fcnseg.inference.runtime_choice import MIN_AGREEMENT, Candidate, candidates, choose_runtime  # noqa: E402
from fcnseg.precision import kind_from_cpuinfo  # noqa: E402
from fcnseg.weights.checkpoint import load_model  # noqa: E402
from fcnseg.weights.openvino_net import openvino_available  # noqa: E402
from conftest import CPUINFO  # noqa: E402
from serve_support import sample_image, save_small_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
IMAGE = sample_image(96, 128, seed=3)


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

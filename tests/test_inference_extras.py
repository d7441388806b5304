"""`fcnseg export` without the onnx extra: one line naming every missing module and the install command."""

from __future__ import annotations

import importlib
import sys

import pytest

from fcnseg.weights.checkpoint import save_checkpoint
from fcnseg.cli import main
from fcnseg.config import ModelConfig
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.models import build_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=3))
    save_checkpoint(path, model, model.config, ["a", "b", "c"], PAPER_BGR)
    return path


@pytest.fixture(autouse=True, scope="module")
def installed_extras_imported():
    """Import what is installed first, so that hiding one module cannot leave another half-imported."""
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _export_without(monkeypatch, capsys, tmp_path, checkpoint, hidden):
    """Run `fcnseg export` with the modules ``hidden`` unimportable; (exit code, stderr, modules it says are missing)."""
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    rc = main(["export", str(checkpoint), str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    missing = err.split("missing: ", 1)[1].split(".", 1)[0].split(", ") if "missing: " in err else []
    return rc, err, missing


def test_export_without_onnxscript_is_one_error_naming_it_and_the_install_command(monkeypatch, capsys, tmp_path, checkpoint):
    rc, err, missing = _export_without(monkeypatch, capsys, tmp_path, checkpoint, ["onnxscript"])
    assert rc == 1
    assert len(err.strip().splitlines()) == 1, err  # no traceback
    assert "onnxscript" in missing and "pip install 'fcnseg[onnx]'" in err
    assert not (tmp_path / "m.onnx").exists()


def test_export_names_every_missing_module_at_once(monkeypatch, capsys, tmp_path, checkpoint):
    rc, _, missing = _export_without(monkeypatch, capsys, tmp_path, checkpoint, ["onnxscript", "onnxruntime"])
    assert rc == 1 and {"onnxscript", "onnxruntime"} <= set(missing)


def test_the_check_needs_onnxruntime_before_anything_is_exported(monkeypatch, capsys, tmp_path, checkpoint):
    rc, _, missing = _export_without(monkeypatch, capsys, tmp_path, checkpoint, ["onnxruntime"])
    assert rc == 1 and "onnxruntime" in missing
    assert not (tmp_path / "m.onnx").exists()

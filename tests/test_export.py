"""Export: ONNX with dynamic batch/height/width agrees with PyTorch under ONNX Runtime, normalisation included."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fcnseg.weights.checkpoint import save_checkpoint
from fcnseg.cli import main
from fcnseg.config import ModelConfig
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.errors import ConfigError
from fcnseg.inference.export import export
from fcnseg.weights.handle import LoadedModel

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def handle(model, class_names):
    """The model handle of an in-memory net (what load_model gives for a checkpoint)."""
    return LoadedModel(model, model.config, class_names, PAPER_BGR, "memory")


def scoring_model(arch: str = "fcn8s"):
    torch.manual_seed(3)
    from fcnseg.models import build_model

    model = build_model(ModelConfig(arch=arch, backbone="small", num_classes=4))
    for name in ("score_fr", "score_pool4", "score_pool3"):
        layer = getattr(model, name, None)
        if layer is not None:
            torch.nn.init.normal_(layer.weight, std=0.05)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Export once through the CLI (which also runs the ONNX Runtime check) and keep what it printed."""
    folder = tmp_path_factory.mktemp("export")
    model = scoring_model()
    save_checkpoint(folder / "m.pt", model, model.config, ["bg", "a", "b", "c"], PAPER_BGR)
    return folder, model


def test_cli_exports_onnx_and_reports_agreement_on_several_sizes(exported, capsys):
    folder, _ = exported
    assert main(["export", str(folder / "m.pt"), str(folder / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and out.count("100.0000%") == 4


def test_onnx_runtime_alone_matches_pytorch_on_unseen_sizes(exported):
    folder, model = exported
    if not (folder / "m.onnx").exists():
        export(handle(model, ["bg", "a", "b", "c"]), folder / "m.onnx")
    session = ort.InferenceSession(str(folder / "m.onnx"), providers=["CPUExecutionProvider"])
    dims = session.get_inputs()[0].shape
    assert isinstance(dims[0], str) and isinstance(dims[2], str) and isinstance(dims[3], str)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["fcnseg.class_names"]) == ["bg", "a", "b", "c"] and meta["fcnseg.arch"] == "fcn8s"
    rng = np.random.default_rng(0)
    for shape in [(3, 3, 50, 61), (1, 3, 160, 128)]:
        rgb = rng.integers(0, 256, size=(shape[0], shape[2], shape[3], 3), dtype=np.uint8)
        image = rgb.transpose(0, 3, 1, 2).astype(np.float32)
        found = session.run(None, {"image": image})[0]
        with torch.no_grad():
            # The reference: the checkpoint's own normalisation, then the plain model.
            x = torch.stack([PAPER_BGR.image_to_tensor(r) for r in rgb])
            expected = model(x).numpy()
        assert found.shape == expected.shape
        assert np.abs(found - expected).max() < 1e-3
        assert (found.argmax(1) == expected.argmax(1)).all()


def test_unknown_export_suffix_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="expected .onnx"):
        export(handle(scoring_model(), ["bg", "a", "b", "c"]), tmp_path / "m.pt2")


def test_batch_norm_net_exports_folded_and_matches_the_unfolded_pytorch_model(tmp_path):
    torch.manual_seed(5)
    from fcnseg.models import build_model

    model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=3, batch_norm=True))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.3, 3.0)
            m.weight.data.uniform_(0.5, 1.5)
    torch.nn.init.normal_(model.score_pool3.weight, std=0.05)
    model.eval()
    export(handle(model, ["bg", "a", "b"]), tmp_path / "bn.onnx")
    graph = onnx.load(str(tmp_path / "bn.onnx")).graph
    assert not [n for n in graph.node if n.op_type == "BatchNormalization"]  # merged into the convolutions
    session = ort.InferenceSession(str(tmp_path / "bn.onnx"), providers=["CPUExecutionProvider"])
    rgb = np.random.default_rng(1).integers(0, 256, size=(1, 70, 90, 3), dtype=np.uint8)
    found = session.run(None, {"image": rgb.transpose(0, 3, 1, 2).astype(np.float32)})[0]
    with torch.no_grad():
        expected = model(PAPER_BGR.image_to_tensor(rgb[0])[None]).numpy()
    assert np.abs(found - expected).max() < 1e-3
    assert (found.argmax(1) == expected.argmax(1)).all()

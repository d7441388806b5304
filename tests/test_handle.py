"""The model handle: every file kind loads into one LoadedModel that runs, feeds and names the model as the file says."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fcnseg.cli import main
from fcnseg.config import ModelConfig
from fcnseg.data import SyntheticDataset, build_dataset, make_synthetic
from fcnseg.data.normalization import IMAGENET_RGB, PAPER_BGR
from fcnseg.errors import CheckpointError, ConfigError
from fcnseg.evaluation import evaluate
from fcnseg.models import build_model
from fcnseg.weights.checkpoint import load_model, save_checkpoint
from fcnseg.weights.handle import LoadedModel
from fcnseg.weights.pytorch_fcn import fcnseg_to_torchfcn

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = list(SyntheticDataset().class_names)  # the synthetic set's (background, disc, square, ...)


def small_net(seed=0, arch="fcn8s", **options):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch=arch, backbone="small", num_classes=6, **options))
    # Score layers drawn so that the answer varies over the image (the coarse score would otherwise swamp the skips).
    for name, std in (("score_fr", 0.001), ("score_pool4", 1.0), ("score_pool3", 3.0)):
        torch.nn.init.normal_(getattr(model, name).weight, std=std)
    return model.eval()


def close(found: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> bool:
    """Equal up to float rounding, relative to the logits' scale."""
    return found.shape == expected.shape and bool((found - expected).abs().max() <= rel * expected.abs().max())


def plain_logits(model, normalization, rgb: np.ndarray) -> torch.Tensor:
    """The independent path: the data set's normalisation by hand (per-pixel formula), then the bare module."""
    x = rgb.astype(np.float64)
    if normalization.bgr:
        x = x[..., ::-1]
    x = (x * normalization.value_scale - np.array(normalization.mean)) / np.array(normalization.std)
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))).float()[None])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("handle-data") / "data"
    make_synthetic(root, num_train=0, num_val=3, seed=4, size=(45, 53))
    return root


def test_an_fcnseg_checkpoint_loads_as_a_handle_that_carries_its_contract(tmp_path):
    model = small_net()
    palette = np.arange(18, dtype=np.uint8).reshape(6, 3) * 10
    save_checkpoint(tmp_path / "m.pt", model, model.config, CLASSES, IMAGENET_RGB, palette=palette)
    handle = load_model(tmp_path / "m.pt")
    assert isinstance(handle, LoadedModel) and handle.runtime == "torch" and handle.path == tmp_path / "m.pt"
    assert handle.class_names == CLASSES and handle.head_class_names == {"semantic": CLASSES}
    assert handle.normalization == IMAGENET_RGB and handle.input_spec.normalizations == {"color": IMAGENET_RGB}
    assert (handle.palette[:6] == palette).all() and handle.palette.shape == (256, 3)
    rgb = np.random.default_rng(0).integers(0, 256, (37, 41, 3), dtype=np.uint8)
    handle.prepare("cpu", "fp32", "contiguous")
    found = handle.forward(IMAGENET_RGB.image_to_tensor(rgb)[None])
    assert close(found, plain_logits(model, IMAGENET_RGB, rgb))


@pytest.mark.parametrize("layout", ["raw state dict", "trainer wrapper"])
def test_a_pytorch_fcn_file_loads_as_a_handle_with_the_reference_normalisation(tmp_path, layout):
    model = small_net(1)
    state = fcnseg_to_torchfcn(model.state_dict())
    torch.save(state if layout == "raw state dict" else {"model_state_dict": state, "arch": "FCN8s"}, tmp_path / "f.pth")
    handle = load_model(tmp_path / "f.pth").prepare("cpu", "fp32")
    assert handle.source == "torchfcn" and handle.normalization == PAPER_BGR
    rgb = np.random.default_rng(1).integers(0, 256, (40, 36, 3), dtype=np.uint8)
    found = handle.forward(PAPER_BGR.image_to_tensor(rgb)[None])
    assert close(found, plain_logits(model, PAPER_BGR, rgb))


def test_an_onnx_file_loads_as_a_handle_with_the_checkpoints_contract(tmp_path):
    pytest.importorskip("onnxruntime")
    from fcnseg.inference.export import export_onnx

    model = small_net(2, batch_norm=False)
    palette = np.full((6, 3), 7, dtype=np.uint8)
    save_checkpoint(tmp_path / "m.pt", model, model.config, CLASSES, PAPER_BGR, palette=palette)
    export_onnx(load_model(tmp_path / "m.pt"), tmp_path / "m.onnx")
    handle = load_model(tmp_path / "m.onnx")
    assert handle.runtime == "onnxruntime" and handle.model is None and handle.precision == "fp32"
    assert handle.class_names == CLASSES and handle.normalization == PAPER_BGR and (handle.palette[:6] == 7).all()
    assert handle.config == model.config  # the whole architecture travels, padding and batch norm included
    rgb = np.random.default_rng(2).integers(0, 256, (33, 47, 3), dtype=np.uint8)
    raw = torch.from_numpy(rgb).permute(2, 0, 1).float()[None]  # what its feed normalisation gives
    assert handle.feed_normalization.image_to_tensor(rgb).equal(raw[0])
    found = handle.forward(raw)
    assert close(found, plain_logits(model, PAPER_BGR, rgb), rel=1e-4)


def test_the_three_normalisation_paths_give_the_same_numbers():
    from fcnseg.inference.export import NormalizedFCN
    from fcnseg.inference.forward import normalize_pixels

    rgb = np.random.default_rng(3).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    for normalization in (IMAGENET_RGB, PAPER_BGR):
        data = normalization.image_to_tensor(rgb)
        predictor = normalize_pixels(torch.from_numpy(rgb)[None], normalization)[0]
        graph = NormalizedFCN(torch.nn.Identity(), normalization)(torch.from_numpy(rgb).permute(2, 0, 1)[None].float())[0]
        assert data.equal(predictor) and data.equal(graph)
        expected = plain_logits(torch.nn.Identity(), normalization, rgb)[0]
        assert torch.allclose(data, expected, atol=1e-5)


def test_evaluate_of_a_handle_normalises_as_the_model_expects_and_scores_as_the_cli(synthetic, tmp_path):
    model = small_net(4)
    save_checkpoint(tmp_path / "m.pt", model, model.config, CLASSES, IMAGENET_RGB)
    # The data set's own default is paper_bgr; the model was trained on imagenet_rgb.
    dataset = build_dataset("synthetic", synthetic, "val")
    assert dataset.normalization == PAPER_BGR
    api = evaluate(load_model(tmp_path / "m.pt"), dataset, precision="fp32", progress=False)
    assert dataset.normalization == PAPER_BGR  # the caller's data set is left as it was
    out = tmp_path / "eval.json"
    assert main(["eval", str(tmp_path / "m.pt"), "--data", str(synthetic), "--precision", "fp32",
                 "--out", str(out), "--no-progress"]) == 0
    cli = json.loads(out.read_text())
    assert api["mean_iu"] == pytest.approx(cli["mean_iu"]) and api["confusion"] == cli["confusion"]
    assert cli["normalization"]["name"] == "imagenet_rgb"
    # The independent count: each image normalised by hand as the model expects, argmax, confusion per pixel.
    confusion = np.zeros((6, 6), dtype=np.int64)
    for i in range(len(dataset)):
        raw = dataset.load_raw(i)
        predicted = plain_logits(model, IMAGENET_RGB, raw.image)[0].argmax(0).numpy()
        keep = raw.mask != 255
        np.add.at(confusion, (raw.mask[keep].astype(np.int64), predicted[keep]), 1)
    assert api["confusion"] == confusion.tolist()
    assert len({p for row in confusion for p in np.nonzero(row)[0]}) > 1  # a net whose answer depends on the input


def test_evaluate_refuses_a_data_set_whose_class_names_differ_and_shows_both(synthetic, tmp_path):
    model = small_net(5)
    reordered = [CLASSES[0], CLASSES[2], CLASSES[1], *CLASSES[3:]]
    save_checkpoint(tmp_path / "m.pt", model, model.config, reordered, PAPER_BGR)
    with pytest.raises(ConfigError) as caught:
        evaluate(load_model(tmp_path / "m.pt"), build_dataset("synthetic", synthetic, "val"), progress=False)
    message = str(caught.value)
    assert CLASSES[1] in message and CLASSES[2] in message and "m.pt" in message


def test_class_names_given_to_the_loader_must_be_distinct(tmp_path):
    model = small_net(6)
    save_checkpoint(tmp_path / "m.pt", model, model.config, CLASSES, PAPER_BGR)
    with pytest.raises(CheckpointError, match="distinct"):
        load_model(tmp_path / "m.pt", class_names=["a", "a", "b", "c", "d", "e"])


def rewrite(path: Path, out: Path, change) -> Path:
    import onnx

    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    change(meta)
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(out))
    return out


@pytest.mark.parametrize("names, words", [
    (["a", "b", "c"], "6 names"),
    ([f"c{i}" for i in range(9)], "6 names"),
    (["same"] * 6, "distinct"),
])
def test_an_onnx_files_class_list_must_fit_its_graph_and_be_distinct(tmp_path, names, words):
    pytest.importorskip("onnxruntime")
    from fcnseg.inference.export import export_onnx

    model = small_net(7)
    save_checkpoint(tmp_path / "m.pt", model, model.config, CLASSES, PAPER_BGR)
    export_onnx(load_model(tmp_path / "m.pt"), tmp_path / "m.onnx")

    def change(meta):
        meta["fcnseg.class_names"] = json.dumps(names)

    with pytest.raises(CheckpointError, match=words):
        load_model(rewrite(tmp_path / "m.onnx", tmp_path / "edited.onnx", change))

    def also_count(meta):
        change(meta)
        meta["fcnseg.num_classes"] = str(len(names))
        meta.pop("fcnseg.model_config")

    if len(set(names)) == len(names):  # the count edited to match: the graph's 6 outputs still say no
        with pytest.raises(CheckpointError, match="graph's output"):
            load_model(rewrite(tmp_path / "m.onnx", tmp_path / "edited2.onnx", also_count))


def test_serve_takes_the_palette_an_onnx_file_records(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("fastapi")
    from fcnseg.inference.export import export_onnx
    from fcnseg.inference.predictor import Predictor
    from fcnseg.serve.app import create_app

    model = small_net(8)
    palette = np.array([[10 * i, 5, 200 - 10 * i] for i in range(6)], dtype=np.uint8)
    save_checkpoint(tmp_path / "m.pt", model, model.config, CLASSES, PAPER_BGR, palette=palette)
    export_onnx(load_model(tmp_path / "m.pt"), tmp_path / "m.onnx")
    predictor = Predictor.from_checkpoint(tmp_path / "m.onnx")
    from fastapi.testclient import TestClient

    with TestClient(create_app(predictor, model_name="m.onnx")) as client:
        classes = client.get("/api/model").json()["classes"]
    assert [c["colour"] for c in classes] == palette.tolist()


COMMANDS = Path(__file__).resolve().parent.parent / "fcnseg" / "commands"
BUILDERS = {"build_model", "Normalization", "get_normalization", "image_to_tensor", "load_state_dict", "TorchNet",
            "OrtNet", "OnnxNet", "normalize_pixels", "coefficients", "save_checkpoint", "autocast"}


def test_no_command_builds_a_model_or_a_normalisation_itself():
    """Commands parse flags; the handle (load_model, fcn_from_classifier) builds models and decides inputs."""
    found = []
    for path in sorted(COMMANDS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
            if name in BUILDERS:
                found.append(f"{path.name}:{node.lineno} {name}")
    assert not found, found


def test_a_class_map_scores_a_reordered_data_set_as_the_correctly_ordered_one(synthetic, tmp_path):
    model = small_net(9)
    reordered = [CLASSES[0], CLASSES[2], CLASSES[1], *CLASSES[3:]]  # the model names classes 1 and 2 the other way
    save_checkpoint(tmp_path / "m.pt", model, model.config, reordered, PAPER_BGR)
    dataset = build_dataset("synthetic", synthetic, "val")
    identity = {name: name for name in CLASSES}
    mapped = evaluate(load_model(tmp_path / "m.pt"), dataset, precision="fp32", class_map=identity, progress=False)
    # Independent: the data's labels 1 and 2 swapped by hand, scored by index against the model's predictions.
    confusion = np.zeros((6, 6), dtype=np.int64)
    for i in range(len(dataset)):
        raw = dataset.load_raw(i)
        predicted = plain_logits(model, PAPER_BGR, raw.image)[0].argmax(0).numpy()
        truth = raw.mask.astype(np.int64)
        truth = np.where(truth == 1, 2, np.where(truth == 2, 1, truth))
        keep = truth != 255
        np.add.at(confusion, (truth[keep], predicted[keep]), 1)
    assert mapped["confusion"] == confusion.tolist() and mapped["class_names"] == reordered

"""The paper's other benchmarks end to end on a CPU: tiny small-trunk nets trained a few steps on each synthetic
layout (NYUD early and late fusion, SIFT Flow's two heads), then scored per head; the per-head loss and its weights."""

import csv
import json

import pytest
import torch
import torch.nn.functional as F

from fcnseg.weights.checkpoint import load_model, save_checkpoint
from fcnseg.cli import main
from fcnseg.config import ModelConfig, TrainConfig, resolve_run_config
from fcnseg.data.kinds import NYUD_MODALITIES
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.data.nyud import MODALITY_OPTIONS
from fcnseg.precision import resolve_execution
from fcnseg.data.synthetic_layouts import make_synthetic_layout
from fcnseg.errors import ConfigError
from fcnseg.losses import build_loss, per_head_loss
from fcnseg.models import build_model
from fcnseg.training.initialization import initialize_model
from fcnseg.training.loop import train_step
from fcnseg.training.trainer import train

SIFTFLOW_HEADS = [["semantic", 33], ["geometric", 3]]


def _run(tmp_path, root, dataset, model, data=None, **train_settings):
    settings = {
        "model": {"arch": "fcn32s", "backbone": "small", "dropout": 0.1, **model},
        "data": {"dataset": dataset, "root": str(root), "num_workers": 0, **(data or {})},
        "train": {"out_dir": str(tmp_path / "run"), "optimizer": "adamw", "lr": 1e-3, "batch_size": 2, "iter_size": 1,
                  "max_iter": 2, "val_every": 2, "checkpoint_every": 2, "log_every": 1, "precision": "fp32",
                  "num_panels": 1, **train_settings},
    }
    return train(resolve_run_config(overrides=settings), progress=False)


def _eval(tmp_path, checkpoint, root, split, *flags):
    out = tmp_path / "eval.json"
    assert main(["eval", str(checkpoint), "--data", str(root), "--split", split, "--out", str(out), "--no-progress",
                 *flags]) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def nyud_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nyud")
    make_synthetic_layout(root, "nyud", num_train=4, num_val=2, size=(40, 52))
    return root


def test_nyud_early_fusion_trains_and_evaluates_with_its_modalities(tmp_path, nyud_root, capsys):
    result = _run(tmp_path, nyud_root, "nyud", {"num_classes": 40, "streams": [["color+depth", 4]]},
                  {"modalities": "color+depth", "train_split": "train", "val_split": "val"})
    loaded = load_model(result.last_checkpoint)
    assert loaded.model.backbone.conv1_1.weight.shape[1] == 4
    # auto normalisation on NYUD: the reference data layer's own mean pixel, and log depth
    assert loaded.normalization.name == "nyud_bgr"
    assert loaded.inputs.modalities == "color+depth"
    assert {m: n.name for m, n in loaded.inputs.normalizations.items()} == {"color": "nyud_bgr", "depth": "nyud_log_depth"}
    scores = _eval(tmp_path, result.last_checkpoint, nyud_root, "val")  # the checkpoint's modalities, unasked
    assert scores["num_images"] == 2 and len(scores["per_class_iu"]) == 40
    assert 0.0 <= scores["pixel_accuracy"] <= 1.0
    capsys.readouterr()


def test_nyud_late_fusion_trains_and_evaluates(tmp_path, nyud_root, capsys):
    result = _run(tmp_path, nyud_root, "nyud", {"num_classes": 40, "streams": [["color", 3], ["hha", 3]]},
                  {"modalities": "color+hha", "train_split": "train", "val_split": "val"})
    loaded = load_model(result.last_checkpoint)
    assert set(loaded.model.backbones) == {"color", "hha"} and loaded.inputs.modalities == "color+hha"
    assert result.history and result.history[-1]["iteration"] == 2
    scores = _eval(tmp_path, result.last_checkpoint, nyud_root, "val", "--kind", "nyud")
    assert scores["num_images"] == 2
    assert main(["predict", str(result.last_checkpoint), str(nyud_root / "data" / "images"), "-o",
                 str(tmp_path / "pred")]) == 1
    assert "fcnseg eval CHECKPOINT --data NYUD --save-predictions" in capsys.readouterr().err


def test_a_model_that_does_not_read_the_data_sets_inputs_is_a_config_error(tmp_path, nyud_root):
    with pytest.raises(ConfigError, match=r"streams \[\['color', 3\]\] but the data set gives \[\['color', 3\], \['hha', 3\]\]"):
        _run(tmp_path, nyud_root, "nyud", {"num_classes": 40}, {"modalities": "color+hha", "train_split": "train",
                                                                  "val_split": "val"})
    assert not (tmp_path / "run").exists()


def test_siftflow_two_heads_train_and_score_per_head(tmp_path, capsys):
    root = tmp_path / "sift"
    make_synthetic_layout(root, "siftflow", num_train=4, num_val=2, size=(48, 48))
    result = _run(tmp_path, root, "siftflow", {"arch": "fcn16s", "num_classes": 33, "heads": SIFTFLOW_HEADS},
                  {"train_split": "trainval", "val_split": "test"}, head_weights=[1.0, 0.5])
    record = result.history[-1]
    assert set(record["head_mean_iu"]) == {"semantic", "geometric"}
    assert record["mean_iu"] == record["head_mean_iu"]["semantic"]  # best.pt goes by the first head's
    with open(result.out_dir / "metrics.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert float(row["mean_iu_geometric"]) == pytest.approx(record["head_mean_iu"]["geometric"], abs=1e-5)
    loaded = load_model(result.best_checkpoint)
    assert loaded.head_class_names["geometric"] == ["sky", "horizontal", "vertical"]
    scores = _eval(tmp_path, result.last_checkpoint, root, "test", "--leave-out-absent",
                   "--save-predictions", str(tmp_path / "pred"))
    assert list(scores["heads"]) == ["semantic", "geometric"]
    assert len(scores["heads"]["geometric"]["per_class_iu"]) == 3
    assert scores["heads"]["semantic"]["left_out"]  # most of the 33 classes never occur in the synthetic scenes
    assert sorted(p.name for p in (tmp_path / "pred" / "geometric").iterdir()) == ["test_00000.png", "test_00001.png"]
    assert "== geometric (3 classes) ==" in capsys.readouterr().out


def test_per_head_loss_is_the_weighted_sum_of_each_heads_loss():
    torch.manual_seed(0)
    logits = {"semantic": torch.randn(2, 5, 6, 7), "geometric": torch.randn(2, 3, 6, 7)}
    masks = torch.stack([torch.randint(0, 5, (2, 6, 7)), torch.randint(0, 3, (2, 6, 7))], dim=1)  # [N, K, H, W]
    masks[0, 0, :2] = 255
    masks[1, 1, 3:] = 255
    for normalize, reduction in ((True, "mean"), (False, "sum")):
        loss = per_head_loss(build_loss("cross_entropy", normalize=normalize), [2.0, 0.5])
        expected = 2.0 * F.cross_entropy(logits["semantic"], masks[:, 0], ignore_index=255, reduction=reduction) \
            + 0.5 * F.cross_entropy(logits["geometric"], masks[:, 1], ignore_index=255, reduction=reduction)
        torch.testing.assert_close(loss(logits, masks).float(), expected)
    single = per_head_loss(build_loss("cross_entropy"))
    torch.testing.assert_close(single(logits["semantic"], masks[:, 0]).float(),
                               F.cross_entropy(logits["semantic"], masks[:, 0], ignore_index=255))


def test_a_head_of_weight_zero_is_not_trained_by_the_step():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="fcn32s", backbone="small", num_classes=4, heads=[["semantic", 4], ["geometric", 3]]))
    config = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, iter_size=1, head_weights=[1.0, 0.0],
                         precision="fp32")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for group in optimizer.param_groups:
        group["lr_mult"] = 1.0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = torch.stack([torch.randint(0, 4, (2, 33, 30)), torch.randint(0, 3, (2, 33, 30))], dim=1)
    batches = iter([(torch.randn(2, 3, 33, 30), masks)])
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    train_step(model, optimizer, scaler, batches, config, 0, resolve_execution("cpu", "fp32", purpose="training"))
    after = model.state_dict()
    assert torch.equal(after["score_fr_geo.weight"], before["score_fr_geo.weight"])
    assert not torch.equal(after["score_fr_sem.weight"], before["score_fr_sem.weight"])


def test_late_fusion_starts_each_stream_from_its_single_stream_net(tmp_path):
    paths = {}
    nets = {}
    for seed, stream in enumerate(("color", "hha")):
        torch.manual_seed(seed)
        net = build_model(ModelConfig(arch="fcn32s", backbone="small", num_classes=4))
        with torch.no_grad():
            for p in net.parameters():
                p.normal_()
        paths[stream] = str(tmp_path / f"{stream}.pt")
        save_checkpoint(paths[stream], net, net.config, [f"c{i}" for i in range(4)], PAPER_BGR)
        nets[stream] = net.state_dict()
    config = resolve_run_config(overrides={
        "model": {"arch": "fcn32s", "backbone": "small", "num_classes": 4, "streams": [["color", 3], ["hha", 3]]},
        "data": {"dataset": "synthetic"}, "train": {"init_streams_from": paths}})
    state = initialize_model(config).model.state_dict()
    for stream in ("color", "hha"):
        torch.testing.assert_close(state[f"backbones.{stream}.conv4_2.weight"], nets[stream]["backbone.conv4_2.weight"])
        torch.testing.assert_close(state[f"score_fr{stream}.bias"], nets[stream]["score_fr.bias"])


def test_the_modality_settings_are_nyuds():
    assert NYUD_MODALITIES == tuple(MODALITY_OPTIONS)


def test_every_recipe_in_configs_resolves():
    from pathlib import Path

    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert len(configs) >= 15
    for path in configs:
        config = resolve_run_config(path)
        if path.stem.startswith(("nyud", "siftflow", "pascalcontext")) and "demo" not in path.stem:
            # the reference solvers: fixed lr, momentum 0.99, unnormalised loss, batch 1, no accumulation
            t = config.train
            assert (t.lr_policy, t.momentum, t.normalize_loss, t.batch_size, t.iter_size) == ("fixed", 0.99, False, 1, 1)

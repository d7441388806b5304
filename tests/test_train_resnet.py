"""Training a ResNet FCN: from a torchvision fcn_resnet50 file (21 classes) to a 6-class data set, BatchNorm statistics
kept under small batches, the checkpoint predicting through `fcnseg predict`; and the settings that are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.cli import main
from fcnseg.config import resolve_run_config
from fcnseg.data.normalization import IMAGENET_RGB
from fcnseg.data.synthetic import STYLE_CLASSES
from fcnseg.errors import CheckpointError, ConfigError
from fcnseg.models.batchnorm import FrozenStatisticsBatchNorm2d, freeze_batch_norm_statistics
from fcnseg.training.initialization import batch_norm_statistics, fit_classes, initialize_model
from fcnseg.training.trainer import train
from fcnseg.weights.checkpoint import load_model
from fcnseg.weights.handle import default_class_names

from resnet_reference import random_fcn_state_dict  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = list(STYLE_CLASSES["shapes"])  # the synthetic set's 6 classes, background first


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    """A torchvision-layout fcn_resnet50 state dict (21 classes, auxiliary head), random weights, and the file."""
    state = random_fcn_state_dict("resnet50", num_classes=21, aux=True, seed=3)
    path = tmp_path_factory.mktemp("tv") / "fcn_resnet50_coco.pth"
    torch.save(state, path)
    return state, path


def settings(tmp_path, init_from="", **train):
    return {
        "model": {"backbone": "resnet50"},
        "data": {"dataset": "synthetic", "root": "", "synthetic_train_images": 2, "synthetic_val_images": 1,
                 "synthetic_size": 64, "crop_size": 0, "num_workers": 0},
        "train": {"out_dir": str(tmp_path / "run"), "optimizer": "sgd", "lr": 1e-3, "batch_size": 2, "iter_size": 1,
                  "max_iter": 2, "val_every": 0, "checkpoint_every": 0, "precision": "fp32", "num_panels": 0,
                  "init_from": str(init_from), **train},
    }


def test_a_resnet_backbone_defaults_to_its_one_arch_and_a_vgg_arch_is_refused(tmp_path):
    assert resolve_run_config(overrides=settings(tmp_path)).model.arch == "fcn"
    with pytest.raises(ConfigError, match=r"backbone resnet50 builds torchvision's FCN \(arch 'fcn'\).*got arch 'fcn8s'"):
        resolve_run_config(overrides={**settings(tmp_path), "model": {"backbone": "resnet50", "arch": "fcn8s"}})


def test_the_command_line_refuses_a_vgg_arch_with_a_resnet_backbone_in_one_line(tmp_path, capsys):
    code = main(["train", "--backbone", "resnet101", "--arch", "fcn16s", "--dataset", "synthetic",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "\n" not in err and "arch 'fcn'" in err and "fcn16s" in err
    assert not (tmp_path / "run").exists()


def test_init_from_a_torchvision_file_keeps_trunk_and_head_conv_and_starts_the_scores_fresh(tmp_path, torchvision_file):
    state, path = torchvision_file
    config = resolve_run_config(overrides={**settings(tmp_path, path), "model": {"backbone": "resnet50",
                                                                                  "num_classes": 6}})
    initialized = initialize_model(config)
    ours = initialized.model.state_dict()
    trunk = [k for k in state if k.startswith("backbone.")]
    assert trunk and all(torch.equal(ours[k], state[k]) for k in trunk)
    for k in ("classifier.0.weight", "classifier.1.weight", "classifier.1.bias", "classifier.1.running_mean",
              "classifier.1.running_var"):
        assert torch.equal(ours[k], state[k]), k
    assert ours["classifier.4.weight"].shape == (6, 512, 1, 1) and ours["classifier.4.bias"].shape == (6,)
    assert initialized.normalization == IMAGENET_RGB
    assert "re-initialised for the data set's 6 classes (the file has 21" in initialized.description
    assert "classifier.4" in initialized.description and "classifier.0, classifier.1" in initialized.description
    assert "its aux_classifier not used (model.aux is false)" in initialized.description

    # classes of the same name, under a class map, start from the file's rows; the others stay fresh
    fresh = ours["classifier.4.weight"].clone()
    class_map = {"disc": "bottle", "square": "tvmonitor", "triangle": None, "cross": None, "ring": None}
    fit_classes(initialized, SHAPES, "shapes", class_map=class_map)
    after = initialized.model.state_dict()
    voc = default_class_names(21)
    for data_index, voc_name in ((0, "background"), (1, "bottle"), (2, "tvmonitor")):
        assert torch.equal(after["classifier.4.weight"][data_index], state["classifier.4.weight"][voc.index(voc_name)])
        assert torch.equal(after["classifier.4.bias"][data_index], state["classifier.4.bias"][voc.index(voc_name)])
    assert torch.equal(after["classifier.4.weight"][3:], fresh[3:])


def test_a_resnet_checkpoint_for_a_vgg_run_names_the_backbone_to_train_with(tmp_path, torchvision_file):
    _, path = torchvision_file
    config = resolve_run_config(overrides={**settings(tmp_path, path), "model": {"backbone": "small",
                                                                                  "arch": "fcn32s"}})
    with pytest.raises(CheckpointError, match=r"holds a resnet50 FCN \(arch fcn\), but this run builds a small one \(arch fcn32s\); train with --backbone resnet50$"):
        initialize_model(config)


def test_batch_norm_statistics_are_frozen_for_trained_weights_under_small_batches(tmp_path, torchvision_file):
    _, path = torchvision_file
    model = initialize_model(resolve_run_config(overrides=settings(tmp_path))).model
    cases = [({"init_from": str(path), "batch_size": 2}, 1, True), ({"init_from": str(path), "batch_size": 4}, 2, False),
             ({"init_from": str(path), "batch_size": 8}, 1, False), ({"init_from": "", "batch_size": 2}, 1, False),
             ({"init_from": "", "freeze_batch_norm": "on"}, 1, True),
             ({"init_from": str(path), "freeze_batch_norm": "off"}, 1, False)]
    for train_settings, world, frozen in cases:
        config = resolve_run_config(overrides={**settings(tmp_path), "train": train_settings})
        choice = batch_norm_statistics(config, model, world)
        assert choice.freeze is frozen, (train_settings, world, choice.message)
        assert choice.message.startswith("BatchNorm statistics ")

    # frozen: a training-mode forward neither uses nor changes the batch's statistics
    bn = torch.nn.BatchNorm2d(3)
    bn.running_mean.fill_(0.5)
    assert freeze_batch_norm_statistics(torch.nn.Sequential(bn)) == 1 and isinstance(bn, FrozenStatisticsBatchNorm2d)
    torch.nn.Sequential(bn).train()
    x = torch.randn(2, 3, 4, 4)
    assert not bn.training and torch.allclose(bn(x), (x - 0.5) / (1 + bn.eps) ** 0.5)
    assert torch.equal(bn.running_mean, torch.full((3,), 0.5))


def test_two_updates_from_the_torchvision_file_give_a_6_class_checkpoint_that_predicts_and_resumes(
        tmp_path, torchvision_file, capsys):
    state, path = torchvision_file
    config = resolve_run_config(overrides={**settings(tmp_path, path), "model": {"backbone": "resnet50", "aux": True}})
    result = train(config, progress=False)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "re-initialised for the data set's 6 classes" in log and "aux_classifier.4" in log
    assert "aux_classifier trained: loss = main head's + 0.5 x the auxiliary head's" in log
    assert "BatchNorm statistics frozen" in log and "a batch of 2 images (under 8)" in log

    loaded = load_model(result.last_checkpoint)
    assert loaded.config.backbone == "resnet50" and loaded.config.arch == "fcn" and loaded.config.num_classes == 6
    assert loaded.class_names == SHAPES and loaded.normalization == IMAGENET_RGB
    weights = loaded.model.state_dict()
    assert weights["classifier.4.weight"].shape == (6, 512, 1, 1) and weights["aux_classifier.4.bias"].shape == (6,)
    # the auxiliary head is trained (torchvision's loss: main + 0.5 x aux): its 3x3 conv moved from the file's
    assert not torch.equal(weights["aux_classifier.0.weight"], state["aux_classifier.0.weight"])
    # frozen statistics: every running mean and variance is still the file's; the convolutions moved
    stats = [k for k in state if k.endswith(("running_mean", "running_var")) and not k.startswith("aux_")]
    assert stats and all(torch.equal(weights[k], state[k]) for k in stats)
    assert not torch.equal(weights["backbone.layer4.2.conv3.weight"], state["backbone.layer4.2.conv3.weight"])
    assert "temperature" in torch.load(result.last_checkpoint, weights_only=True)  # calibrated at the end

    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(image)
    assert main(["predict", str(result.last_checkpoint), str(image), "--out", str(tmp_path / "pred")]) == 0
    masks = [p for p in (tmp_path / "pred").rglob("*.png")]
    assert masks
    assert main(["eval", str(result.last_checkpoint), "--kind", "synthetic", "--limit", "1",
                 "--out", str(tmp_path / "eval.json")]) == 0
    assert "mean IU" in capsys.readouterr().out

    assert main(["train", "--resume", str(tmp_path / "run"), "--max-iter", "3", "--no-progress"]) == 0
    assert load_model(tmp_path / "run" / "checkpoints" / "last.pt").extra["iteration"] == 3


def test_classifier_weights_of_an_imagenet_resnet_start_the_trunk(tmp_path):
    from resnet_reference import random_classifier_state_dict

    state = random_classifier_state_dict("resnet50", seed=5)
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(state, path)
    config = resolve_run_config(overrides={**settings(tmp_path), "model": {"backbone": "resnet50", "num_classes": 6},
                                           "train": {"classifier_weights": str(path)}})
    initialized = initialize_model(config)
    ours = initialized.model.state_dict()
    assert all(torch.equal(ours[f"backbone.{k}"], v) for k, v in state.items() if not k.startswith("fc."))
    assert initialized.normalization == IMAGENET_RGB and "trunk initialised from the classifier" in initialized.description
    vgg = resolve_run_config(overrides={**settings(tmp_path), "model": {"backbone": "vgg16", "arch": "fcn32s"},
                                        "train": {"classifier_weights": str(path)}})
    with pytest.raises(CheckpointError, match="a ResNet classifier.*--backbone resnet50 or resnet101"):
        initialize_model(vgg)


def test_init_from_a_converted_imagenet_classifier_keeps_its_trunk(tmp_path):
    from resnet_reference import random_classifier_state_dict

    state = random_classifier_state_dict("resnet50", seed=7)
    torch.save(state, tmp_path / "resnet50.pth")
    assert main(["convert", "--from-classifier", "--num-classes", "6", str(tmp_path / "resnet50.pth"),
                 str(tmp_path / "r50-fcn.pt")]) == 0
    converted = load_model(tmp_path / "r50-fcn.pt").model.state_dict()
    config = resolve_run_config(overrides={**settings(tmp_path, tmp_path / "r50-fcn.pt"),
                                           "model": {"backbone": "resnet50", "num_classes": 6}})
    initialized = initialize_model(config)
    ours = initialized.model.state_dict()
    assert all(torch.equal(ours[f"backbone.{k}"], v) for k, v in state.items() if not k.startswith("fc."))
    assert [k for k in converted if not torch.equal(ours[k], converted[k])] == []  # 6 classes both: the head too
    assert "nothing re-initialised" in initialized.description


def test_init_from_a_resnet_file_without_a_backbone_builds_that_resnet(tmp_path, torchvision_file, caplog):
    from fcnseg.training.initialization import take_backbone_from_weights

    _, path = torchvision_file
    plain = {key: value for key, value in settings(tmp_path, path).items() if key != "model"}
    config = resolve_run_config(overrides=plain)
    assert config.model.backbone == "vgg16" and config.backbone_from_weights
    with caplog.at_level("INFO"):
        taken = take_backbone_from_weights(config)
    assert (taken.model.backbone, taken.model.arch) == ("resnet50", "fcn") and "backbone_from_weights" not in taken.to_dict()
    assert f"model.backbone resnet50 (arch fcn), from the --init-from file {path}" in caplog.text
    named = resolve_run_config(overrides={**plain, "model": {"backbone": "vgg16"}})
    assert not named.backbone_from_weights and take_backbone_from_weights(named) is named
    scratch = resolve_run_config(overrides={**plain, "train": {"init_from": ""}})
    assert take_backbone_from_weights(scratch) is scratch


def test_aux_weight_0_keeps_the_auxiliary_head_as_the_file_has_it(tmp_path, torchvision_file):
    state, path = torchvision_file
    config = resolve_run_config(overrides={**settings(tmp_path, path, aux_weight=0.0),
                                           "model": {"backbone": "resnet50", "aux": True}})
    result = train(config, progress=False)
    assert "aux_classifier kept as it starts: train.aux_weight is 0" in (tmp_path / "run" / "train.log").read_text()
    weights = load_model(result.last_checkpoint).model.state_dict()
    assert torch.equal(weights["aux_classifier.0.weight"], state["aux_classifier.0.weight"])
    assert not torch.equal(weights["classifier.0.weight"], state["classifier.0.weight"])


def test_a_negative_aux_weight_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="aux_weight must be >= 0, got -1"):
        resolve_run_config(overrides=settings(tmp_path, aux_weight=-1.0))


def test_training_forward_returns_the_main_and_auxiliary_logits_of_one_pass():
    from fcnseg.config import ModelConfig
    from fcnseg.models.resnet import ResNetFCN

    torch.manual_seed(0)
    net = ResNetFCN(ModelConfig(arch="fcn", backbone="resnet50", num_classes=4, aux=True))
    x = torch.randn(1, 3, 37, 45)
    net.eval()
    main_eval, aux_eval = net(x), net.aux_logits(x)
    net.train_aux = True
    assert torch.is_tensor(net(x))  # eval mode: the main head only, whatever train_aux says
    net.train()
    for m in net.modules():  # deterministic training mode: BatchNorm on its statistics, no dropout
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Dropout)):
            m.eval()
    main, aux = net(x)
    assert main.shape == aux.shape == (1, 4, 37, 45)
    torch.testing.assert_close(main, main_eval)
    torch.testing.assert_close(aux, aux_eval)


def test_a_step_on_main_and_auxiliary_logits_takes_main_plus_aux_weight_times_aux():
    from fcnseg.config import TrainConfig
    from fcnseg.precision import resolve_execution
    from fcnseg.training.loop import train_step

    class TwoOutputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.main = torch.nn.Parameter(torch.randn(2, 3, 5, 6))
            self.aux = torch.nn.Parameter(torch.randn(2, 3, 5, 6))

        def forward(self, x):
            return self.main + 0 * x.sum(), self.aux + 0 * x.sum()

    net = TwoOutputs()
    masks = torch.randint(0, 3, (2, 5, 6))
    masks[0, 0, :] = 255  # the ignore label, left out of both terms
    config = TrainConfig(optimizer="sgd", lr=0.0, batch_size=2, iter_size=1, aux_weight=0.4, grad_clip=0.0)
    plan = resolve_execution(torch.device("cpu"), "fp32", "contiguous", purpose="training")
    step = train_step(net, torch.optim.SGD(net.parameters(), lr=0.0), torch.amp.GradScaler("cpu", enabled=False),
                      iter([(torch.zeros(2, 3, 5, 6), masks)]), config, 0, plan)
    # independent: the mean of -log softmax at the true class over labelled pixels, by hand
    def cross_entropy(logits):
        log_p = logits.detach().log_softmax(1).permute(0, 2, 3, 1).reshape(-1, 3)
        labels = masks.reshape(-1)
        kept = labels != 255
        return -log_p[kept].gather(1, labels[kept][:, None]).mean().item()
    assert step.loss == pytest.approx(cross_entropy(net.main) + 0.4 * cross_entropy(net.aux), rel=1e-6)
    assert net.aux.grad is not None and net.aux.grad.abs().sum() > 0

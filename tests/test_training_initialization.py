"""Where a run's weights start, each start's checks, and the normalisation the weights imply."""

import pytest
import torch

from fcnseg.weights.checkpoint import FORMAT, FORMAT_VERSION, save_checkpoint
from fcnseg.config import ModelConfig, resolve_run_config
from fcnseg.data.normalization import IMAGENET_RGB, PAPER_BGR
from fcnseg.errors import CheckpointError, ConfigError
from fcnseg.models import build_model
from fcnseg.training.initialization import initialize_model, resolve_normalization


def config(arch="fcn16s", backbone="small", **train):
    return resolve_run_config(overrides={
        "model": {"arch": arch, "backbone": backbone, "num_classes": 3},
        "data": {"dataset": "synthetic", "normalization": "auto"},
        "train": train,
    })


def coarse_checkpoint(path, normalization=PAPER_BGR):
    torch.manual_seed(1)
    model = build_model(ModelConfig(arch="fcn32s", backbone="small", num_classes=3))
    with torch.no_grad():
        model.score_fr.weight.normal_()
    save_checkpoint(path, model, model.config, ["a", "b", "c"], normalization)
    return model


def test_scratch_implies_no_normalisation_and_auto_follows_the_backbone():
    started = initialize_model(config())
    assert started.normalization is None and "scratch" in started.description
    assert resolve_normalization(config(), None) == IMAGENET_RGB
    assert resolve_normalization(config(arch="fcn32s", backbone="vgg16"), None) == PAPER_BGR
    assert resolve_normalization(config(), PAPER_BGR) == PAPER_BGR  # the weights' own wins over the backbone's


def test_init_from_copies_the_coarser_net_and_brings_its_normalisation(tmp_path):
    coarse = coarse_checkpoint(tmp_path / "32s.pt", normalization=PAPER_BGR)
    started = initialize_model(config(init_from=str(tmp_path / "32s.pt")))
    assert torch.equal(started.model.score_fr.weight, coarse.score_fr.weight)
    assert started.normalization == PAPER_BGR
    assert "new layers keep their zero/bilinear init: score_pool4.weight, score_pool4.bias" in started.description


def test_init_from_a_checkpoint_with_no_fitting_layer_is_refused(tmp_path):
    junk = {"format": FORMAT, "version": FORMAT_VERSION, "model_config": {}, "class_names": [],
            "normalization": PAPER_BGR.to_dict(), "state_dict": {"other.weight": torch.zeros(2)}}
    torch.save(junk, tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match=r"junk\.pt: no layer of it fits a fcn16s on small"):
        initialize_model(config(init_from=str(tmp_path / "junk.pt")))


def test_classifier_weights_need_a_vgg16_or_resnet_trunk(tmp_path):
    with pytest.raises(ConfigError, match=r"only a VGG16 or ResNet-50/101 trunk can start from it, but model.backbone is 'small'"):
        initialize_model(config(classifier_weights=str(tmp_path / "vgg16.pth")))


def test_a_resume_must_ask_for_the_checkpoints_model(tmp_path):
    coarse_checkpoint(tmp_path / "last.pt")
    checkpoint = torch.load(tmp_path / "last.pt", weights_only=True)
    with pytest.raises(ConfigError, match=r"last\.pt: the checkpoint's model is .*fcn32s.* but the config asks for .*fcn16s"):
        initialize_model(config(), checkpoint, tmp_path / "last.pt")
    resumed = initialize_model(config(arch="fcn32s"), checkpoint, tmp_path / "last.pt")
    assert torch.equal(resumed.model.score_fr.weight, checkpoint["state_dict"]["score_fr.weight"])
    assert resumed.normalization == PAPER_BGR

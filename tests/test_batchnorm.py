"""The small net's BatchNorm: folded exactly into the convolutions, still fully convolutional, synchronised under DDP."""

import pytest
import torch
from torch import nn

from fcnseg.config import ModelConfig
from fcnseg.errors import ConfigError
from fcnseg.models import build_model
from fcnseg.models.batchnorm import GroupBatchNorm2d, fold_batch_norm, has_batch_norm, synchronise_batch_norm
from fcnseg.data.normalization import IMAGENET_RGB
from fcnseg.inference.predictor import Predictor


def trained_bn_model(arch="fcn8s", seed=0):
    """A small BN net whose BatchNorm statistics and affine parameters are far from their initial values."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch=arch, backbone="small", num_classes=4, batch_norm=True, dropout=0.0))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.3, 3.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
        if isinstance(m, nn.Conv2d) and m.weight.abs().sum() == 0:  # zero-initialised score layers
            m.weight.data.normal_(0, 0.05)
    return model.eval()


def test_bn_layers_follow_every_trunk_conv_and_the_convs_lose_their_bias():
    model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=3, batch_norm=True))
    names = [n for n, _ in model.backbone.named_children()]
    convs = [n for n in names if n.startswith("conv")]
    for conv in convs:
        assert names[names.index(conv) + 1] == "bn" + conv[4:]
        assert getattr(model.backbone, conv).bias is None
    assert model.offsets == build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=3)).offsets


def test_batch_norm_is_refused_on_the_reference_backbones():
    with pytest.raises(ConfigError, match="small backbone only"):
        ModelConfig(backbone="vgg16", batch_norm=True).validate()


@pytest.mark.parametrize("arch", ["fcn32s", "fcn8s"])
def test_folded_model_gives_the_eval_scores(arch):
    model = trained_bn_model(arch)
    folded = fold_batch_norm(model)
    assert has_batch_norm(model) and not has_batch_norm(folded)
    assert folded is not model and model.backbone.bn1_1.running_var.abs().sum() > 0  # original untouched
    x = torch.randn(2, 3, 75, 90)
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert expected.abs().max() > 1e-2
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_fold_leaves_a_model_without_batch_norm_alone():
    model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=3))
    assert fold_batch_norm(model) is model


def test_predictor_runs_the_folded_net_with_the_same_labels():
    model = trained_bn_model()
    image = (torch.rand(61, 83, 3) * 255).to(torch.uint8).numpy()
    predictor = Predictor(model, IMAGENET_RGB, precision="fp32", device="cpu")
    assert not has_batch_norm(predictor.model)
    x = IMAGENET_RGB.image_to_tensor(image)[None]
    with torch.no_grad():
        expected = model(x)[0].argmax(0)
    got = torch.from_numpy(predictor.predict(image).labels)
    assert (got == expected).float().mean() > 0.999


def test_group_batch_norm_without_a_process_group_is_batch_norm():
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(5)
    synced = synchronise_batch_norm(nn.Sequential(nn.BatchNorm2d(5)))[0]
    assert isinstance(synced, GroupBatchNorm2d)
    x = torch.randn(3, 5, 7, 7) * 2 + 1
    torch.testing.assert_close(synced(x), plain(x))
    torch.testing.assert_close(synced.running_var, plain.running_var)

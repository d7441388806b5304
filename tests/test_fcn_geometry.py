"""Crop offsets, output sizes and gradient coverage of every FCN head on every trunk."""

import pytest
import torch

from fcnseg.config import ARCHES, ModelConfig
from fcnseg.errors import ConfigError
from fcnseg.models import build_model
from fcnseg.models.geometry import receptive_fields
from fcnseg.models.heads import ARCH_HEADS, POOL4, Head, match_arch

# The offsets typed into the reference nets (fcn.berkeleyvision.org voc-fcn*/ and pytorch-fcn).
REFERENCE_OFFSETS = {
    ("vgg16", "fcn32s"): {"score": 19},
    ("vgg16", "fcn16s"): {"score_pool4c": 5, "score": 27},
    ("vgg16", "fcn8s"): {"score_pool4c": 5, "score_pool3c": 9, "score": 31},
    ("vgg16", "fcn8s-atonce"): {"score_pool4c": 5, "score_pool3c": 9, "score": 31},
    ("alexnet", "fcn32s"): {"score": 18},
}


@pytest.mark.parametrize("backbone,arch", list(REFERENCE_OFFSETS))
def test_derived_offsets_match_the_reference_nets(backbone, arch):
    with torch.device("meta"):  # geometry only: no weights needed
        model = build_model(ModelConfig(arch=arch, backbone=backbone, num_classes=3))
    assert model.offsets == REFERENCE_OFFSETS[(backbone, arch)]


@pytest.mark.parametrize("backbone", ["vgg16", "alexnet", "small"])
@pytest.mark.parametrize("pad", [100, 120])
def test_final_offset_agrees_with_receptive_field_centres(backbone, pad):
    """An independent route: the centre of score_fr pixel i sits at input x = start + stride * i
    (receptive-field recursion); the 32x deconvolution puts it at 32 * i + (k - 1) / 2."""
    with torch.device("meta"):
        model = build_model(ModelConfig(arch="fcn32s", backbone=backbone, num_classes=2, pad=pad))
    rf = dict(receptive_fields(model.backbone.named_children()))["fc6"]
    assert rf.stride == 32
    kernel = model.upscore.kernel_size[0]
    assert model.offsets["score"] == round((kernel - 1) / 2 - rf.start)


def _offsets_from_receptive_fields(model) -> dict[str, int]:
    """Every crop offset from receptive-field centres, with the transposed-convolution arithmetic written out.

    A map whose pixel ``i`` is centred on input ``x = start + stride * i`` (the receptive-field recursion)
    and is upsampled by a transposed convolution (kernel ``k``, stride ``f``, no padding) gives a map
    centred on ``start - stride * (k - 1) / (2 f)`` with stride ``stride / f``. A skip of (start ``s``,
    stride ``S``) then aligns at offset ``(start' - s) / S``, and the last map with the input at ``-start'``.
    """
    rf = dict(receptive_fields(model.backbone.named_children()))
    start, stride = rf["fc7"].start, rf["fc7"].stride  # fc7 and the 1x1 score_fr keep fc6's centres

    def upsample(layer):
        nonlocal start, stride
        k, f = layer.kernel_size[0], layer.stride[0]
        start, stride = start - stride * (k - 1) / (2 * f), stride / f

    offsets = {}
    arch = model.config.arch.removesuffix("-atonce")
    skips = {"fcn32s": [], "fcn16s": [("pool4", "upscore2")],
             "fcn8s": [("pool4", "upscore2"), ("pool3", "upscore_pool4")]}
    for tap, up in skips[arch]:
        upsample(getattr(model, up))
        assert stride == rf[tap].stride
        offsets[f"score_{tap}c"] = (start - rf[tap].start) / rf[tap].stride
    upsample(getattr(model, {"fcn32s": "upscore", "fcn16s": "upscore16", "fcn8s": "upscore8"}[arch]))
    assert stride == 1
    offsets["score"] = -start
    return offsets


@pytest.mark.parametrize("arch", ["fcn16s", "fcn8s", "fcn8s-atonce"])
@pytest.mark.parametrize("backbone", ["vgg16", "small"])
@pytest.mark.parametrize("pad", [100, 120])
def test_every_crop_offset_agrees_with_receptive_field_centres(arch, backbone, pad):
    with torch.device("meta"):
        model = build_model(ModelConfig(arch=arch, backbone=backbone, num_classes=2, pad=pad))
    assert model.offsets == _offsets_from_receptive_fields(model)


# The head keys of the reference nets (voc-fcn*/net.py; pytorch-fcn uses the same), in state-dict order.
REFERENCE_HEAD_KEYS = {
    "fcn32s": ["score_fr.weight", "score_fr.bias", "upscore.weight"],
    "fcn16s": ["score_fr.weight", "score_fr.bias", "score_pool4.weight", "score_pool4.bias", "upscore2.weight",
               "upscore16.weight"],
    "fcn8s": ["score_fr.weight", "score_fr.bias", "score_pool4.weight", "score_pool4.bias", "score_pool3.weight",
              "score_pool3.bias", "upscore2.weight", "upscore_pool4.weight", "upscore8.weight"],
}
REFERENCE_HEAD_KEYS["fcn8s-atonce"] = REFERENCE_HEAD_KEYS["fcn8s"]


@pytest.mark.parametrize("arch", ARCHES)
def test_head_keys_are_the_reference_layer_names(arch):
    with torch.device("meta"):
        model = build_model(ModelConfig(arch=arch, backbone="small", num_classes=2))
    keys = [k for k in model.state_dict() if not k.startswith("backbone.")]
    assert keys == REFERENCE_HEAD_KEYS[arch]


def test_the_head_table_describes_every_arch():
    assert tuple(ARCH_HEADS) == ARCHES


@pytest.mark.parametrize("arch", ARCHES)
def test_an_arch_is_read_back_from_its_layer_names(arch):
    names = {k.split(".")[0] for k in REFERENCE_HEAD_KEYS[arch]}
    # Learned weights alone cannot tell the at-once net; its reference Scale layers can.
    assert match_arch(names) == ("fcn8s" if arch == "fcn8s-atonce" else arch)
    if arch == "fcn8s-atonce":
        assert match_arch(names | {"scale_pool4", "scale_pool3"}) == "fcn8s-atonce"
    assert match_arch({"conv1_1", "fc7", "fc8"}) is None


def test_a_suffixed_head_has_the_names_of_the_siftflow_reference_net():
    # siftflow-fcn16s/net.py: two heads on one trunk, every layer name ending in _sem (or _geo).
    head = Head(skips=(POOL4,), suffix="_sem")
    assert head.score_layers == ("score_fr_sem", "score_pool4_sem")
    assert head.upsampling_layers == ("upscore2_sem", "upscore16_sem")
    assert [(c.name, c.bigger, c.reference) for c in head.crops] == [
        ("score_pool4_semc", "score_pool4_sem", "upscore2_sem"), ("score_sem", "upscore16_sem", "data")]


def test_receptive_field_of_vgg16_matches_published_sizes():
    with torch.device("meta"):
            model = build_model(ModelConfig(arch="fcn32s", backbone="vgg16", num_classes=2))
    rf = dict(receptive_fields(model.backbone.named_children()))
    # VGG16: pool5 sees 212 px, fc6 (7x7 on pool5) 404 px; output stride 32.
    assert rf["pool5"].size == 212 and rf["pool5"].stride == 32
    assert rf["fc6"].size == 404
    assert rf["pool3"].stride == 8 and rf["pool4"].stride == 16


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"])
def test_small_net_output_matches_input_size_for_many_sizes(arch):
    model = build_model(ModelConfig(arch=arch, backbone="small", num_classes=4)).eval()
    sizes = [(1, 1), (1, 2), (2, 1), (3, 5), (7, 7), (16, 17), (31, 33), (32, 32), (47, 64), (63, 95), (100, 101), (129, 77)]
    with torch.no_grad():
        for h, w in sizes:
            y = model(torch.randn(1, 3, h, w))
            assert y.shape == (1, 4, h, w), (h, w)


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"])
def test_vgg16_output_matches_input_size(arch):
    model = build_model(ModelConfig(arch=arch, backbone="vgg16", num_classes=3)).eval()
    with torch.no_grad():
        for h, w in [(1, 1), (37, 50)]:
            assert model(torch.randn(1, 3, h, w)).shape == (1, 3, h, w)


def test_alexnet_output_matches_input_size():
    model = build_model(ModelConfig(arch="fcn32s", backbone="alexnet", num_classes=3)).eval()
    with torch.no_grad():
        for h, w in [(1, 1), (33, 64), (65, 31)]:
            assert model(torch.randn(1, 3, h, w)).shape == (1, 3, h, w)


def test_alexnet_has_no_skip_heads():
    with pytest.raises(ConfigError, match="alexnet|AlexNet"):
        build_model(ModelConfig(arch="fcn8s", backbone="alexnet"))


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"])
@pytest.mark.parametrize("learn_upsampling", [False, True])
def test_one_backward_reaches_every_trainable_parameter(arch, learn_upsampling):
    model = build_model(ModelConfig(arch=arch, backbone="small", num_classes=3, learn_upsampling=learn_upsampling))
    model.train()
    target = torch.randint(0, 3, (2, 45, 38))
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 45, 38)), target)
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
        else:
            assert name.split(".")[0].startswith("upscore") and not learn_upsampling, name
    upsampling = [p for n, p in model.named_parameters() if n.startswith("upscore")]
    assert all(p.requires_grad == learn_upsampling for p in upsampling)
    # score layers start at zero, so only they get a non-zero gradient on the first step
    assert model.score_fr.weight.grad.abs().sum() > 0


def test_score_layers_start_at_zero():
    model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=5))
    for name in ("score_fr", "score_pool4", "score_pool3"):
        assert torch.count_nonzero(getattr(model, name).weight) == 0
    with torch.no_grad():
        assert torch.count_nonzero(model.eval()(torch.randn(1, 3, 20, 20))) == 0


def test_atonce_scales_the_skips_before_scoring():
    torch.manual_seed(0)
    plain = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=3)).eval()
    atonce = build_model(ModelConfig(arch="fcn8s-atonce", backbone="small", num_classes=3)).eval()
    for p in plain.parameters():
        torch.nn.init.normal_(p, std=0.05)
    atonce.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        feats = plain.backbone(x)
        # Undo the at-once scaling by scaling the score weights up: the outputs must then agree.
        atonce.score_pool4.weight.mul_(100.0)
        atonce.score_pool3.weight.mul_(10000.0)
        torch.testing.assert_close(atonce(x), plain(x), rtol=1e-4, atol=1e-4)
    assert set(feats) == {"pool3", "pool4", "drop7"}


def test_negative_crop_offset_is_a_config_error():
    with pytest.raises(ConfigError, match="pad"):
        build_model(ModelConfig(arch="fcn32s", backbone="vgg16", num_classes=2, pad=10))

"""FC -> conv equivalence, trunk transplant from a VGG16 classifier, the pytorch-fcn and torchvision layouts."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.weights.checkpoint import fcn_from_classifier, load_model
from fcnseg.config import ModelConfig
from fcnseg.models import VGG16Classifier, build_backbone, build_model
from fcnseg.models.surgery import convolutionalize, transplant
from fcnseg.weights.pytorch_fcn import fcnseg_to_torchfcn, torchfcn_to_fcnseg
from fcnseg.weights.torchvision_vgg import torchvision_vgg16_to_fcnseg


def unpadded_classifier() -> nn.Sequential:
    """A tiny classifier whose convolutions do not pad: the setting of the paper's sliding-window argument."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),  # output stride 4; 18x18 input -> 16 x 3 x 3
        nn.Flatten(),
        nn.Linear(16 * 3 * 3, 32),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(32, 5),
    ).eval()


def test_convolutionalized_classifier_equals_logits_on_native_size():
    clf = unpadded_classifier()
    conv = convolutionalize(clf, (18, 18)).eval()
    x = torch.randn(4, 3, 18, 18)
    with torch.no_grad():
        torch.testing.assert_close(conv(x)[:, :, 0, 0], clf(x), atol=1e-5, rtol=1e-5)
    assert [type(m) for m in conv if isinstance(m, (nn.Linear, nn.Flatten))] == []
    assert conv[6].weight.shape == (32, 16, 3, 3) and conv[9].weight.shape == (5, 32, 1, 1)


def test_each_output_position_is_the_classifier_on_its_window():
    clf = unpadded_classifier()
    conv = convolutionalize(clf, (18, 18)).eval()
    x = torch.randn(1, 3, 18 + 4 * 5, 18 + 4 * 3)  # 6 x 4 positions at stride 4
    with torch.no_grad():
        dense = conv(x)
        assert dense.shape == (1, 5, 6, 4)
        for i in range(6):
            for j in range(4):
                window = x[:, :, 4 * i : 4 * i + 18, 4 * j : 4 * j + 18]
                torch.testing.assert_close(dense[:, :, i, j], clf(window), atol=1e-5, rtol=1e-5)


def test_convolutionalized_vgg16_equals_classifier_on_224():
    torch.manual_seed(0)
    clf = VGG16Classifier(num_classes=10).eval()
    conv = convolutionalize(clf.as_sequential(), (224, 224)).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(conv(x)[:, :, 0, 0], clf(x), atol=1e-4, rtol=1e-4)
        # A larger input gives a grid of scores, one per 32-pixel step.
        assert conv(torch.randn(1, 3, 288, 256)).shape == (1, 10, 3, 2)
    fc6 = [m for m in conv if isinstance(m, nn.Conv2d)][13]
    assert fc6.weight.shape == (4096, 512, 7, 7)


def test_classifier_is_left_untouched():
    clf = unpadded_classifier()
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    convolutionalize(clf, (18, 18))
    assert all(torch.equal(before[k], v) for k, v in clf.state_dict().items())


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    torch.manual_seed(1)
    clf = VGG16Classifier(num_classes=1000).eval()
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(clf.state_dict(), path)
    return clf, path


def test_fcn_from_classifier_transplants_fc6_fc7_as_convolutions(vgg16_file):
    clf, path = vgg16_file
    loaded = fcn_from_classifier(path, arch="fcn32s", num_classes=21)
    model = loaded.model.eval()
    assert loaded.normalization.name == "imagenet_rgb"
    assert torch.count_nonzero(model.score_fr.weight) == 0
    # The transplanted trunk, run with VGG's own padding on a 224 image, reproduces the classifier's fc7.
    trunk_224 = build_backbone("vgg16", pad=1).eval()
    trunk_224.load_state_dict({k.removeprefix("backbone."): v for k, v in model.state_dict().items() if k.startswith("backbone.")})
    fc7 = {}
    clf.classifier[4].register_forward_hook(lambda m, i, o: fc7.setdefault("clf", o))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        clf(x)
        ours = trunk_224(x)["drop7"]
    assert ours.shape == (1, 4096, 1, 1)
    torch.testing.assert_close(ours[:, :, 0, 0], fc7["clf"], atol=1e-4, rtol=1e-4)


def test_torchvision_layout_maps_every_conv():
    sd = VGG16Classifier().state_dict()
    ours = torchvision_vgg16_to_fcnseg(sd)
    assert torch.equal(ours["backbone.conv1_1.weight"], sd["features.0.weight"])
    assert torch.equal(ours["backbone.conv5_3.bias"], sd["features.28.bias"])
    # fc6 row r, input (c, y, x) is Linear column c*49 + y*7 + x
    w = sd["classifier.0.weight"]
    assert ours["backbone.fc6.weight"][7, 300, 2, 5] == w[7, 300 * 49 + 2 * 7 + 5]
    assert ours["classifier.fc8.weight"].shape == (1000, 4096, 1, 1)


# --- pytorch-fcn ---------------------------------------------------------------------------------

def torchfcn_forward(sd: dict, x: torch.Tensor, arch: str) -> torch.Tensor:
    """pytorch-fcn's forward written out with functional ops and its typed-in offsets (19; 5, 27; 5, 9, 31)."""
    h = x
    stages = [(1, 2), (2, 2), (3, 3), (4, 3), (5, 3)]
    pools = {}
    for s, n in stages:
        for i in range(1, n + 1):
            name = f"conv{s}_{i}"
            h = F.relu(F.conv2d(h, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=100 if name == "conv1_1" else 1))
        h = F.max_pool2d(h, 2, stride=2, ceil_mode=True)
        pools[s] = h
    h = F.relu(F.conv2d(h, sd["fc6.weight"], sd["fc6.bias"]))
    h = F.relu(F.conv2d(h, sd["fc7.weight"], sd["fc7.bias"]))
    h = F.conv2d(h, sd["score_fr.weight"], sd["score_fr.bias"])
    H, W = x.shape[-2:]
    if arch == "fcn32s":
        h = F.conv_transpose2d(h, sd["upscore.weight"], stride=32)
        return h[:, :, 19 : 19 + H, 19 : 19 + W]
    s4, s3 = (0.01, 0.0001) if arch == "fcn8s-atonce" else (1.0, 1.0)
    up2 = F.conv_transpose2d(h, sd["upscore2.weight"], stride=2)
    p4 = F.conv2d(pools[4] * s4, sd["score_pool4.weight"], sd["score_pool4.bias"])
    h = up2 + p4[:, :, 5 : 5 + up2.shape[2], 5 : 5 + up2.shape[3]]
    if arch == "fcn16s":
        h = F.conv_transpose2d(h, sd["upscore16.weight"], stride=16)
        return h[:, :, 27 : 27 + H, 27 : 27 + W]
    up4 = F.conv_transpose2d(h, sd["upscore_pool4.weight"], stride=2)
    p3 = F.conv2d(pools[3] * s3, sd["score_pool3.weight"], sd["score_pool3.bias"])
    h = up4 + p3[:, :, 9 : 9 + up4.shape[2], 9 : 9 + up4.shape[3]]
    h = F.conv_transpose2d(h, sd["upscore8.weight"], stride=8)
    return h[:, :, 31 : 31 + H, 31 : 31 + W]


def randomised(model: nn.Module) -> nn.Module:
    """Give every weight (score layers and upsampling included) a non-trivial random value."""
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (2.0 / p[0].numel()) ** 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def vgg16_fcns():
    """One randomised VGG16 FCN per head (built once: VGG16 is large)."""
    return {arch: randomised(build_model(ModelConfig(arch=arch, backbone="vgg16", num_classes=6))) for arch in
            ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce")}


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"])
def test_our_nets_compute_what_pytorch_fcn_computes(vgg16_fcns, arch):
    model = vgg16_fcns[arch]
    theirs = fcnseg_to_torchfcn(model.state_dict())
    assert "conv1_1.weight" in theirs and "score_fr.weight" in theirs and "fc6.weight" in theirs
    x = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        torch.testing.assert_close(model(x), torchfcn_forward(theirs, x, arch), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "arch,torchfcn_class,wrapped", [("fcn16s", "FCN16s", True), ("fcn8s-atonce", "FCN8sAtOnce", True), ("fcn8s-atonce", None, False)]
)
def test_torchfcn_checkpoint_loads_with_identical_outputs(tmp_path, vgg16_fcns, arch, torchfcn_class, wrapped):
    model = vgg16_fcns[arch]
    theirs = fcnseg_to_torchfcn(model.state_dict())
    path = tmp_path / "weights.pth"
    if wrapped:  # pytorch-fcn's trainer wraps the weights and names the class
        torch.save({"epoch": 3, "iteration": 100, "arch": torchfcn_class, "model_state_dict": theirs}, path)
        loaded = load_model(path)
    else:  # its released files are raw state dicts: FCN-8s at-once must be named
        torch.save(theirs, path)
        assert load_model(path).config.arch == "fcn8s"
        loaded = load_model(path, arch=arch)
    assert loaded.config.arch == arch and loaded.config.num_classes == 6
    assert loaded.normalization.name == "paper_bgr" and loaded.source == "torchfcn"
    x = torch.randn(1, 3, 33, 40)
    with torch.no_grad():
        assert (loaded.model(x) - model(x)).abs().max() < 1e-4


def test_torchfcn_key_mapping_round_trips():
    sd = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=3)).state_dict()
    assert torchfcn_to_fcnseg(fcnseg_to_torchfcn(sd)).keys() == sd.keys()


def test_staged_transplant_copies_trunk_and_shared_scores_only():
    coarse = randomised(build_model(ModelConfig(arch="fcn32s", backbone="small", num_classes=3)))
    fine = build_model(ModelConfig(arch="fcn16s", backbone="small", num_classes=3))
    copied = transplant(fine, coarse.state_dict())
    assert "score_fr.weight" in copied and "backbone.fc7.weight" in copied
    assert "upscore.weight" not in copied  # the 32x deconvolution has no place in FCN-16s
    assert torch.equal(fine.score_fr.weight, coarse.score_fr.weight)
    assert torch.count_nonzero(fine.score_pool4.weight) == 0


def test_convolutionalize_keeps_the_classifier_dtype():
    clf = unpadded_classifier().double()
    conv = convolutionalize(clf, (18, 18)).eval()
    x = torch.randn(2, 3, 18, 18, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(conv(x)[:, :, 0, 0], clf(x), atol=1e-12, rtol=1e-12)


def test_models_import_neither_data_nor_weights():
    import subprocess
    import sys

    code = ("import sys, pkgutil, importlib, fcnseg.models as models; "
            "[importlib.import_module(f'fcnseg.models.{m.name}') for m in pkgutil.iter_modules(models.__path__)]; "
            "print(sorted(m for m in sys.modules if m.startswith(('fcnseg.data', 'fcnseg.weights'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

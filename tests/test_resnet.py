"""torchvision's FCN-ResNet50/101: the net against an independent functional forward, its files, and every inference path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fcnseg.cli import main
from fcnseg.config import ModelConfig
from fcnseg.data.classes import VOC_CLASSES
from fcnseg.data.normalization import IMAGENET_RGB
from fcnseg.errors import CheckpointError, ConfigError
from fcnseg.inference.memory import estimate_forward
from fcnseg.inference.predictor import Predictor
from fcnseg.inference.tiling import OUTPUT_STRIDE, context_margin
from fcnseg.models import build_model
from fcnseg.models.batchnorm import fold_batch_norm, has_batch_norm
from fcnseg.models.complexity import complexity
from fcnseg.models.geometry import receptive_fields
from fcnseg.models.resnet import ResNetFCN
from fcnseg.weights.checkpoint import fcn_from_classifier, load_model, save_checkpoint
from fcnseg.weights.torchvision_resnet import fcn_config

from resnet_reference import functional_forward, random_classifier_state_dict, random_fcn_state_dict  # noqa: E402


def resnet_fcn(depth: str = "resnet50", aux: bool = True, num_classes: int = 21, seed: int = 0) -> ResNetFCN:
    """Our net holding random weights in torchvision's layout (loaded strictly: the keys must be torchvision's)."""
    model = build_model(ModelConfig(arch="fcn", backbone=depth, num_classes=num_classes, aux=aux))
    model.load_state_dict(random_fcn_state_dict(depth, num_classes, aux, seed), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def resnet50() -> ResNetFCN:
    """One ResNet-50 FCN with random torchvision-layout weights and the auxiliary head, shared by the inference tests."""
    return resnet_fcn("resnet50", aux=True, seed=6)


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


@pytest.mark.parametrize(
    "depth, aux, size",
    [("resnet50", True, (33, 47)), ("resnet50", False, (64, 64)), ("resnet50", True, (1, 1)),
     ("resnet101", True, (33, 47)), ("resnet101", False, (17, 8))],
)
def test_resnet_fcn_equals_torchvision_functional_forward(depth, aux, size, one_thread):
    sd = random_fcn_state_dict(depth, aux=aux, seed=1)
    model = build_model(ModelConfig(arch="fcn", backbone=depth, aux=aux))
    model.load_state_dict(sd, strict=True)
    model.eval()
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = functional_forward(sd, x, depth)
        found = model(x)
        assert found.shape == (2, 21, *size)  # logits at the input size, odd sizes too
        assert close(found, expected["out"])
        if aux:
            assert close(model.aux_logits(x), expected["aux"])
        else:
            assert "aux" not in expected and not hasattr(model, "aux_classifier")
            with pytest.raises(ValueError, match="without the auxiliary head"):
                model.aux_logits(x)


def test_dilated_stages_follow_torchvisions_first_block_rule():
    trunk = build_model(ModelConfig(arch="fcn", backbone="resnet101")).backbone
    assert [len(getattr(trunk, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]
    geometry = {name: (m.stride[0], m.dilation[0], m.padding[0]) for name, m in trunk.named_modules()
                if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)}
    assert geometry["layer2.0.conv2"] == (2, 1, 1)
    assert geometry["layer3.0.conv2"] == (1, 1, 1) and geometry["layer3.22.conv2"] == (1, 2, 2)
    assert geometry["layer4.0.conv2"] == (1, 2, 2) and geometry["layer4.2.conv2"] == (1, 4, 4)
    assert trunk.layer3[0].downsample[0].stride == (1, 1) and trunk.layer2[0].downsample[0].stride == (2, 2)


def test_parameter_counts_are_torchvisions():
    # torchvision's documented num_params of fcn_resnet50 / fcn_resnet101 (with the auxiliary head)
    for depth, expected in (("resnet50", 35_322_218), ("resnet101", 54_314_346)):
        with torch.device("meta"):
            model = build_model(ModelConfig(arch="fcn", backbone=depth, aux=True))
        assert sum(p.numel() for p in model.parameters()) == expected


def test_one_backward_reaches_every_trainable_parameter(one_thread):
    model = build_model(ModelConfig(arch="fcn", backbone="resnet50", num_classes=3)).train()
    x = torch.randn(2, 3, 40, 48)
    loss = nn.functional.cross_entropy(model(x), torch.randint(0, 3, (2, 40, 48)))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_config_keeps_resnets_and_vgg_settings_apart():
    with pytest.raises(ConfigError, match="arch 'fcn'"):
        ModelConfig(arch="fcn8s", backbone="resnet50").validate()
    with pytest.raises(ConfigError, match="ResNet backbones"):
        ModelConfig(arch="fcn8s", backbone="vgg16", aux=True).validate()
    with pytest.raises(ConfigError, match="batch_norm"):
        ModelConfig(arch="fcn", backbone="resnet101", batch_norm=True).validate()
    with pytest.raises(ConfigError, match="arch 'fcn' is not one of"):
        ModelConfig(arch="fcn", backbone="vgg16").validate()


# --- files -------------------------------------------------------------------------------------------


def test_load_model_reads_a_torchvision_fcn_file(tmp_path, one_thread):
    sd = random_fcn_state_dict("resnet50", aux=True, seed=3, batch_counts=False)  # as files saved by old torch
    path = tmp_path / "fcn_resnet50_coco-1167a1af.pth"
    torch.save(sd, path)
    loaded = load_model(path)
    cfg = loaded.config
    assert (cfg.arch, cfg.backbone, cfg.num_classes, cfg.aux) == ("fcn", "resnet50", 21, True)
    assert loaded.normalization == IMAGENET_RGB and loaded.class_names == list(VOC_CLASSES)
    assert not loaded.model.training
    x = torch.randn(1, 3, 45, 31)
    with torch.no_grad():
        assert close(loaded.model(x), functional_forward(sd, x)["out"])


def test_depth_aux_and_classes_are_read_from_the_keys():
    sd = random_fcn_state_dict("resnet101", num_classes=5, aux=False)
    cfg = fcn_config(sd, "fcn_resnet101_coco-7ecb50ca.pth")
    assert (cfg.backbone, cfg.num_classes, cfg.aux) == ("resnet101", 5, False)


def test_a_wrong_depth_file_is_refused_naming_the_blocks_found(tmp_path):
    # ResNet-101's keys with layer3 cut to 5 blocks: neither depth
    sd = {k: v for k, v in random_fcn_state_dict("resnet101", aux=False).items()
          if not any(k.startswith(f"backbone.layer3.{i}.") for i in range(5, 23))}
    path = tmp_path / "fcn_resnet101_coco-7ecb50ca.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"layer1..layer4 have \[3, 4, 5, 3\] blocks \(layer3: 5\)") as e:
        load_model(path)
    assert str(path) in str(e.value) and "resnet101 has [3, 4, 23, 3]" in str(e.value)


def test_truncated_files_are_refused_saying_what_is_missing(tmp_path):
    sd = random_fcn_state_dict("resnet50", aux=False)
    no_scores = tmp_path / "no_scores.pth"
    torch.save({k: v for k, v in sd.items() if not k.startswith("classifier.4.")}, no_scores)
    with pytest.raises(CheckpointError, match="no classifier.4.weight"):
        load_model(no_scores)
    no_bn = tmp_path / "no_bn.pth"
    torch.save({k: v for k, v in sd.items() if not k.startswith("backbone.layer2.1.bn2.")}, no_bn)
    with pytest.raises(CheckpointError, match=r"missing 5 keys: backbone.layer2.1.bn2"):
        load_model(no_bn)
    whole = tmp_path / "whole.pth"
    torch.save(sd, whole)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pth"):
        load_model(cut)


def test_fcnseg_checkpoint_and_convert_round_trip(tmp_path, one_thread):
    source = tmp_path / "fcn_resnet50_coco.pth"
    torch.save(random_fcn_state_dict("resnet50", aux=True, seed=4), source)
    assert main(["convert", str(source), str(tmp_path / "converted.pt")]) == 0
    original, converted = load_model(source), load_model(tmp_path / "converted.pt")
    assert converted.source == "fcnseg" and converted.config == original.config
    assert converted.normalization == IMAGENET_RGB and converted.class_names == list(VOC_CLASSES)
    save_checkpoint(tmp_path / "again.pt", converted.model, converted.config, converted.class_names,
                    converted.normalization)
    again = load_model(tmp_path / "again.pt")
    x = torch.randn(1, 3, 29, 36)
    with torch.no_grad():
        assert torch.equal(again.model(x), original.model(x))


def test_a_resnet_classifier_becomes_an_fcn_with_a_fresh_head(tmp_path):
    classifier = random_classifier_state_dict("resnet50", seed=5)
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(classifier, path)
    with pytest.raises(CheckpointError, match="ImageNet ResNet classifier.*fcn_from_classifier"):
        load_model(path)
    loaded = fcn_from_classifier(path, num_classes=4)
    assert (loaded.config.arch, loaded.config.backbone, loaded.config.num_classes) == ("fcn", "resnet50", 4)
    assert loaded.model.training and loaded.normalization == IMAGENET_RGB
    trunk = loaded.model.backbone.state_dict()
    assert all(torch.equal(trunk[k], v) for k, v in classifier.items() if not k.startswith("fc."))
    assert not any(k.startswith("fc.") for k in trunk)
    assert main(["convert", "--from-classifier", "--num-classes", "4", "--aux", str(path), str(tmp_path / "ft.pt")]) == 0
    converted = load_model(tmp_path / "ft.pt")
    assert converted.config.aux and converted.config.num_classes == 4
    with pytest.raises(ConfigError, match="arch 'fcn'"):
        fcn_from_classifier(path, arch="fcn8s")


# --- inference ---------------------------------------------------------------------------------------


def test_context_margin_covers_half_the_receptive_field_of_the_scores():
    for depth in ("resnet50", "resnet101"):
        with torch.device("meta"):
            model = build_model(ModelConfig(arch="fcn", backbone=depth))
        rf = receptive_fields(model.receptive_field_layers())[-1][1]
        assert rf.stride == 8
        margin = context_margin(model)
        assert margin % OUTPUT_STRIDE == 0 and margin >= rf.size // 2 + rf.stride
    # ResNet-50 by hand: stem 11 px at jump 4; 3x3s add 2*jump*dilation: layer1 3*8, layer2 8 + 3*16,
    # layer3 16 + 5*32, layer4 32 + 2*64, head 16 -> 443
    with torch.device("meta"):
        model = build_model(ModelConfig(arch="fcn", backbone="resnet50"))
    assert receptive_fields(model.receptive_field_layers())[-1][1].size == 443


def test_tiled_and_whole_predictions_agree(resnet50, one_thread):
    model = resnet50
    rng = np.random.default_rng(0)
    image = np.repeat(np.repeat(rng.integers(0, 256, (8, 64, 3), dtype=np.uint8), 8, 0), 8, 1)  # 64 x 512
    whole = Predictor(model, IMAGENET_RGB, precision="fp32", layout="contiguous", max_memory=None).predict(
        image, probabilities=True)
    tiled = Predictor(model, IMAGENET_RGB, precision="fp32", layout="contiguous", tile=128).predict(
        image, probabilities=True)
    assert whole.plan.whole and tiled.plan.num_tiles == 4 and tiled.plan.margin == 256
    assert len(np.unique(whole.labels)) >= 2, "the test needs a non-trivial label map"
    assert np.abs(whole.probabilities.astype(np.float32) - tiled.probabilities.astype(np.float32)).max() < 2e-3
    assert (whole.labels == tiled.labels).mean() >= 0.999


def test_memory_model_counts_the_resnets_activations(resnet50):
    model = resnet50
    largest = []
    hooks = [m.register_forward_hook(lambda m, i, o: largest.append(o.numel() * o.element_size()))
             for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model(torch.zeros(1, 3, 96, 80))
    for h in hooks:
        h.remove()
    estimate = estimate_forward(model, 96, 80, "fp32")
    # a block holds its input, its shortcut and its branch at once: above any one tensor, within the sum of all
    assert 2 * max(largest) < estimate.activations < sum(largest)
    assert estimate.weights == sum(p.numel() * 4 for p in model.parameters())


def test_batch_norm_folds_into_the_resnets_convolutions(resnet50, one_thread):
    model = resnet50
    folded = fold_batch_norm(model)
    assert not has_batch_norm(folded) and has_batch_norm(model)
    x = torch.randn(1, 3, 37, 41)
    with torch.no_grad():
        assert close(folded(x), model(x))


def test_complexity_counts_parameters_and_convolution_flops():
    config = ModelConfig(arch="fcn", backbone="resnet50", num_classes=21)
    row = complexity(config, (64, 48))
    model = build_model(config).eval()
    flops = []
    hooks = [m.register_forward_hook(lambda m, i, o: flops.append(
        2 * o.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]))
        for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, 64, 48))
    for h in hooks:
        h.remove()
    assert row.parameters == sum(p.numel() for p in model.parameters())
    assert abs(row.gflops - sum(flops) / 1e9) < 0.01 * row.gflops  # convolutions are all but a sliver of it


def test_onnx_export_agrees_with_eager(resnet50, tmp_path, one_thread):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from fcnseg.inference.export import check_onnx, export_onnx
    from fcnseg.weights.checkpoint import load_model
    from fcnseg.weights.handle import LoadedModel

    model = LoadedModel(resnet50, resnet50.config, [], IMAGENET_RGB, "memory")
    path = export_onnx(model, tmp_path / "fcn_resnet50.onnx")
    rows = check_onnx(model, path, shapes=((1, 3, 33, 47), (2, 3, 64, 64)))
    assert load_model(path).config == resnet50.config  # the file rebuilds its architecture
    for row in rows:
        assert row.argmax_agreement >= 0.999 and row.max_abs_diff < 1e-3, row

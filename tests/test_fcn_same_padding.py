"""The "same"-padded trunks: output size, crop offsets checked two independent ways, gradients, old configs."""

import pytest
import torch

from fcnseg.config import ModelConfig, RunConfig, resolve_run_config
from fcnseg.errors import ConfigError
from fcnseg.models import build_model
from fcnseg.models.geometry import receptive_fields

SKIPS = {"fcn32s": [], "fcn16s": [("pool4", "upscore2")], "fcn8s": [("pool4", "upscore2"), ("pool3", "upscore_pool4")]}
LAST_UP = {"fcn32s": "upscore", "fcn16s": "upscore16", "fcn8s": "upscore8"}
SIZES = [(1, 1), (1, 2), (2, 1), (3, 5), (7, 7), (16, 17), (31, 33), (32, 32), (47, 64), (63, 95), (100, 101),
         (129, 77), (128, 128), (250, 97)]


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_same_small_net_output_matches_input_size_for_odd_and_even_sizes(arch, batch_norm):
    model = build_model(ModelConfig(arch=arch, backbone="small", num_classes=4, padding="same",
                                    batch_norm=batch_norm)).eval()
    with torch.no_grad():
        for h, w in SIZES:
            assert model(torch.randn(1, 3, h, w)).shape == (1, 4, h, w), (h, w)


@pytest.mark.parametrize("backbone,arch", [("vgg16", "fcn8s"), ("vgg16", "fcn32s"), ("alexnet", "fcn32s")])
def test_same_vgg16_and_alexnet_output_matches_input_size(backbone, arch):
    model = build_model(ModelConfig(arch=arch, backbone=backbone, num_classes=3, padding="same")).eval()
    with torch.no_grad():
        for h, w in [(1, 1), (37, 50), (64, 33)]:
            assert model(torch.randn(1, 3, h, w)).shape == (1, 3, h, w)


def test_same_trunk_computes_the_input_size_and_no_more():
    # every trunk map is the input size divided by its stride, rounded up: no padding is carried along
    model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=2, padding="same")).eval()
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 128, 100))
    assert features["pool3"].shape[-2:] == (16, 13)
    assert features["pool4"].shape[-2:] == (8, 7)
    assert features["drop7"].shape[-2:] == (4, 4)


def _offsets_from_receptive_fields(model) -> dict[str, int]:
    """Crop offsets from receptive-field centres (start ``s``, stride ``S``: pixel ``i`` at ``s + S i``).

    A transposed convolution (kernel ``k``, stride ``f``, no padding) moves the start to ``s - S (k - 1) / (2 f)``.
    A skip aligns at ``(start_up - start_skip) / S``, negative when the upsampled map reaches further out;
    the map that reaches further is cut, so the sum starts where the later-starting of the two does.
    """
    rf = dict(receptive_fields(model.backbone.named_children()))
    start, stride = rf["fc7"].start, rf["fc7"].stride

    def upsample(layer):
        nonlocal start, stride
        k, f = layer.kernel_size[0], layer.stride[0]
        start, stride = start - stride * (k - 1) / (2 * f), stride / f

    offsets = {}
    arch = model.config.arch.removesuffix("-atonce")
    for tap, up in SKIPS[arch]:
        upsample(getattr(model, up))
        assert stride == rf[tap].stride
        offsets[f"score_{tap}c"] = (start - rf[tap].start) / stride
        start = max(start, rf[tap].start)
    upsample(getattr(model, LAST_UP[arch]))
    assert stride == 1
    offsets["score"] = -start
    return offsets


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"])
@pytest.mark.parametrize("backbone", ["vgg16", "small"])
def test_same_crop_offsets_agree_with_receptive_field_centres(arch, backbone):
    with torch.device("meta"):
        model = build_model(ModelConfig(arch=arch, backbone=backbone, num_classes=2, padding="same"))
    assert model.offsets == _offsets_from_receptive_fields(model)
    final = {"fcn32s": 16, "fcn16s": 8, "fcn8s": 4, "fcn8s-atonce": 4}[arch]
    assert model.offsets["score"] == final
    assert all(v == -1 for k, v in model.offsets.items() if k != "score")


def test_same_alexnet_offset_agrees_with_receptive_field_centres():
    with torch.device("meta"):
        model = build_model(ModelConfig(arch="fcn32s", backbone="alexnet", num_classes=2, padding="same"))
    assert model.offsets == _offsets_from_receptive_fields(model) == {"score": 47}


def _impulse_net(arch: str, padding: str):
    """A small FCN that carries channel 0 of its input unchanged through every trunk layer (centre taps of 1)."""
    model = build_model(ModelConfig(arch=arch, backbone="small", num_classes=1, padding=padding)).eval()
    with torch.no_grad():
        for m in model.backbone.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
                m.bias.zero_()
                k = m.kernel_size[0]
                m.weight[0, 0, k // 2, k // 2] = 1.0
    return model


@pytest.mark.parametrize("padding", ["same", "paper"])
@pytest.mark.parametrize("arch,path,stride", [("fcn32s", "score_fr", 32), ("fcn8s", "score_fr", 32),
                                              ("fcn8s", "score_pool4", 16), ("fcn8s", "score_pool3", 8),
                                              ("fcn16s", "score_pool4", 16)])
def test_a_pixel_scores_at_the_centre_of_its_pooling_cell(padding, arch, path, stride):
    """Measured, not derived: one lit input pixel reaches one cell of the ``stride`` grid; the symmetric
    bilinear upsampling must then centre the output on that cell's centre in input pixels. The grid starts
    at input 0 for "same" and at -(pad - 1) = -99 for the paper's conv1_1 (3x3, pad 100)."""
    model = _impulse_net(arch, padding)
    with torch.no_grad():
        layer = getattr(model, path)
        layer.weight[0, 0] = 1.0  # only this head path scores
    origin = 0 if padding == "same" else -99
    size, y0, x0 = 160, 70, 87
    x = torch.zeros(1, 3, size, size)
    x[0, 0, y0, x0] = 1.0
    with torch.no_grad():
        out = model(x)[0, 0].double()
    assert out.shape == (size, size)
    cell = lambda v: ((v - origin) // stride) * stride + origin + (stride - 1) / 2  # noqa: E731
    coords = torch.arange(size, dtype=torch.float64)
    rows, cols = out.sum(1), out.sum(0)
    assert rows.sum() > 0
    assert (rows * coords).sum() / rows.sum() == pytest.approx(cell(y0), abs=1e-6)
    assert (cols * coords).sum() / cols.sum() == pytest.approx(cell(x0), abs=1e-6)


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"])
def test_one_backward_reaches_every_trainable_parameter_of_the_same_net(arch):
    model = build_model(ModelConfig(arch=arch, backbone="small", num_classes=3, padding="same", batch_norm=True))
    model.train()
    target = torch.randint(0, 3, (2, 45, 38))
    torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 45, 38)), target).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
    # the score layers start at zero, and every one of them is on a path that changes the loss
    for name in model.heads[0].score_layers:
        assert getattr(model, name).weight.grad.abs().sum() > 0, name


def test_same_padding_keeps_the_parameter_shapes():
    paper = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=3))
    same = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=3, padding="same"))
    assert {k: v.shape for k, v in paper.state_dict().items()} == {k: v.shape for k, v in same.state_dict().items()}


SYNTHETIC = {"dataset": "synthetic", "root": ""}


def test_the_default_is_the_paper_geometry_and_same_is_the_small_cpu_preset():
    assert ModelConfig().padding == "paper"
    assert resolve_run_config(overrides={"preset": "paper-cvpr", "data": SYNTHETIC}).model.padding == "paper"
    assert resolve_run_config(overrides={"preset": "small-cpu", "data": SYNTHETIC}).model.padding == "same"


def test_a_run_config_stored_before_the_padding_field_rebuilds_the_paper_net():
    stored = RunConfig(preset="small-cpu").to_dict()
    stored["model"].update(backbone="small", batch_norm=True)
    stored["data"].update(SYNTHETIC)
    del stored["model"]["padding"]
    assert resolve_run_config(base=stored).model.padding == "paper"
    assert RunConfig.from_dict(stored, "old config.yaml").model.padding == "paper"
    # a hand-written file naming a few keys takes the preset's geometry
    hand_written = {"preset": "small-cpu", "model": {"num_classes": 3}, "data": SYNTHETIC}
    assert resolve_run_config(overrides=hand_written).model.padding == "same"


def test_pad_with_same_padding_is_a_config_error_naming_both():
    with pytest.raises(ConfigError, match="pad 50.*padding 'same'"):
        ModelConfig(backbone="small", padding="same", pad=50).validate()
    with pytest.raises(ConfigError, match="padding 'valid' is not one of"):
        ModelConfig(padding="valid").validate()


def test_a_checkpoint_of_the_old_small_net_without_the_padding_field_loads_as_it_was(tmp_path):
    from fcnseg.weights.checkpoint import load_model, save_checkpoint
    from fcnseg.data.normalization import IMAGENET_RGB

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=3, batch_norm=True)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path / "old.pt"
    save_checkpoint(path, model, model.config, ["a", "b", "c"], IMAGENET_RGB)
    saved = torch.load(path, weights_only=True)
    del saved["model_config"]["padding"]  # as written before the field existed
    torch.save(saved, path)
    loaded = load_model(path)
    assert loaded.config.padding == "paper" and loaded.model.offsets == model.offsets
    x = torch.randn(1, 3, 41, 58)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x), atol=0, rtol=0)

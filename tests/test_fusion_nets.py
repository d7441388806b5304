"""Nets of several inputs and outputs: early fusion (RGB-D), late fusion (colour + HHA) and SIFT Flow's two heads."""

import pytest
import torch
import torch.nn.functional as F

from fcnseg.config import ModelConfig, RunConfig, from_dict
from fcnseg.errors import CheckpointError, ConfigError
from fcnseg.models import build_model
from fcnseg.models.surgery import transplant_trunk, widen_first_conv

RGBD = [["color+depth", 4]]
COLOR_HHA = [["color", 3], ["hha", 3]]
SIFTFLOW = [["semantic", 33], ["geometric", 3]]


def _randomize(model, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    return model.eval()


def _nets():
    return {
        "early fusion": ModelConfig(arch="fcn32s", backbone="small", num_classes=5, streams=RGBD),
        "late fusion": ModelConfig(arch="fcn32s", backbone="small", num_classes=5, streams=COLOR_HHA),
        "two heads 32s": ModelConfig(arch="fcn32s", backbone="small", num_classes=33, heads=SIFTFLOW),
        "two heads 16s": ModelConfig(arch="fcn16s", backbone="small", num_classes=33, heads=SIFTFLOW),
        "two heads 8s": ModelConfig(arch="fcn8s", backbone="small", num_classes=33, heads=SIFTFLOW),
    }


@pytest.mark.parametrize("which", list(_nets()))
def test_output_has_the_input_size_for_odd_and_even_sizes(which):
    config = _nets()[which]
    model = build_model(config).eval()
    with torch.no_grad():
        for h, w in [(1, 1), (16, 17), (33, 32), (63, 95), (100, 101)]:
            out = model(torch.randn(2, config.in_channels, h, w))
            if config.heads:
                assert list(out) == ["semantic", "geometric"]
                assert out["semantic"].shape == (2, 33, h, w) and out["geometric"].shape == (2, 3, h, w), (h, w)
            else:
                assert out.shape == (2, 5, h, w), (h, w)


@pytest.mark.parametrize("which", list(_nets()))
def test_one_backward_reaches_every_trainable_parameter(which):
    config = _nets()[which]
    model = build_model(config).train()
    out = model(torch.randn(2, config.in_channels, 41, 38))
    outputs = out.values() if isinstance(out, dict) else [out]
    loss = sum(F.cross_entropy(x, torch.randint(0, x.shape[1], (2, 41, 38))) for x in outputs)
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
        else:
            assert name.split(".")[0].startswith("upscore"), name
    for head in model.heads:  # zero-initialised scores: only they move on the first step
        for score in head.stream_scores:
            assert getattr(model, score).weight.grad.abs().sum() > 0, score


def test_reference_layer_names_of_the_late_fusion_and_two_head_nets():
    with torch.device("meta"):
        late = build_model(ModelConfig(arch="fcn32s", backbone="vgg16", num_classes=40, streams=COLOR_HHA))
        sift = build_model(ModelConfig(arch="fcn8s", backbone="vgg16", num_classes=33, heads=SIFTFLOW))
        early = build_model(ModelConfig(arch="fcn32s", backbone="vgg16", num_classes=40, streams=RGBD))
    # nyud-fcn32s-color-hha/net.py
    names = late.reference_names()
    assert names["backbones.color.conv1_1"] == "conv1_1color" and names["backbones.hha.fc7"] == "fc7hha"
    assert [n for n in names if not n.startswith("backbones.")] == ["score_frcolor", "score_frhha", "upscore"]
    assert set(late.offsets) == {"score"} and late.offsets["score"] == 19
    # siftflow-fcn8s/net.py
    head_keys = [k for k in sift.state_dict() if not k.startswith("backbone.")]
    assert head_keys[:3] == ["score_fr_sem.weight", "score_fr_sem.bias", "score_pool4_sem.weight"]
    assert "upscore_pool4_geo.weight" in head_keys and "upscore8_geo.weight" in head_keys
    assert sift.offsets == {"score_pool4_semc": 5, "score_pool3_semc": 9, "score_sem": 31,
                            "score_pool4_geoc": 5, "score_pool3_geoc": 9, "score_geo": 31}
    # nyud-fcn32s-color-d/net.py
    assert early.reference_names()["backbone.conv1_1"] == "conv1_1_bgrd"
    assert early.backbone.conv1_1.weight.shape == (64, 4, 3, 3)


def test_early_fusion_with_a_zero_depth_filter_is_the_rgb_net():
    rgb = _randomize(build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=4)))
    rgbd = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=4, streams=RGBD)).eval()
    state = dict(rgb.state_dict())
    weight = state["backbone.conv1_1.weight"]
    state["backbone.conv1_1.weight"] = torch.cat([weight, torch.zeros_like(weight[:, :1])], dim=1)
    rgbd.load_state_dict(state)
    x = torch.randn(1, 3, 45, 52)
    depth = torch.randn(1, 1, 45, 52) * 3
    with torch.no_grad():
        torch.testing.assert_close(rgbd(torch.cat([x, depth], dim=1)), rgb(x))


def test_late_fusion_is_half_of_each_single_stream_net():
    color = _randomize(build_model(ModelConfig(arch="fcn32s", backbone="small", num_classes=4)), seed=1)
    hha = _randomize(build_model(ModelConfig(arch="fcn32s", backbone="small", num_classes=4)), seed=2)
    late = build_model(ModelConfig(arch="fcn32s", backbone="small", num_classes=4, streams=COLOR_HHA)).eval()
    state = {}
    for stream, net in (("color", color), ("hha", hha)):
        for key, value in net.state_dict().items():
            if key.startswith("backbone."):
                state[f"backbones.{stream}.{key.removeprefix('backbone.')}"] = value
            elif key.startswith("score_fr."):
                state[key.replace("score_fr", f"score_fr{stream}")] = value
    state["upscore.weight"] = color.state_dict()["upscore.weight"]
    late.load_state_dict(state)
    x, y = torch.randn(1, 3, 47, 40), torch.randn(1, 3, 47, 40)
    with torch.no_grad():
        expected = 0.5 * color(x) + 0.5 * hha(y)  # the upsampling and crop are linear: fusing before them is the same
        torch.testing.assert_close(late(torch.cat([x, y], dim=1)), expected, rtol=1e-5, atol=1e-5)


def test_each_head_is_the_single_head_net_of_its_layers():
    sift = _randomize(build_model(ModelConfig(arch="fcn16s", backbone="small", num_classes=33, heads=SIFTFLOW)))
    x = torch.randn(1, 3, 50, 45)
    with torch.no_grad():
        out = sift(x)
        for name, suffix, classes in (("semantic", "_sem", 33), ("geometric", "_geo", 3)):
            single = build_model(ModelConfig(arch="fcn16s", backbone="small", num_classes=classes)).eval()
            state = {k: v for k, v in sift.state_dict().items() if k.startswith("backbone.")}
            for key in single.state_dict():
                if not key.startswith("backbone."):
                    layer, _, part = key.partition(".")
                    state[key] = sift.state_dict()[f"{layer}{suffix}.{part}"]
            single.load_state_dict(state)
            torch.testing.assert_close(out[name], single(x))


def test_a_config_of_an_earlier_version_builds_the_same_net():
    old = {"arch": "fcn16s", "backbone": "small", "num_classes": 5, "pad": 100, "learn_upsampling": False,
           "dropout": 0.5, "batch_norm": False}
    config = from_dict(ModelConfig, old, "old checkpoint: model_config")  # as load_model reads it
    assert (config.streams, config.heads, config.in_channels) == ([], [], 3)
    assert config.input_streams() == [("color", 3)] and config.output_heads() == [("semantic", 5)]
    keys = list(build_model(config).state_dict())
    assert keys == list(build_model(ModelConfig(arch="fcn16s", backbone="small", num_classes=5)).state_dict())


@pytest.mark.parametrize("settings, message", [
    ({"heads": SIFTFLOW, "num_classes": 21}, "num_classes is 21 but the first head 'semantic' has 33"),
    ({"streams": COLOR_HHA, "arch": "fcn8s"}, "late fusion .*'fcn32s' only"),
    ({"streams": [["color", 3], ["color", 3]]}, "names must be unique"),
    ({"heads": [["semantic", 0]]}, r"expected \[name, num_classes >= 1\]"),
    ({"streams": [["color+hha", 3], ["hha", 3]]}, "identifiers"),
])
def test_bad_streams_and_heads_are_config_errors(settings, message):
    values = {"arch": "fcn32s", "backbone": "small", "num_classes": 33, **settings}
    with pytest.raises(ConfigError, match=message):
        from_dict(ModelConfig, values, "my.yaml: model")


def test_head_weights_must_match_the_heads():
    values = {"model": {"backbone": "small", "num_classes": 33, "heads": SIFTFLOW}, "train": {"head_weights": [1.0]},
              "data": {"dataset": "synthetic"}}
    with pytest.raises(ConfigError, match=r"head_weights has 1 weights but the model has the 2 heads"):
        RunConfig.from_dict(values, "my.yaml")


def test_widened_conv1_keeps_the_colour_filters_and_gives_depth_their_mean():
    weight = torch.randn(6, 3, 3, 3)
    widened = widen_first_conv(weight, 4)
    assert widened.shape == (6, 4, 3, 3)
    torch.testing.assert_close(widened[:, :3], weight)
    # nyud-fcn32s-color-d/solve.py: data[:, 3] = np.mean(conv1_1, axis=1)
    torch.testing.assert_close(widened[:, 3], (weight[:, 0] + weight[:, 1] + weight[:, 2]) / 3)
    torch.testing.assert_close(widen_first_conv(weight, 1)[:, 0], weight.mean(1))


def test_a_classifier_trunk_fills_every_stream_and_the_widened_conv1():
    rgb = _randomize(build_model(ModelConfig(arch="fcn32s", backbone="small", num_classes=2)))
    trunk = {k: v for k, v in rgb.state_dict().items() if k.startswith("backbone.")}
    early = build_model(ModelConfig(arch="fcn32s", backbone="small", num_classes=2, streams=RGBD))
    transplant_trunk(early, trunk, "vgg.pth")
    torch.testing.assert_close(early.backbone.conv1_1.weight[:, 3], trunk["backbone.conv1_1.weight"].mean(1))
    torch.testing.assert_close(early.backbone.fc7.weight, trunk["backbone.fc7.weight"])
    late = build_model(ModelConfig(arch="fcn32s", backbone="small", num_classes=2, streams=COLOR_HHA))
    transplant_trunk(late, trunk, "vgg.pth")
    for stream in ("color", "hha"):
        torch.testing.assert_close(late.backbones[stream].conv3_2.weight, trunk["backbone.conv3_2.weight"])
    del trunk["backbone.conv3_2.weight"]
    with pytest.raises(CheckpointError, match=r"vgg\.pth: classifier weights lack 1 trunk layer"):
        transplant_trunk(late, trunk, "vgg.pth")


def test_class_weights_are_refused_for_a_net_of_several_heads():
    values = {"model": {"backbone": "small", "num_classes": 33, "heads": SIFTFLOW}, "train": {"class_weights": "auto"},
              "data": {"dataset": "synthetic"}}
    with pytest.raises(ConfigError, match="class_weights weighs the classes of one head"):
        RunConfig.from_dict(values, "my.yaml")


def test_a_checkpoint_written_before_streams_and_heads_loads_as_before(tmp_path):
    from fcnseg.weights.checkpoint import checkpoint_dict, load_model
    from fcnseg.data.normalization import PAPER_BGR

    model = _randomize(build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=3)))
    old = checkpoint_dict(model, model.config, ["a", "b", "c"], PAPER_BGR)
    for key in ("streams", "heads"):
        del old["model_config"][key]
    torch.save(old, tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt")
    assert loaded.config == model.config and loaded.head_class_names == {"semantic": ["a", "b", "c"]}
    assert loaded.inputs is None
    x = torch.randn(1, 3, 37, 41)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))

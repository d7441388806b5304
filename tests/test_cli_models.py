"""`fcnseg models` and `fcnseg convert`."""

import json

import torch
from torch import nn

from fcnseg.weights.checkpoint import load_model
from fcnseg.cli import main
from fcnseg.config import ModelConfig
from fcnseg.models import build_model
from fcnseg.models.complexity import complexity


def hand_counted_gflops(model: nn.Module, x: torch.Tensor) -> float:
    """2 x multiply-adds of every conv and transposed conv, from the shapes a real forward produces."""
    flops = []

    def hook(m, inputs, output):
        if isinstance(m, nn.ConvTranspose2d):
            n, c_in, h, w = inputs[0].shape
            flops.append(2 * n * c_in * m.out_channels * m.kernel_size[0] * m.kernel_size[1] * h * w)
        elif isinstance(m, nn.Conv2d):
            n, c_out, h, w = output.shape
            flops.append(2 * n * c_out * h * w * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1])

    for m in model.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        model(x)
    return sum(flops) / 1e9


def test_complexity_matches_a_hand_count_and_the_real_parameters():
    config = ModelConfig(arch="fcn8s", backbone="small", num_classes=21)
    model = build_model(config).eval()
    row = complexity(config, (97, 130))
    assert row.parameters == sum(p.numel() for p in model.parameters())
    assert abs(row.gflops - hand_counted_gflops(model, torch.zeros(1, 3, 97, 130))) < 1e-3 * row.gflops
    assert row.offsets == model.offsets


def test_models_command_lists_every_architecture(capsys):
    assert main(["models", "--size", "500", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {(r["backbone"], r["arch"]) for r in rows}
    assert ("vgg16", "fcn8s-atonce") in names and ("alexnet", "fcn32s") in names and ("small", "fcn8s") in names
    vgg8s = next(r for r in rows if (r["backbone"], r["arch"]) == ("vgg16", "fcn8s"))
    assert 350 < vgg8s["gflops"] < 375  # the paper's net at 500x500 with pad 100: ~363 GFLOPs
    assert 134e6 < vgg8s["parameters"] < 135e6


def test_same_padding_computes_a_128_crop_at_its_own_size(capsys):
    config = ModelConfig(arch="fcn8s", backbone="small", num_classes=6, padding="same")
    same = complexity(config, (128, 128))
    assert abs(same.gflops - hand_counted_gflops(build_model(config).eval(), torch.zeros(1, 3, 128, 128))) < 1e-3
    assert main(["models", "--size", "128", "--num-classes", "6", "--padding", "same", "--json"]) == 0
    rows = {(r["backbone"], r["arch"]): r for r in json.loads(capsys.readouterr().out)}
    assert rows[("small", "fcn8s")]["offsets"] == {"score_pool4c": -1, "score_pool3c": -1, "score": 4}
    paper = complexity(ModelConfig(arch="fcn8s", backbone="small", num_classes=6), (128, 128))
    assert paper.gflops > 5 * same.gflops  # the paper's pad 100 makes a 128-px crop a 328-px forward


def test_convert_writes_a_checkpoint_that_loads_alone(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="fcn16s", backbone="small", num_classes=3))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    torch.save(model.state_dict(), tmp_path / "raw.pth")
    (tmp_path / "classes.txt").write_text("background\ndisc\nsquare\n")
    out = tmp_path / "model.pt"
    assert main(["convert", str(tmp_path / "raw.pth"), str(out), "--classes", str(tmp_path / "classes.txt")]) == 0
    loaded = load_model(out)
    assert loaded.class_names == ["background", "disc", "square"] and loaded.config.arch == "fcn16s"
    x = torch.randn(1, 3, 40, 50)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model.eval()(x))


def test_convert_reports_a_bad_file_in_one_line(tmp_path, capsys):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert main(["convert", str(tmp_path / "junk.pth"), str(tmp_path / "out.pt")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "junk.pth" in err[0]

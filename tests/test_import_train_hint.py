"""The "train with:" line printed after an import is a command that works as pasted: fcnseg's own train parser
reads it, its paths survive the shell (spaces, quotes), and it asks for the CPU recipe with a time budget."""

import shlex
from pathlib import Path

import numpy as np
from PIL import Image

from fcnseg.cli import build_parser, main
from fcnseg.commands.import_data import train_command
from fcnseg.commands.train import overrides_from_args
from fcnseg.config import resolve_run_config


def cvat_export(root, names):
    for folder in ("SegmentationClass", "JPEGImages"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "labelmap.txt").write_text("background:0,0,0::\nroad:128,64,128::\ncar:0,0,142::\n")
    for i, name in enumerate(names):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{name}.png")
        mask = np.zeros((10, 12, 3), dtype=np.uint8)
        mask[2:6, 3:9] = (128, 64, 128)
        Image.fromarray(mask).save(root / "SegmentationClass" / f"{name}.png")
    return root


def printed_command(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("train with: ")]
    assert len(lines) == 1, stdout
    return lines[0].removeprefix("train with: ")


def parse_train(command: str):
    words = shlex.split(command)
    assert words[:2] == ["fcnseg", "train"]
    return build_parser(words[1:]).parse_args(words[1:])


def test_the_printed_train_command_parses_with_quoted_paths_and_the_cpu_recipe(tmp_path, capsys):
    src = cvat_export(tmp_path / "export", ["a", "b", "c"])
    out = tmp_path / "my data's \"set\" $HOME"
    assert main(["import", "cvat-mask", str(src), str(out)]) == 0
    command = printed_command(capsys.readouterr().out)
    assert "..." not in command
    args = parse_train(command)
    assert Path(args.data_root) == out and args.dataset == "folder" and args.preset == "small-cpu"
    assert args.time_budget == "10m" and args.num_classes == 3 and args.val_split is None
    assert args.config is None and args.classifier_weights is None and args.init_from is None
    config = resolve_run_config(None, overrides_from_args(args))  # the settings train would run with
    assert config.model.backbone == "small" and config.model.num_classes == 3
    assert Path(config.data.root) == out and config.data.dataset == "folder"


def test_without_a_val_split_the_command_validates_on_train():
    command = train_command(Path("/data/x y"), 5, has_val=False)
    args = parse_train(command)
    assert args.val_split == "train" and args.data_root == "/data/x y" and args.out == "runs/x y"

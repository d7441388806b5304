"""`fcnseg predict` never overwrites or re-reads what a user has: outputs go outside the inputs, under names of their own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.cli import main
from fcnseg.config import ModelConfig
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.inference.folder import default_output_folder
from fcnseg.models import build_model
from fcnseg.weights.checkpoint import save_checkpoint

ARGS = ["--workers", "0", "--no-progress", "--precision", "fp32"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="fcn32s", backbone="small", num_classes=3, padding="same"))
    path = tmp_path_factory.mktemp("model") / "m.pt"
    save_checkpoint(path, model, model.config, ["background", "a", "b"], PAPER_BGR)
    return path


def photos(folder, names=("one.png", "two.jpg")):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / name)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def one_line_error(capsys):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("out", [".", "pred", "sub/pred"])
def test_an_output_folder_that_is_or_lies_inside_an_input_folder_is_refused(tmp_path, checkpoint, capsys, out):
    # -o photos/ replaced every photo with its label map; -o photos/pred nested deeper at every run
    folder = tmp_path / "photos"
    before = photos(folder)
    (folder / "sub").mkdir()
    target = folder / out
    assert main(["predict", str(checkpoint), str(folder), "-o", str(target), *ARGS]) == 1
    line = one_line_error(capsys)
    assert str(target) in line and str(folder) in line and "choose a folder outside it" in line
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_a_single_image_with_its_own_folder_as_output_keeps_the_image(tmp_path, checkpoint, capsys):
    folder = tmp_path / "photos"
    before = photos(folder, ("photo.png",))
    assert main(["predict", str(checkpoint), str(folder / "photo.png"), "-o", str(folder), *ARGS]) == 0
    assert (folder / "photo.png").read_bytes() == before["photo.png"]
    assert (folder / "photo_labels.png").is_file()


def test_outputs_in_an_input_folder_are_not_segmented_again(tmp_path, checkpoint, capsys):
    # a second run segmented its own outputs (photo_overlay_overlay.jpg)
    folder = tmp_path / "photos"
    photos(folder, ("photo.png",))
    argv = ["predict", str(checkpoint), str(folder / "photo.png"), "-o", str(folder), "--overlay", *ARGS]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["predict", str(checkpoint), str(folder), "-o", str(tmp_path / "out"), *ARGS]) == 0
    printed = capsys.readouterr().out
    assert "1 segmented" in printed
    assert "skipped 2 files that fcnseg wrote" in printed and "photo_labels.png" in printed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["classes.txt", "photo_labels.png"]  # and the model's class list


def test_an_output_that_would_replace_an_input_fails_that_image_and_keeps_the_file(tmp_path, checkpoint, capsys):
    folder = tmp_path / "photos"
    before = photos(folder, ("photo.png", "photo_overlay.jpg"))
    argv = ["predict", str(checkpoint), str(folder / "photo.png"), str(folder / "photo_overlay.jpg"), "-o", str(folder),
            "--overlay", *ARGS]
    assert main(argv) == 1
    assert "would replace the input" in capsys.readouterr().out
    assert (folder / "photo_overlay.jpg").read_bytes() == before["photo_overlay.jpg"]


def test_without_o_the_outputs_go_beside_the_input_and_the_folder_is_printed(tmp_path, checkpoint, capsys):
    folder = tmp_path / "photos"
    photos(folder)
    assert main(["predict", str(checkpoint), str(folder), *ARGS]) == 0
    expected = tmp_path / "photos_fcnseg"
    assert f"writing to {expected}" in capsys.readouterr().out
    assert sorted(p.name for p in expected.iterdir()) == ["classes.txt", "one_labels.png", "two_labels.png"]
    assert default_output_folder(folder / "one.png") == folder / "one_fcnseg"


def test_a_folder_named_dot_gets_its_own_name_in_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    monkeypatch.chdir(tmp_path / "photos")
    assert default_output_folder(".") == tmp_path / "photos_fcnseg"


def test_non_image_files_are_counted_and_named_in_one_line(tmp_path, checkpoint, capsys):
    folder = tmp_path / "photos"
    photos(folder)
    for name in ("a.txt", "b.csv", "notes.md"):
        (folder / name).write_text("x")
    (folder / ".hidden").write_text("x")
    assert main(["predict", str(checkpoint), str(folder), "-o", str(tmp_path / "out"), *ARGS]) == 0
    [line] = [ln for ln in capsys.readouterr().out.splitlines() if "not images" in ln]
    assert line.startswith("skipped 3 files that are not images: ") and "a.txt" in line and "notes.md" in line
    assert ".hidden" not in line


def test_o_naming_an_existing_file_is_refused_before_the_model_loads(tmp_path, capsys):
    folder = tmp_path / "photos"
    photos(folder)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert main(["predict", str(tmp_path / "missing.pt"), str(folder), "-o", str(notes), *ARGS]) == 1
    assert "is an existing file, expected a folder" in one_line_error(capsys)
    assert notes.read_text() == "mine"

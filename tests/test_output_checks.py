"""Outputs that cannot be written are refused before any work starts, in one line naming the path and the remedy."""

import os

import pytest

import fcnseg.files
from fcnseg.cli import main
from fcnseg.errors import ConfigError
from fcnseg.files import check_output_path


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("the user's notes\n")
    return path


def test_a_file_output_under_a_regular_file_is_refused(a_file):
    with pytest.raises(ConfigError, match=r"notes\.txt is a file, not a folder, so nothing can be written under it"):
        check_output_path(a_file / "sub" / "model.onnx", "file", "output")


def test_a_folder_output_that_is_an_existing_file_is_refused_and_the_file_kept(a_file):
    with pytest.raises(ConfigError, match=r"--report .*notes\.txt: is an existing file, expected a folder"):
        check_output_path(a_file, "folder", "--report")
    assert a_file.read_text() == "the user's notes\n"


def test_a_file_output_that_is_a_folder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a folder, expected a file name"):
        check_output_path(tmp_path, "file", "--out")


def test_an_unwritable_folder_is_refused_naming_it(tmp_path, monkeypatch):
    # running as root, permission bits do not stop writes: os.access stands in for a read-only folder
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(fcnseg.files.os, "access",
                        lambda p, mode: False if os.fspath(p) == str(locked) else real_access(p, mode))
    with pytest.raises(ConfigError, match=rf"the folder {locked} is not writable"):
        check_output_path(locked / "new" / "deeper", "folder", "-o")


def test_new_paths_in_writable_folders_pass(tmp_path, a_file):
    assert check_output_path(tmp_path / "a" / "b" / "m.onnx", "file") == tmp_path / "a" / "b" / "m.onnx"
    assert check_output_path(tmp_path / "report", "folder") == tmp_path / "report"
    assert check_output_path(a_file, "file") == a_file  # a file output is replaced atomically, as asked


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    assert all(n in lines[0] for n in needles), lines[0]


# The model file does not exist: had any work started, the error would name it instead of the output.
@pytest.mark.parametrize("argv", [
    ["export", "{missing}", "{blocked}/model.onnx", "--no-check"],
    ["quantize", "{missing}", "{blocked}/model-int8.onnx", "--calib", "{tmp}"],
    ["quantize", "{missing}", "{tmp}/m.onnx", "--calib", "{tmp}", "--calibration-cache", "{blocked}/c.json"],
    ["convert", "{missing}", "{blocked}/model.pt"],
    ["eval", "--pred-dir", "{tmp}/no-preds", "--gt-dir", "{tmp}/no-gt", "--out", "{blocked}/eval.json"],
    ["eval", "--pred-dir", "{tmp}/no-preds", "--gt-dir", "{tmp}/no-gt", "--report", "{blocked}"],
    ["eval", "{missing}", "--kind", "synthetic", "--save-predictions", "{blocked}/preds"],
    ["import", "coco", "{tmp}/no.json", "{blocked}/out"],
    ["predict", "{missing}", "{tmp}", "-o", "{blocked}"],
])
def test_every_command_checks_its_outputs_before_reading_anything(tmp_path, a_file, capsys, argv):
    values = {"missing": tmp_path / "missing.pt", "blocked": a_file, "tmp": tmp_path}
    assert main([a.format(**values) for a in argv]) != 0
    _one_line_error(capsys, str(a_file))

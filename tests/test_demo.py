"""The built-in demo end to end, shortened to a few updates: data written, model trained and evaluated, pictures drawn."""

import json

import pytest

from fcnseg.cli import main
from fcnseg.demo import ensure_synthetic


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_demo_leaves_table_curves_and_panels(tmp_path, capsys):
    out, data = tmp_path / "demo", tmp_path / "synthetic"
    args = ["demo", "--out", str(out), "--data", str(data), "--max-iter", "2", "--train-images", "4",
            "--val-images", "2", "--precision", "fp32", "--workers", "0", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "mean IU" in printed and "background" in printed
    assert (data / "synthetic.json").is_file() and len(list((data / "JPEGImages").glob("*.jpg"))) == 6
    for name in ("metrics.txt", "eval.json", "curves.png", "panels.png", "metrics.csv", "config.yaml",
                 "checkpoints/best.pt"):
        assert (out / name).is_file(), name
    result = json.loads((out / "eval.json").read_text())
    assert result["num_images"] == 2 and 0.0 <= result["mean_iu"] <= 1.0
    # a second run reuses the data set instead of writing it again
    stamp = (data / "synthetic.json").stat().st_mtime_ns
    ensure_synthetic(data, "blobs", num_train=4, num_val=2)
    assert (data / "synthetic.json").stat().st_mtime_ns == stamp

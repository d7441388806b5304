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


class FakeClock:
    """Advances ``tick`` seconds at every reading: each update (read before and after) takes ``tick``."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def slow_demo(tmp_path, **kwargs):
    """The demo on 4 tiny images where every update takes 20 s: 6 updates in a 2-minute budget, 6 more to a
    4-minute cap; validations every 24 s (a fifth of the budget)."""
    from fcnseg.demo import run_demo

    return run_demo(out_dir=tmp_path / "demo", data_dir=tmp_path / "synthetic", num_train=4, num_val=2,
                    precision="fp32", progress=False, time_budget="2m", time_cap="4m", clock=FakeClock(20.0),
                    extra={"data": {"num_workers": 0}, "train": {"num_panels": 1}}, **kwargs)


def test_a_slow_machine_trains_on_to_the_cap_and_is_told_the_model_is_undertrained(tmp_path):
    from fcnseg.demo import README_UPDATES, summary_lines

    result = slow_demo(tmp_path)
    assert result.extended and result.updates == 12  # 240 s of 20-s updates
    history = result.train.history
    assert [r["iteration"] for r in history] == [2, 4, 6, 8, 10, 12]  # every 24 s of training, in both parts
    metrics_rows = (tmp_path / "demo" / "metrics.csv").read_text().splitlines()[1:]
    assert len(metrics_rows) == 6 and (tmp_path / "demo" / "curves.png").is_file()
    lines = summary_lines(result)
    assert f"after 12 updates" in lines[0] and f"{README_UPDATES} updates in 4 min" in lines[0]
    assert result.metrics["mean_iu"] < 0.9 and len(lines) == 2
    assert lines[1].startswith("undertrained on this machine") and "made 12 updates" in lines[1]
    assert "fcnseg demo --time-budget" in lines[1]


def test_a_run_that_reaches_the_target_twice_in_a_row_stops_before_the_cap(tmp_path, monkeypatch):
    import fcnseg.training.trainer as trainer

    scores = iter([0.5, 0.5, 0.5, 0.95, 0.95, 0.95])  # below the target over the budget, then above it
    real_validate = trainer.validate
    monkeypatch.setattr(trainer, "validate", lambda *a, **k: {**real_validate(*a, **k), "mean_iu": next(scores)})
    result = slow_demo(tmp_path)
    assert result.extended and result.train.reached_target
    assert result.updates == 10 and [r["iteration"] for r in result.train.history] == [2, 4, 6, 8, 10]


def test_a_fast_run_at_the_target_trains_only_its_budget_and_prints_no_warning(tmp_path, monkeypatch):
    import fcnseg.training.trainer as trainer
    from fcnseg.demo import summary_lines

    real_validate = trainer.validate
    monkeypatch.setattr(trainer, "validate", lambda *a, **k: {**real_validate(*a, **k), "mean_iu": 0.97})
    result = slow_demo(tmp_path)
    assert not result.extended and result.updates == 6
    result.metrics["mean_iu"] = 0.97  # what the final evaluation of a good model says
    assert len(summary_lines(result)) == 1


def test_a_bad_target_is_one_line_naming_the_flag(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--target", "150"]) == 1
    assert "--target is a mean IU in percent" in capsys.readouterr().err

"""What `fcnseg train` writes for a person: the final metrics table once, and a log file that stays small off a terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from test_train import tiny

ROOT = Path(__file__).resolve().parents[1]


def test_a_run_logged_to_a_file_prints_its_table_once_and_few_progress_frames(tmp_path):
    config = tiny(tmp_path, max_iter=24, val_every=0, checkpoint_every=0, log_every=12)
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump(config.to_dict()))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "stderr.log", "wb") as err:  # not a terminal: as under nohup or in CI
        done = subprocess.run([sys.executable, "-m", "fcnseg", "train", "--config", str(settings)], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=err, timeout=300)
    stderr = (tmp_path / "stderr.log").read_text()
    assert done.returncode == 0, stderr
    stdout = done.stdout.decode()
    table = (tmp_path / "run" / "metrics.txt").read_text()
    first_line = table.splitlines()[0]
    assert (stdout + stderr).count(first_line) == 1, (stdout, stderr)  # printed once, on stdout
    assert stdout.count(first_line) == 1
    assert (tmp_path / "run" / "train.log").read_text().count(first_line) == 1  # the log keeps it
    # 24 updates: a terminal gets a frame every 0.1 s (one per update here); the file gets the first and the last,
    # one per 30 s, and one around each log line
    frames = stderr.count("train:")
    assert 1 <= frames <= 10, stderr
